"""Read a folder of images laid out one sub-folder per class (optionally under ``train/`` and
``test/``), the way people keep photos: any sizes and aspect ratios, any colour mode, EXIF
orientation honoured.

>>> ds = load_folder(Path("photos"))                                  # the defaults below
>>> ds = load_folder(Path("photos"), FolderOptions(image_size=(64, 64), kind="mlp"))

Class names are the sub-folder names in sorted order; images in each are read in file-name
order. Every image is decoded and brought to one size with the resize policy of
:mod:`lambdanet.data.images` (short side resized, centre cropped) by a pool of threads (Pillow
decodes and resizes without holding the GIL, so the pool uses every core).

**The size** (:func:`target_size`): ``image_size`` when the config sets it; else the images' own
size when they all share one of at most 64x64 pixels (a folder of CIFAR-10 or catvnoncat images
keeps its pixels); else 32x32 (:data:`DEFAULT_IMAGE_SIZE`) — for MLP and CNN configs alike (the
CNNs take any size above their smallest, see :data:`lambdanet.torchnet.models.MIN_SIDE`).

**The test set**: the images of ``test/`` when there is one; else a seeded, stratified split of
the class folders: ``round(test_fraction * n)`` images of each class of ``n`` images (at most
``n - 1``: each class keeps one training image) chosen by ``default_rng([SPLIT_SEED, class])``,
:data:`DEFAULT_TEST_FRACTION` = 0.2 — so a class of 1 or 2 images is all training and the split
never depends on the other classes, the training seed or the machine.

One unreadable or corrupt image is one :class:`~lambdanet.errors.DataError` line naming it (the
first in sorted order when there are several).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from lambdanet.data.dataset import Dataset
from lambdanet.data.images import MAX_PIXELS, decode_image, photo_to_array
from lambdanet.errors import DataError, ImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jfif", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
DEFAULT_IMAGE_SIZE = (32, 32)  # (H, W) of a folder whose images differ in size
KEEP_OWN_SIZE_UP_TO = 64  # images that all share one size with both sides <= this keep it
DEFAULT_TEST_FRACTION = 0.2
SPLIT_SEED = 0
SKIPPED_FOLDERS = ("__MACOSX",)  # macOS zip resource forks: never a class

A = TypeVar("A")
T = TypeVar("T")


@dataclass(frozen=True)
class FolderOptions:
    """How a folder becomes arrays: ``image_size`` (H, W) or None for the default, the config's
    ``kind`` ("mlp" | "cnn" | None: not known), the test fraction of a folder without ``test/``."""

    image_size: tuple[int, int] | None = None
    kind: str | None = None
    test_fraction: float = DEFAULT_TEST_FRACTION


def _subdirs(p: Path) -> list[Path]:
    return sorted(d for d in p.iterdir()
                  if d.is_dir() and not d.name.startswith(".") and d.name not in SKIPPED_FOLDERS)


def _image_files(d: Path) -> list[Path]:
    return sorted(f for f in d.iterdir()
                  if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES)


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def parallel_map(fn: Callable[[A], T], items: Sequence[A]) -> list[T]:
    """``[fn(x) for x in items]`` on a thread per core, in order; the first failure in item order
    is raised (every item is still run: no half-finished pool is left behind)."""
    if len(items) < 2:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=min(usable_cores(), len(items)), thread_name_prefix="decode") as pool:
        return list(pool.map(fn, items))


def _read(root: Path, f: Path) -> bytes:
    try:
        return f.read_bytes()
    except OSError as exc:
        raise DataError(f"{f.relative_to(root)}: cannot read it ({exc.__class__.__name__}: "
                        f"{exc.strerror or exc})") from None


def _refuse(root: Path, f: Path, exc: ImageError) -> DataError:
    return DataError(f"{f.relative_to(root)}: {exc}; remove or replace the file")


def _shown_size(root: Path, f: Path) -> tuple[int, int]:
    """(H, W) of an image as displayed (EXIF orientation applied), from its header only."""
    try:
        with Image.open(f) as img:  # lazy: reads the header, no pixels
            w, h = img.size
            # a PNG's getexif() decodes the whole image when the header has no eXIf chunk: skip it
            lazy = img.format != "PNG" or "exif" in img.info
            orientation = img.getexif().get(0x0112, 1) if lazy else 1
    except OSError as exc:
        if not isinstance(exc, UnidentifiedImageError) and not f.is_file():
            raise DataError(f"{f.relative_to(root)}: cannot read it ({exc.__class__.__name__})") from None
        w = h = 0
    except (SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError):
        w = h = 0
    if w <= 0 or h <= 0:  # not an image, or a damaged header: decoding it says precisely why
        try:
            decode_image(_read(root, f))
        except ImageError as exc:
            raise _refuse(root, f, exc) from None
        raise _refuse(root, f, ImageError("cannot read the image header"))
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def target_size(sizes: Sequence[tuple[int, int]], options: FolderOptions) -> tuple[int, int]:
    """The (H, W) every image of the folder is brought to (see the module doc)."""
    if options.image_size is not None:
        return options.image_size
    own = set(sizes)
    if len(own) == 1:
        h, w = next(iter(own))
        if h <= KEEP_OWN_SIZE_UP_TO and w <= KEEP_OWN_SIZE_UP_TO:
            return h, w
    return DEFAULT_IMAGE_SIZE


def stratified_split(labels: np.ndarray, n_classes: int, fraction: float) -> np.ndarray:
    """A bool mask of the samples held out for testing: ``round(fraction * n)`` of each class
    (at most ``n - 1``), chosen by ``default_rng([SPLIT_SEED, class])``."""
    test = np.zeros(labels.shape[0], dtype=bool)
    if fraction <= 0:
        return test
    for c in range(n_classes):
        idx = np.flatnonzero(labels == c)
        k = min(int(fraction * idx.size + 0.5), idx.size - 1)
        if k > 0:
            pick = np.random.default_rng([SPLIT_SEED, c]).permutation(idx.size)[:k]
            test[idx[pick]] = True
    return test


def _listing(top: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        d = top / name
        if not d.is_dir():
            continue
        found = _image_files(d)
        files.extend(found)
        labels.extend([label] * len(found))
    return files, labels


def _decode_all(root: Path, files: list[Path], size: tuple[int, int]) -> np.ndarray:
    """uint8 (m, H, W, 3): every file through the resize policy, on every core."""
    shape = (size[0], size[1], 3)

    def one(f: Path) -> np.ndarray:
        try:
            return photo_to_array(_read(root, f), shape, max_pixels=MAX_PIXELS)
        except ImageError as exc:
            raise _refuse(root, f, exc) from None

    arrays = parallel_map(one, files)
    if not arrays:
        return np.zeros((0, *shape), np.uint8)
    return np.stack(arrays)


def load_folder(p: Path, options: FolderOptions | None = None) -> Dataset:
    """A class-per-sub-folder image set, or ``train/`` + ``test/`` folders of that layout."""
    options = options or FolderOptions()
    subdirs = _subdirs(p)
    names = {d.name for d in subdirs}
    split = "train" in names and "test" in names and bool(_subdirs(p / "train"))
    train_dir = p / "train" if split else p
    classes = [d.name for d in _subdirs(train_dir)]
    if not classes:
        raise DataError(f"{p}: no class sub-folders; put the images in one sub-folder per class "
                        f"(e.g. {p.name}/cat/, {p.name}/non-cat/) or pass an .h5 / .npz file")
    train_files, train_labels = _listing(train_dir, classes)
    if not train_files:
        raise DataError(f"{train_dir}: no images in the class sub-folders ({', '.join(classes)}); "
                        f"supported files: {', '.join(IMAGE_SUFFIXES)}")
    test_files: list[Path] = []
    test_labels: list[int] = []
    if split:
        extra = sorted({d.name for d in _subdirs(p / "test")} - set(classes))
        if extra:
            raise DataError(f"{p / 'test'}: class folder(s) {', '.join(extra)} are not in {p / 'train'}; "
                            f"train and test need the same classes")
        test_files, test_labels = _listing(p / "test", classes)
    files = train_files + test_files
    size = target_size(parallel_map(lambda f: _shown_size(p, f), files), options)
    x = _decode_all(p, files, size)
    y = np.asarray(train_labels + test_labels, dtype=np.int64)
    m = len(train_files)
    if split:
        x_train, y_train, x_test, y_test = x[:m], y[:m], x[m:], y[m:]
    else:
        held = stratified_split(y, len(classes), options.test_fraction)
        x_train, y_train, x_test, y_test = x[~held], y[~held], x[held], y[held]
    if len(y_test) == 0:
        return Dataset(x_train, y_train, None, None, classes, str(p))
    return Dataset(x_train, y_train, x_test, y_test, classes, str(p))
