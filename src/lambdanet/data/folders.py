"""Read a folder of images laid out one sub-folder per class (optionally under ``train/`` and
``test/``). Class names are the sub-folder names in sorted order; images in each are read in
file-name order, decoded to RGB and must all share one size."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lambdanet.data.dataset import Dataset
from lambdanet.data.images import decode_image
from lambdanet.errors import DataError, ImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def _subdirs(p: Path) -> list[Path]:
    return sorted(d for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))


def _image_files(d: Path) -> list[Path]:
    return sorted(f for f in d.iterdir()
                  if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES)


def _read_split(root: Path, top: Path, classes: list[str],
                first: tuple[Path, tuple[int, int]] | None) -> tuple[np.ndarray, np.ndarray, tuple | None]:
    """Decode every image of ``top/<class>/``; returns uint8 (m, H, W, 3), int64 (m,) labels."""
    images: list[np.ndarray] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        d = top / name
        if not d.is_dir():
            continue
        for f in _image_files(d):
            rel = f.relative_to(root)
            try:
                img = decode_image(f.read_bytes())
            except ImageError as exc:
                raise DataError(f"{rel}: {exc}; remove or replace the file") from None
            except OSError as exc:
                raise DataError(f"{rel}: cannot read it ({exc.__class__.__name__})") from None
            if first is None:
                first = (rel, img.size)
            elif img.size != first[1]:
                (w0, h0), (w, h) = first[1], img.size
                raise DataError(f"{rel}: image is {w}x{h} but {first[0]} is {w0}x{h0}; all images must "
                                f"share one size (resize them first)")
            images.append(np.asarray(img, dtype=np.uint8))  # (H, W, 3)
            labels.append(label)
    if not images:
        return np.zeros((0, 0, 0, 3), np.uint8), np.zeros((0,), np.int64), first
    return np.stack(images), np.asarray(labels, dtype=np.int64), first


def load_folder(p: Path) -> Dataset:
    """A class-per-sub-folder image set, or ``train/`` + ``test/`` folders of that layout."""
    subdirs = _subdirs(p)
    names = {d.name for d in subdirs}
    split = "train" in names and "test" in names and bool(_subdirs(p / "train"))
    train_dir = p / "train" if split else p
    classes = [d.name for d in _subdirs(train_dir)]
    if not classes:
        raise DataError(f"{p}: no class sub-folders; put the images in one sub-folder per class "
                        f"(e.g. {p.name}/cat/, {p.name}/non-cat/) or pass an .h5 / .npz file")
    x_test = y_test = None
    x_train, y_train, first = _read_split(p, train_dir, classes, None)
    if x_train.shape[0] == 0:
        raise DataError(f"{train_dir}: no images in the class sub-folders ({', '.join(classes)}); "
                        f"supported files: {', '.join(IMAGE_SUFFIXES)}")
    if split:
        extra = sorted({d.name for d in _subdirs(p / "test")} - set(classes))
        if extra:
            raise DataError(f"{p / 'test'}: class folder(s) {', '.join(extra)} are not in {p / 'train'}; "
                            f"train and test need the same classes")
        x_test, y_test, _ = _read_split(p, p / "test", classes, first)
        if x_test.shape[0] == 0:
            x_test = y_test = None
    return Dataset(x_train, y_train, x_test, y_test, classes, str(p))
