"""Data readers: the real itsacat/CIFAR files, every layout, and every error's exact message."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from lambdanet.data.readers import Dataset, load_dataset, to_matrix, to_targets
from lambdanet.errors import DataError
from tests.conftest import CATVNONCAT

RNG = np.random.default_rng(0)


def imgs(m: int, h: int = 4, w: int = 4, c: int = 3) -> np.ndarray:
    return RNG.integers(0, 256, size=(m, h, w, c), dtype=np.uint8)


def write_h5(path: Path, **arrays) -> Path:
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)
    return path


def itsacat(path: Path, **over) -> Path:
    arrays = {"train_set_x": imgs(6), "train_set_y": np.array([0, 1, 0, 1, 1, 0]),
              "test_set_x": imgs(2), "test_set_y": np.array([1, 0]),
              "list_classes": np.array([b"non-cat", b"cat"])}
    arrays.update(over)
    return write_h5(path, **{k: v for k, v in arrays.items() if v is not None})


def err(path) -> str:
    with pytest.raises(DataError) as info:
        load_dataset(path)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


# ---- the real data ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["datasets.h5", "train_catvnoncat.h5", "test_catvnoncat.h5"])
def test_catvnoncat_in_every_layout(name: str) -> None:
    ds = load_dataset(CATVNONCAT / name)
    assert isinstance(ds, Dataset)
    assert ds.x_train.shape == (209, 64, 64, 3) and ds.x_train.dtype == np.uint8
    assert ds.y_train.shape == (209,) and ds.y_train.dtype == np.int64
    assert ds.x_test.shape == (50, 64, 64, 3) and ds.y_test.shape == (50,)
    assert ds.classes == ["non-cat", "cat"] and ds.input_shape == (64, 64, 3)
    assert int(ds.y_train.sum()) == 72 and int(ds.y_test.sum()) == 33


def test_matrices() -> None:
    ds = load_dataset(CATVNONCAT / "datasets.h5")
    X = to_matrix(ds.x_train, "float32")
    assert X.shape == (12288, 209) and X.dtype == np.float32
    np.testing.assert_allclose(X, ds.x_train.reshape(209, -1).T / 255, rtol=1e-6)
    Y = to_targets(ds.y_train, 2, "sigmoid", "float32")
    assert Y.shape == (1, 209) and Y.dtype == np.float32 and Y.sum() == 72
    Y3 = to_targets(np.array([2, 0, 1, 2]), 3, "softmax", "float64")
    np.testing.assert_array_equal(Y3, np.eye(3)[[2, 0, 1, 2]].T)
    with pytest.raises(DataError, match="a sigmoid output needs 2 classes but the data has 3"):
        to_targets(np.array([0, 1, 2]), 3, "sigmoid", "float32")


# ---- npz -------------------------------------------------------------------------------------
def test_npz_inline_test_set_and_classes(tmp_path: Path) -> None:
    p = tmp_path / "d.npz"
    np.savez(p, x=imgs(5), y=np.array([[0, 1, 2, 1, 0]]), x_test=imgs(2), y_test=np.array([2, 2]),
             classes=np.array(["a", "b", "c"]))
    ds = load_dataset(p)
    assert ds.classes == ["a", "b", "c"] and ds.y_train.tolist() == [0, 1, 2, 1, 0]
    assert ds.x_test.shape == (2, 4, 4, 3) and ds.y_test.dtype == np.int64


@pytest.mark.parametrize("train_name", ["set_train.npz", "set.npz"])
def test_npz_partner_test_file(tmp_path: Path, train_name: str) -> None:
    np.savez(tmp_path / train_name, x=imgs(4), y=np.array([0, 1, 0, 3]))
    np.savez(tmp_path / "set_test.npz", x=imgs(3), y=np.array([1, 1, 0]))
    ds = load_dataset(tmp_path / train_name)
    assert ds.x_test.shape == (3, 4, 4, 3) and ds.classes == ["0", "1", "2", "3"]


def test_npz_flat_grayscale_and_whole_number_floats(tmp_path: Path) -> None:
    np.savez(tmp_path / "flat.npz", x=np.arange(12.0).reshape(3, 4), y=np.array([0.0, 1.0, 1.0]))
    ds = load_dataset(tmp_path / "flat.npz")
    assert ds.x_train.dtype == np.uint8 and ds.x_train.shape == (3, 4) and ds.x_test is None
    np.savez(tmp_path / "gray.npz", x=np.zeros((2, 5, 5), np.int16), y=np.array([0, 1]))
    assert load_dataset(tmp_path / "gray.npz").x_train.shape == (2, 5, 5, 1)


# ---- errors ----------------------------------------------------------------------------------
def test_missing_and_unsupported_files(tmp_path: Path) -> None:
    assert err(tmp_path / "nope.h5") == (f"{tmp_path / 'nope.h5'}: no such file or folder; pass an itsacat .h5, "
                                         f"an .npz or a folder of class sub-folders")
    (tmp_path / "d.csv").write_text("1,2\n")
    assert err(tmp_path / "d.csv") == ("d.csv: unsupported data file type '.csv'; use an itsacat .h5, an .npz "
                                       "with x/y arrays or a folder of class sub-folders")


def test_files_that_are_not_what_they_claim(tmp_path: Path) -> None:
    (tmp_path / "fake.h5").write_bytes(b"PK\x03\x04 not really")
    assert err(tmp_path / "fake.h5") == ("fake.h5: not an HDF5 file; pass an itsacat .h5 "
                                         "(train_set_x/train_set_y …)")
    write_h5(tmp_path / "real.h5", x=np.zeros(3))
    (tmp_path / "fake.npz").write_bytes((tmp_path / "real.h5").read_bytes())
    assert err(tmp_path / "fake.npz") == "fake.npz: not an .npz file (not a zip archive); save it with np.savez"


def test_missing_keys_list_what_was_found(tmp_path: Path) -> None:
    p = itsacat(tmp_path / "d.h5", train_set_y=None)
    assert err(p) == ("d.h5: missing dataset 'train_set_y' (found: list_classes, test_set_x, test_set_y, "
                      "train_set_x); an itsacat h5 has train_set_x, train_set_y, test_set_x, test_set_y, "
                      "list_classes")
    np.savez(tmp_path / "n.npz", x=imgs(2), labels=np.array([0, 1]))
    assert err(tmp_path / "n.npz") == ("n.npz: missing array 'y' (found: labels, x); an .npz data set has x "
                                       "and y (and optionally x_test, y_test, classes)")


def test_test_half_without_its_partner(tmp_path: Path) -> None:
    write_h5(tmp_path / "test_pets.h5", test_set_x=imgs(2), test_set_y=np.array([0, 1]))
    assert err(tmp_path / "test_pets.h5") == ("test_pets.h5: holds only a test set and its train file "
                                              "train_pets.h5 is not beside it; pass the train file or the "
                                              "merged datasets.h5")
    # the train half alone is a data set without a test set
    write_h5(tmp_path / "train_dogs.h5", train_set_x=imgs(2), train_set_y=np.array([0, 1]))
    assert load_dataset(tmp_path / "train_dogs.h5").x_test is None


@pytest.mark.parametrize(("over", "expected"), [
    ({"train_set_x": np.zeros((6, 4, 4, 2), np.uint8)},
     "d.h5: array 'train_set_x' has shape (6, 4, 4, 2); expected images (m, H, W, C) with C = 1 or 3, "
     "(m, H, W), or flat samples (m, n)"),
    ({"train_set_y": np.zeros((6, 2), np.int64)},
     "d.h5: array 'train_set_y' has shape (6, 2); expected labels (m,) or (1, m)"),
    ({"train_set_y": np.array([0, 1, 0, 1, 1])},
     "d.h5: 'train_set_x' has 6 samples but 'train_set_y' has 5 labels; they must match"),
    ({"train_set_y": np.array([0, 1, 0, 1, 2, 0])},
     "d.h5: 'train_set_y' has label 2 but 'list_classes' names only 2 classes (non-cat, cat); labels must "
     "be 0..1"),
    ({"test_set_y": np.array([1, 5])},
     "d.h5: 'test_set_y' has label 5 but 'list_classes' names only 2 classes (non-cat, cat); labels must "
     "be 0..1"),
    ({"train_set_y": np.array([0, 1, -1, 1, 1, 0])},
     "d.h5: array 'train_set_y' has negative label -1; labels are class indices 0..C-1"),
    ({"train_set_y": np.array([0, 1, 0.5, 1, 1, 0])},
     "d.h5: array 'train_set_y' has non-integer labels; labels are class indices 0..C-1"),
    ({"train_set_x": np.zeros((0, 4, 4, 3), np.uint8), "train_set_y": np.zeros((0,), np.int64)},
     "d.h5: array 'train_set_x' is empty (0 samples); the set needs at least one sample"),
    ({"train_set_x": np.full((6, 4, 4, 3), 300, np.int16)},
     "d.h5: array 'train_set_x' (int16) has values 300..300, not whole pixels 0..255; store images as uint8 "
     "pixel values"),
    ({"train_set_x": np.full((6, 4, 4, 3), 0.5)},
     "d.h5: array 'train_set_x' (float64) has values 0.5..0.5, not whole pixels 0..255; store images as "
     "uint8 pixel values"),
    ({"test_set_x": imgs(2, 8, 8)},
     "d.h5: 'test_set_x' samples have shape (8, 8, 3) but the training samples have (4, 4, 3); train and "
     "test must share one shape"),
    ({"train_set_x": np.array([b"a", b"b", b"c", b"d", b"e", b"f"])},
     "d.h5: array 'train_set_x' has dtype |S1, not numbers; store images as uint8 and labels as integers"),
])
def test_bad_arrays(tmp_path: Path, over: dict, expected: str) -> None:
    assert err(itsacat(tmp_path / "d.h5", **over)) == expected


def test_object_arrays_are_refused(tmp_path: Path) -> None:
    p = tmp_path / "evil.npz"
    np.savez(p, x=np.array([{"a": 1}, None], dtype=object), y=np.array([0, 1]))
    assert err(p) == ("evil.npz: array 'x' is an object (pickled) array, which lambdanet refuses; save numeric "
                      "arrays (uint8 images, integer labels)")


# ---- image folders -------------------------------------------------------------------------
def save(path: Path, size=(6, 4), color=(255, 0, 0), fmt: str = "PNG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, fmt)


def test_folder_of_class_folders(tmp_path: Path) -> None:
    save(tmp_path / "cat" / "a.png", color=(250, 0, 0))
    save(tmp_path / "cat" / "b.png", color=(240, 0, 0))
    save(tmp_path / "dog" / "c.jpg", color=(0, 0, 250), fmt="JPEG")
    (tmp_path / "dog" / "notes.txt").write_text("ignored")
    ds = load_dataset(tmp_path)
    assert ds.classes == ["cat", "dog"] and ds.y_train.tolist() == [0, 0, 1]
    assert ds.x_train.shape == (3, 4, 6, 3) and ds.x_train.dtype == np.uint8 and ds.x_test is None
    assert ds.x_train[0, 0, 0].tolist() == [250, 0, 0] and ds.x_train[2, 0, 0, 2] > 200


def test_folder_with_train_and_test(tmp_path: Path) -> None:
    for split, n in (("train", 2), ("test", 1)):
        for cls in ("a", "b"):
            for i in range(n):
                save(tmp_path / split / cls / f"{i}.png")
    ds = load_dataset(tmp_path)
    assert ds.classes == ["a", "b"] and ds.x_train.shape[0] == 4 and ds.y_test.tolist() == [0, 1]


def test_folder_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert err(tmp_path / "empty") == (f"{tmp_path / 'empty'}: no class sub-folders; put the images in one "
                                       f"sub-folder per class (e.g. empty/cat/, empty/non-cat/) or pass an "
                                       f".h5 / .npz file")
    root = tmp_path / "imgs"
    save(root / "a" / "1.png", size=(6, 4))
    save(root / "b" / "2.png", size=(5, 4))
    assert load_dataset(root).x_train.shape[1:] == (32, 32, 3)  # sizes differ: fitted to the default 32x32
    (root / "b" / "2.png").write_bytes(b"not a png")
    assert err(root) == ("b/2.png: not an image (Pillow cannot identify it); send a JPEG, PNG, GIF, BMP or "
                         "WebP file; remove or replace the file")
    (tmp_path / "none" / "a").mkdir(parents=True)
    assert err(tmp_path / "none").startswith(f"{tmp_path / 'none'}: no images in the class sub-folders (a); ")
