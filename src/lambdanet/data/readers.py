"""Data set readers: itsacat h5, ``.npz`` arrays, and folders of images.

>>> ds = load_dataset("../shared/datasets/catvnoncat/datasets.h5")
>>> ds = load_dataset("photos/", config)              # the config's image_size and kind apply
>>> X = to_matrix(ds.x_train, "float32")              # (n_x, m) in [0, 1]
>>> Y = to_targets(ds.y_train, len(ds.classes), "sigmoid", "float32")   # (1, m)

Supported inputs:

* **itsacat h5** — the merged ``datasets.h5`` (``train_set_x/y``, ``test_set_x/y``,
  ``list_classes``) or one of the ``train_catvnoncat.h5`` / ``test_catvnoncat.h5`` pair (its
  partner is found beside it by swapping ``train``/``test`` in the file name).
* **npz** — ``x``/``y`` (optional ``x_test``/``y_test`` and ``classes``); a test set may also
  come from ``<name>_test.npz`` beside ``<name>_train.npz`` or ``<name>.npz``. Loaded with
  ``allow_pickle=False``: object arrays are refused.
* **a folder** with one sub-folder per class of images (any sizes and modes), or ``train/`` and
  ``test/`` folders laid out that way (:mod:`lambdanet.data.folders`: the image size, the
  resize policy and the seeded stratified test split of a folder without ``test/``).

With a ``config`` (what :func:`load_dataset` is given by a training run), its ``image_size`` and
``kind`` decide the size of the images: a folder's as :func:`lambdanet.data.folders.target_size`
says; h5/npz images are fitted to ``image_size`` when it is set
with the same resize policy, and kept as they are otherwise.

Images come back as uint8 ``(m, H, W, C)`` (or ``(m, n)`` for flat npz data) and labels as int64
``(m,)``. Every problem is one :class:`~lambdanet.errors.DataError` line naming the file, what is
wrong and what to do.
"""

from __future__ import annotations

import dataclasses
import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from lambdanet.data.archives import extract_archive, is_archive
from lambdanet.data.dataset import Dataset, check_split, check_test_matches, class_names
from lambdanet.data.folders import FolderOptions, load_folder, parallel_map
from lambdanet.errors import DataError

__all__ = ["Dataset", "folder_options", "load_dataset", "save_dataset", "to_matrix", "to_targets"]


H5_SUFFIXES = (".h5", ".hdf5")


def folder_options(config: Any = None) -> FolderOptions:
    """The data-path settings of a training config (an MLP or CNN config, or None: not known)."""
    if config is None:
        return FolderOptions()
    size = getattr(config, "image_size", None)
    return FolderOptions(image_size=tuple(size) if size is not None else None,
                         kind=getattr(config, "kind", None))


def load_dataset(path: str | Path, config: Any = None) -> Dataset:
    """Read a data set from an ``.h5`` / ``.npz`` file or an image folder (see the module doc);
    ``config``: the training config whose ``image_size`` / ``kind`` apply."""
    options = folder_options(config)
    p = Path(path)
    if p.is_dir():
        return load_folder(p, options)
    if is_archive(p.name) and p.is_file():
        return load_archive(p, options)
    return fit_arrays(_load_file(p), options)


def load_archive(p: Path, options: FolderOptions) -> Dataset:
    """A ``.zip`` / ``.tar`` / ``.tar.gz`` of class folders, extracted safely
    (:func:`lambdanet.data.archives.extract_archive`) into a temporary folder and read as one."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="lambdanet-archive-") as tmp:
        root = extract_archive(p, Path(tmp))
        ds = load_folder(root, options)
    return dataclasses.replace(ds, source=str(p))


def _load_file(p: Path) -> Dataset:
    if not p.exists():
        raise DataError(f"{p}: no such file or folder; pass an itsacat .h5, an .npz or a folder of "
                        f"class sub-folders")
    try:
        with p.open("rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise DataError(f"{p}: cannot read it ({exc.__class__.__name__}: {exc.strerror}); check its "
                        f"permissions") from None
    suffix = p.suffix.lower()
    if suffix in H5_SUFFIXES:
        return _load_h5(p)
    if suffix == ".npz":
        return _load_npz(p)
    raise DataError(f"{p.name}: unsupported data file type {p.suffix or '(none)'!r}; use an itsacat .h5, "
                    f"an .npz with x/y arrays or a folder of class sub-folders")


# ---- itsacat h5 ----------------------------------------------------------------------------
def _read_h5(p: Path) -> dict[str, np.ndarray]:
    import h5py

    if not h5py.is_hdf5(p):
        raise DataError(f"{p.name}: not an HDF5 file; pass an itsacat .h5 (train_set_x/train_set_y …)")
    out: dict[str, np.ndarray] = {}
    try:
        with h5py.File(p, "r") as f:
            for key in f:
                item = f[key]
                if isinstance(item, h5py.Dataset):
                    out[key] = item[()]
    except OSError as exc:
        raise DataError(f"{p.name}: cannot read the HDF5 file ({exc}); re-create or re-download it") from None
    return out


def _h5_get(p: Path, data: dict[str, np.ndarray], key: str) -> np.ndarray:
    if key not in data:
        found = ", ".join(sorted(data)) or "nothing"
        raise DataError(f"{p.name}: missing dataset '{key}' (found: {found}); an itsacat h5 has "
                        f"train_set_x, train_set_y, test_set_x, test_set_y, list_classes")
    return data[key]


def _partner(p: Path, have: str) -> Path | None:
    want = "test" if have == "train" else "train"
    name = p.name
    if have not in name:
        return None
    return p.with_name(name[::-1].replace(have[::-1], want[::-1], 1)[::-1])  # swap the last match


def _load_h5(p: Path) -> Dataset:
    data = _read_h5(p)
    train_file: Path = p
    test_file: Path | None = p
    files = {p: data}
    if "train_set_x" not in data and "test_set_x" in data:  # the test half: find its train partner
        other = _partner(p, "test")
        if other is None or not other.is_file():
            want = other.name if other is not None else "train_*.h5"
            raise DataError(f"{p.name}: holds only a test set and its train file {want} is not beside it; "
                            f"pass the train file or the merged datasets.h5")
        train_file = other
        files[other] = _read_h5(other)
    elif "train_set_x" in data and "test_set_x" not in data:  # the train half: its test partner, if any
        other = _partner(p, "train")
        test_file = other if other is not None and other.is_file() else None
        if test_file is not None:
            files[test_file] = _read_h5(test_file)
    train = files[train_file]
    x_train, y_train = check_split(train_file.name, "train_set_x", _h5_get(train_file, train, "train_set_x"),
                                   "train_set_y", _h5_get(train_file, train, "train_set_y"))
    labelled = [(train_file.name, "train_set_y", y_train)]
    x_test = y_test = None
    raw_classes = train.get("list_classes")
    if test_file is not None:
        test = files[test_file]
        x_test, y_test = check_split(test_file.name, "test_set_x", _h5_get(test_file, test, "test_set_x"),
                                     "test_set_y", _h5_get(test_file, test, "test_set_y"))
        check_test_matches(test_file.name, "test_set_x", x_test, x_train)
        labelled.append((test_file.name, "test_set_y", y_test))
        if raw_classes is None:
            raw_classes = test.get("list_classes")
    classes = class_names(train_file.name, "list_classes", raw_classes, labelled)
    return Dataset(x_train, y_train, x_test, y_test, classes, str(p))


# ---- npz ----------------------------------------------------------------------------------
def _read_npz(p: Path) -> dict[str, np.ndarray]:
    if not zipfile.is_zipfile(p):
        raise DataError(f"{p.name}: not an .npz file (not a zip archive); save it with np.savez")
    out: dict[str, np.ndarray] = {}
    try:
        with np.load(p, allow_pickle=False) as npz:
            for key in npz.files:
                try:
                    out[key] = npz[key]
                except ValueError:
                    raise DataError(f"{p.name}: array '{key}' is an object (pickled) array, which lambdanet "
                                    f"refuses; save numeric arrays (uint8 images, integer labels)") from None
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{p.name}: cannot read the .npz file ({exc.__class__.__name__}); save it again with "
                        f"np.savez") from None
    return out


def _npz_get(p: Path, data: dict[str, np.ndarray], key: str) -> np.ndarray:
    if key not in data:
        found = ", ".join(sorted(data)) or "nothing"
        raise DataError(f"{p.name}: missing array '{key}' (found: {found}); an .npz data set has x and y "
                        f"(and optionally x_test, y_test, classes)")
    return data[key]


def _npz_test_partner(p: Path) -> Path | None:
    stem = p.stem
    base = stem[: -len("_train")] if stem.endswith("_train") else stem
    other = p.with_name(f"{base}_test{p.suffix}")
    return other if other.is_file() and other != p else None


def _load_npz(p: Path) -> Dataset:
    data = _read_npz(p)
    x_train, y_train = check_split(p.name, "x", _npz_get(p, data, "x"), "y", _npz_get(p, data, "y"))
    labelled = [(p.name, "y", y_train)]
    x_test = y_test = None
    test_name, kx, ky = p.name, "x_test", "y_test"
    if "x_test" in data or "y_test" in data:
        x_test, y_test = check_split(p.name, kx, _npz_get(p, data, kx), ky, _npz_get(p, data, ky))
    elif (other := _npz_test_partner(p)) is not None:
        test = _read_npz(other)
        test_name = other.name
        kx, ky = ("x_test", "y_test") if "x_test" in test else ("x", "y")
        x_test, y_test = check_split(other.name, kx, _npz_get(other, test, kx), ky, _npz_get(other, test, ky))
    if x_test is not None and y_test is not None:
        check_test_matches(test_name, kx, x_test, x_train)
        labelled.append((test_name, ky, y_test))
    classes = class_names(p.name, "classes", data.get("classes"), labelled)
    return Dataset(x_train, y_train, x_test, y_test, classes, str(p))


# ---- image size of array data sets ----------------------------------------------------------
def fit_arrays(ds: Dataset, options: FolderOptions) -> Dataset:
    """``ds`` with its images fitted to ``options.image_size`` by the resize policy of
    :mod:`lambdanet.data.images`; unchanged when that is their size or nothing is asked."""
    size = options.image_size
    if size is None or (ds.x_train.ndim == 4 and tuple(ds.x_train.shape[1:3]) == tuple(size)):
        return ds
    if ds.x_train.ndim != 4:
        raise DataError(f"{Path(ds.source).name}: image_size {list(size)} needs images (m, H, W, C), but this "
                        f"data set holds flat samples of shape {ds.x_train.shape}; remove image_size")
    x_test = None if ds.x_test is None else fit_images(ds.x_test, size)
    return dataclasses.replace(ds, x_train=fit_images(ds.x_train, size), x_test=x_test)


def fit_images(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (m, h, w, C) -> uint8 (m, H, W, C), each image through :func:`~lambdanet.data.images.fit_image`."""
    from PIL import Image

    from lambdanet.data.images import fit_image

    grey = x.shape[3] == 1

    def one(i: int) -> np.ndarray:
        img = Image.fromarray(x[i, :, :, 0] if grey else x[i], mode="L" if grey else "RGB")
        out = np.asarray(fit_image(img, size), dtype=np.uint8)
        return out[:, :, np.newaxis] if grey else out

    rows = parallel_map(one, range(x.shape[0]))
    return np.stack(rows) if rows else np.zeros((0, size[0], size[1], x.shape[3]), np.uint8)


def save_dataset(ds: Dataset, path: str | Path) -> Path:
    """Write ``ds`` as an ``.npz`` that :func:`load_dataset` reads back as the same arrays and
    class names (``x``, ``y``, ``x_test``, ``y_test``, ``classes``; no pickle)."""
    arrays: dict[str, np.ndarray] = {"x": ds.x_train, "y": ds.y_train, "classes": np.asarray(list(ds.classes))}
    if ds.x_test is not None and ds.y_test is not None:
        arrays.update(x_test=ds.x_test, y_test=ds.y_test)
    out = Path(path)
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    out.write_bytes(buf.getvalue())
    return out


# ---- matrices -----------------------------------------------------------------------------
def to_matrix(x: np.ndarray, dtype: str) -> np.ndarray:
    """uint8 (m, …) samples -> float (n_x, m) design matrix scaled to [0, 1] (``/ 255``)."""
    m = x.shape[0]
    X = x.reshape(m, -1).T.astype(dtype)  # (n_x, m), Fortran-ordered: each sample contiguous
    X /= 255
    return X


def to_targets(y: np.ndarray, n_classes: int, output: str, dtype: str) -> np.ndarray:
    """int labels (m,) -> (1, m) 0/1 targets for a ``sigmoid`` output, one-hot (C, m) for ``softmax``."""
    labels = np.asarray(y).reshape(-1).astype(np.int64)  # (m,)
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise DataError(f"labels must be in 0..{n_classes - 1}, found {labels.min()}..{labels.max()}")
    if output == "sigmoid":
        if n_classes != 2:
            raise DataError(f"a sigmoid output needs 2 classes but the data has {n_classes}; use a softmax "
                            f"output layer with {n_classes} neurons")
        return labels.reshape(1, -1).astype(dtype)
    if output == "softmax":
        Y = np.zeros((n_classes, labels.size), dtype=dtype)  # (C, m)
        Y[labels, np.arange(labels.size)] = 1
        return Y
    raise DataError(f"unknown output activation {output!r} (known: sigmoid, softmax)")
