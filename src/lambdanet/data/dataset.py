"""The :class:`Dataset` record and the checks every reader applies to its arrays.

Each check raises one :class:`~lambdanet.errors.DataError` line that names the file and the
array, says what is wrong and what to do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lambdanet.errors import DataError


@dataclass(frozen=True)
class Dataset:
    """A training set and an optional test set, with class names."""

    x_train: np.ndarray  # uint8 (m, H, W, C)  (or (m, n) for non-image npz)
    y_train: np.ndarray  # int64 (m,) class indices
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    classes: list[str]  # from list_classes / folder names / "0".."C-1"
    source: str

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample: (H, W, C) for images, (n,) for flat data."""
        return tuple(self.x_train.shape[1:])


def _numeric(fname: str, key: str, a: np.ndarray) -> None:
    if a.dtype == object or a.dtype.kind not in "biuf":
        raise DataError(f"{fname}: array '{key}' has dtype {a.dtype}, not numbers; store images as uint8 "
                        f"and labels as integers")


def check_images(fname: str, key: str, x: np.ndarray) -> np.ndarray:
    """(m, H, W, C) / (m, H, W) / (m, n) numbers in 0..255 -> uint8 (m, H, W, C) or (m, n)."""
    x = np.asarray(x)
    _numeric(fname, key, x)
    if x.ndim == 3:
        x = x[..., np.newaxis]  # (m, H, W) grayscale -> (m, H, W, 1)
    if x.ndim not in (2, 4) or (x.ndim == 4 and x.shape[3] not in (1, 3)):
        raise DataError(f"{fname}: array '{key}' has shape {x.shape}; expected images (m, H, W, C) with "
                        f"C = 1 or 3, (m, H, W), or flat samples (m, n)")
    if x.shape[0] == 0:
        raise DataError(f"{fname}: array '{key}' is empty (0 samples); the set needs at least one sample")
    if int(np.prod(x.shape[1:])) == 0:
        raise DataError(f"{fname}: array '{key}' has shape {x.shape}: samples with 0 features (0-sized images); "
                        f"each sample needs at least one pixel")
    if x.dtype != np.uint8:
        lo, hi = x.min(), x.max()
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi > 255 or not np.all(x == np.round(x)):
            raise DataError(f"{fname}: array '{key}' ({x.dtype}) has values {lo:g}..{hi:g}, not whole pixels "
                            f"0..255; store images as uint8 pixel values")
        x = x.astype(np.uint8)
    return x


def check_labels(fname: str, key: str, y: np.ndarray) -> np.ndarray:
    """(m,), (1, m) or (m, 1) non-negative whole numbers -> int64 (m,)."""
    y = np.asarray(y)
    _numeric(fname, key, y)
    if y.ndim == 2 and 1 in y.shape:
        y = y.reshape(-1)
    if y.ndim != 1:
        raise DataError(f"{fname}: array '{key}' has shape {y.shape}; expected labels (m,) or (1, m)")
    if y.size:
        if y.dtype.kind == "f" and not np.all(np.isfinite(y) & (y == np.round(y))):
            raise DataError(f"{fname}: array '{key}' has non-integer labels; labels are class indices 0..C-1")
        if y.min() < 0:
            raise DataError(f"{fname}: array '{key}' has negative label {y.min():g}; labels are class "
                            f"indices 0..C-1")
    return y.astype(np.int64)


def check_split(fname: str, xkey: str, x: np.ndarray, ykey: str, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Check one (x, y) pair: images, labels and matching sample counts."""
    xs = check_images(fname, xkey, x)
    ys = check_labels(fname, ykey, y)
    if xs.shape[0] != ys.shape[0]:
        raise DataError(f"{fname}: '{xkey}' has {xs.shape[0]} samples but '{ykey}' has {ys.shape[0]} labels; "
                        f"they must match")
    return xs, ys


def check_test_matches(fname: str, key: str, x_test: np.ndarray, x_train: np.ndarray) -> None:
    if x_test.shape[1:] != x_train.shape[1:]:
        raise DataError(f"{fname}: '{key}' samples have shape {x_test.shape[1:]} but the training samples have "
                        f"{x_train.shape[1:]}; train and test must share one shape")


def class_names(fname: str, key: str, raw: np.ndarray | None,
                labelled: list[tuple[str, str, np.ndarray]]) -> list[str]:
    """Class names from ``raw`` (bytes or str array) or "0".."C-1"; checks every label is < C.

    ``labelled``: ``(file, key, labels)`` triples to check, e.g. ``[("a.h5", "train_set_y", y)]``.
    """
    top = max((int(y.max()) for _, _, y in labelled if y.size), default=0)
    if raw is None:
        return [str(i) for i in range(max(top + 1, 2))]
    arr = np.asarray(raw)
    if arr.ndim != 1 or arr.dtype.kind not in "SU":
        raise DataError(f"{fname}: '{key}' has shape {arr.shape} and dtype {arr.dtype}; expected a list of "
                        f"class names (strings)")
    names = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in arr.tolist()]
    for file, name, y in labelled:
        if y.size and int(y.max()) >= len(names):
            raise DataError(f"{file}: '{name}' has label {int(y.max())} but '{key}' names only {len(names)} "
                            f"classes ({', '.join(names)}); labels must be 0..{len(names) - 1}")
    return names
