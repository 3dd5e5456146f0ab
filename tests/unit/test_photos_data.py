"""Image folders as people have them: mixed sizes, shapes, modes and formats, EXIF rotation, one
corrupt file — checked against an independent Pillow reference of the resize policy."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lambdanet.config import parse_config
from lambdanet.data import folders
from lambdanet.data.images import decode_image, photo_to_array
from lambdanet.data.readers import load_dataset, save_dataset
from lambdanet.errors import DataError
from tests.conftest import IMAGES
from tests.e2e.photos_support import (
    CLASSES,
    ROTATED,
    expected_input,
    find_row,
    image_files,
    make_photo_folder,
)

MLP = parse_config({"epochs": 1, "layers": 1, "activations": {"layer1": "softmax"}, "neurons": {"layer1": 3},
                    "learning_rate": 0.1})
CNN = parse_config({"model": "lenet", "epochs": 1})


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_photo_folder(tmp_path_factory.mktemp("photos") / "photos")


def square(path: Path, side: int, color: int = 90) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (side, side), (color, color, color)).save(path)


def test_every_image_is_decoded_upright_and_fitted_like_torchvision_eval(photos: Path) -> None:
    ds = load_dataset(photos)
    assert ds.classes == CLASSES
    assert ds.x_train.shape[1:] == (32, 32, 3) and ds.x_test is not None and ds.x_test.shape[1:] == (32, 32, 3)
    x = np.concatenate([ds.x_train, ds.x_test])
    y = np.concatenate([ds.y_train, ds.y_test])
    files = image_files(photos)
    assert len(x) == len(files) == 26
    for f, label in files:
        rows = find_row(x, expected_input(f, 32))
        assert len(rows) == 1, f  # exactly the reference's pixels, once
        assert y[rows[0]] == label, f
    # grey images stay grey (R = G = B), the CMYK one became RGB
    grey = x[find_row(x, expected_input(photos / "cat" / "b_grey.png", 32))[0]]
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    # the EXIF tag was honoured: the pixels as stored (on their side) are not what the model got
    stored = Image.open(photos / ROTATED[0] / ROTATED[1]).convert("RGB")
    on_side = expected_input(_png(stored), 32)
    assert find_row(x, on_side) == []
    upright = x[find_row(x, expected_input(photos / ROTATED[0] / ROTATED[1], 32))[0]]
    assert upright[:, :4].mean() > 240  # the bright bar is on the left, where the photo shows it


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_split_is_stratified_seeded_and_kept_when_folders_say_so(photos: Path, tmp_path: Path) -> None:
    ds = load_dataset(photos)
    assert ds.y_test is not None
    # round(0.2 * n) of each class: cat 8 -> 2, dog 9 -> 2, owl 9 -> 2
    assert np.bincount(ds.y_test, minlength=3).tolist() == [2, 2, 2]
    assert np.bincount(ds.y_train, minlength=3).tolist() == [6, 7, 7]
    again = load_dataset(photos, MLP)  # same split whatever the config (its seed included)
    np.testing.assert_array_equal(again.x_test, ds.x_test)
    np.testing.assert_array_equal(again.y_train, ds.y_train)
    # a class of 1 or 2 images is all training
    for cls, n in (("a", 2), ("b", 1), ("c", 10)):
        for i in range(n):
            square(tmp_path / "small" / cls / f"{i}.png", 8, 10 * i)
    small = load_dataset(tmp_path / "small")
    assert small.y_test is not None and small.y_test.tolist() == [2, 2]
    # train/ + test/ folders: used as they are, nothing held out of train/
    for split, n in (("train", 3), ("test", 1)):
        for cls in ("a", "b"):
            for i in range(n):
                square(tmp_path / "split" / split / cls / f"{i}.png", 8 + i)
    tt = load_dataset(tmp_path / "split")
    assert tt.y_train.tolist() == [0, 0, 0, 1, 1, 1] and tt.y_test is not None and tt.y_test.tolist() == [0, 1]
    assert tt.x_train.shape[1:] == (32, 32, 3)  # sizes 8, 9, 10: they differ -> the default


def test_the_size_comes_from_image_size_then_the_data(photos: Path, tmp_path: Path) -> None:
    wide = parse_config({**MLP.model_dump(), "image_size": [24, 40]})
    ds = load_dataset(photos, wide)
    assert ds.x_train.shape[1:] == (24, 40, 3)
    # a non-square size: scaled to cover 24 x 40, centre cropped (the reference, written out)
    img = Image.open(photos / "owl" / "odd.png").convert("RGB")  # 77 x 50: the width binds
    img = img.resize((40, int(40 * 50 / 77)), Image.Resampling.BILINEAR)  # 40 x 25
    ref = np.asarray(img.crop((0, 0, 40, 24)))  # top = round(0.5) = 0
    assert len(find_row(np.concatenate([ds.x_train, ds.x_test]), ref)) == 1

    for i in range(4):
        square(tmp_path / "same48" / ("a" if i % 2 else "b") / f"{i}.png", 48, 40 * i)
        square(tmp_path / "same100" / ("a" if i % 2 else "b") / f"{i}.png", 100, 40 * i)
    assert load_dataset(tmp_path / "same48").input_shape == (48, 48, 3)  # shared and <= 64: kept
    assert load_dataset(tmp_path / "same48", MLP).input_shape == (48, 48, 3)
    assert load_dataset(tmp_path / "same48", CNN).input_shape == (48, 48, 3)  # CNN configs alike (any size)
    assert load_dataset(tmp_path / "same100").input_shape == (32, 32, 3)  # shared but large: 32 x 32

    # arrays (npz / h5) keep their size unless image_size asks for another
    arrays = load_dataset(tmp_path / "same48")
    npz = save_dataset(arrays, tmp_path / "same48.npz")
    assert load_dataset(npz).input_shape == (48, 48, 3)
    assert load_dataset(npz, CNN).input_shape == (48, 48, 3)
    small = parse_config({**CNN.model_dump(), "image_size": 32})
    fitted = load_dataset(npz, small)
    assert fitted.input_shape == (32, 32, 3)
    np.testing.assert_array_equal(fitted.x_train[0], expected_input(_png(Image.fromarray(arrays.x_train[0])), 32))
    flat = tmp_path / "flat.npz"
    np.savez(flat, x=np.zeros((4, 12), np.uint8), y=np.array([0, 1, 0, 1]))
    with pytest.raises(DataError, match=r"^flat\.npz: image_size \[24, 40\] needs images"):
        load_dataset(flat, wide)


def test_one_corrupt_file_is_one_line_naming_it(photos: Path, tmp_path: Path) -> None:
    import shutil

    bad = shutil.copytree(photos, tmp_path / "photos")
    jpeg = io.BytesIO()
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(jpeg, "JPEG")
    data = jpeg.getvalue()
    for cut in (200, len(data) * 2 // 3):  # in the header; the header whole but the pixels cut
        (bad / "cat" / "broken.jpg").write_bytes(data[:cut])
        with pytest.raises(DataError) as info:
            load_dataset(bad)
        msg = str(info.value)
        assert msg.startswith("cat/broken.jpg: cannot decode the image: the file is truncated"), msg
        assert msg.endswith("; remove or replace the file") and "\n" not in msg
    (bad / "cat" / "broken.jpg").unlink()
    (bad / "dog" / "notes.jpg").write_text("not a photo")
    with pytest.raises(DataError, match=r"^dog/notes\.jpg: not an image \(Pillow cannot identify it\)"):
        load_dataset(bad)


def test_decoding_runs_on_a_thread_per_core(photos: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: set[str] = set()
    real = folders.photo_to_array

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.add(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(folders, "usable_cores", lambda: 4)
    monkeypatch.setattr(folders, "photo_to_array", spy)
    load_dataset(photos)
    assert len(seen) > 1 and all(name.startswith("decode") for name in seen)


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_with_nearly_the_same_result() -> None:
    data = (IMAGES / "grumpy_cat.jpeg").read_bytes()  # a 3000 x 2049 photo
    assert decode_image(data, fit_to=(32, 32)).size == (375, 257)  # 1/8 scale still covers 32 x 32
    assert decode_image(data, fit_to=(1024, 1024)).size == (1500, 1025)  # 1/2 covers 1499 x 1024
    assert decode_image(data, fit_to=(1100, 1100)).size == (3000, 2049)  # 1/2 would not: full size
    fast = photo_to_array(data, (32, 32, 3)).astype(int)
    full = expected_input(data, 32).astype(int)  # the full-size decode, resized
    assert np.abs(fast - full).mean() < 2.0
