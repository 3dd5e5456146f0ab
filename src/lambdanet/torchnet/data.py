"""CIFAR-10 arrays, the normalisation the models expect, and deterministic augmentation.

Usage::

    data = load_cifar10("../shared/datasets/cifar10", limit_train=200, limit_test=100)
    batches = minibatches(len(data.y_train), 100, seed=0, epoch=3)     # list of index arrays
    plan = augment_plan(len(data.y_train), seed=0, epoch=3)            # per-sample crop/flip
    plan = augment_plan(len(data.y_train), 0, 3, cutout=12)            # … and a 12x12 grey square
    xb = augment(data.x_train[idx], plan, idx)                         # uint8 (n, 32, 32, 3)
    t = to_tensor(xb)                                                   # float (n, 3, 32, 32)

Images are uint8 (N, H, W, C) RGB everywhere outside the model; :func:`to_tensor` is the one
place that turns them into normalised tensors (``x / 255`` then mean 0.5 / std 0.5 per
channel), shared by training and :class:`~lambdanet.torchnet.predictor.CNNPredictor`.
Augmentation draws (dy, dx, flip) for *every* sample of an epoch from
``np.random.default_rng([seed, epoch, 1])`` and indexes it by sample number, so the augmented
input of a sample depends only on (seed, epoch, sample index) — never on which worker holds it.
Cutout squares are drawn from ``default_rng([seed, epoch, 3])``, a stream of their own, so
adding cutout leaves the crops and flips of a config unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lambdanet.errors import DataError

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
PAD = 4


@dataclass(frozen=True)
class ImageData:
    x_train: np.ndarray  # uint8 (m, 32, 32, 3)
    y_train: np.ndarray  # int64 (m,)
    x_test: np.ndarray  # uint8 (t, 32, 32, 3)
    y_test: np.ndarray  # int64 (t,)
    classes: list[str]


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            if "x" not in z.files or "y" not in z.files:
                raise DataError(f"{path}: expected arrays 'x' and 'y' (found: {', '.join(z.files)})")
            x, y = z["x"], z["y"]
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc.__class__.__name__})") from None
    check_images(x, str(path))
    if y.shape != (x.shape[0],):
        raise DataError(f"{path}: y has shape {y.shape}, expected ({x.shape[0]},)")
    return x, y.astype(np.int64)


def check_images(x: np.ndarray, source: str) -> None:
    """Refuse anything that is not uint8 (N, H, W, 3)."""
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise DataError(f"{source}: expected uint8 images (N, H, W, 3), got {x.dtype} {x.shape}")


def subset(n: int, limit: int | None, seed: int) -> np.ndarray:
    """Indices of a shuffled subset of ``limit`` of ``n`` samples (the arrays are sorted by class)."""
    perm = np.random.default_rng([seed, 7919]).permutation(n)
    return np.sort(perm[:limit]) if limit is not None and limit < n else perm


def load_cifar10(
    folder: str | Path, limit_train: int | None = None, limit_test: int | None = None, seed: int = 0
) -> ImageData:
    """Read ``cifar10_train.npz`` / ``cifar10_test.npz`` from ``folder``; optional shuffled subsets."""
    root = Path(folder)
    x_tr, y_tr = _read_npz(root / "cifar10_train.npz")
    x_te, y_te = _read_npz(root / "cifar10_test.npz")
    i_tr, i_te = subset(len(y_tr), limit_train, seed), subset(len(y_te), limit_test, seed + 1)
    return ImageData(x_tr[i_tr], y_tr[i_tr], x_te[i_te], y_te[i_te], list(CIFAR10_CLASSES))


def class_names(classes: list[str], n_classes: int) -> list[str]:
    """Human names for CIFAR-10 when a reader only knows "0".."9"."""
    if n_classes == 10 and (not classes or classes == [str(i) for i in range(10)]):
        return list(CIFAR10_CLASSES)
    return list(classes) if classes else [str(i) for i in range(n_classes)]


def to_tensor(x: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W), ``(x / 255 - mean) / std`` with mean = std = 0.5."""
    t = torch.from_numpy(np.ascontiguousarray(x)).to(device)
    t = t.permute(0, 3, 1, 2).to(torch.float32)  # (N, C, H, W)
    return t.div_(255.0).sub_(MEAN[0]).div_(STD[0])


def minibatches(m: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The epoch's mini-batches: a permutation from ``default_rng([seed, epoch])`` cut into batches."""
    perm = np.random.default_rng([seed, epoch]).permutation(m)
    return [perm[i : i + batch_size] for i in range(0, m, batch_size)]


TRANSLATE = 2  # "translate": airbench94's shift of up to 2 pixels, reflect-padded
CUTOUT_FILL = 128  # mid-grey: 0 after the (x / 255 - 0.5) / 0.5 normalisation, as airbench96 fills


@dataclass(frozen=True)
class AugmentPlan:
    dy: np.ndarray  # int (m,) crop offset in the padded image, 0..2*pad
    dx: np.ndarray  # int (m,)
    flip: np.ndarray  # bool (m,)
    pad: int = PAD  # pixels added on every side before the crop
    reflect: bool = False  # mirror the border into the padding (else zeros)
    cutout: int = 0  # side of the grey square laid over each augmented image (0: none)
    cutout_u: np.ndarray | None = None  # float (m,) in [0, 1): the square's corner, as a share of
    cutout_v: np.ndarray | None = None  # the free rows / columns (the image size is known later)


def augment_plan(m: int, seed: int, epoch: int, mode: str = "crop+flip", cutout: int = 0) -> AugmentPlan | None:
    """Crop offsets and flips for every sample of an epoch (worker-independent) — the config's
    ``augment`` mode, a crop part and a flip part joined by "+":

    * "crop": a random 32x32 window of the image zero-padded by 4; "translate": of the image
      reflect-padded by 2 (airbench94's); neither: centred (no shift);
    * "flip": each sample mirrored with probability 1/2, drawn per epoch; "altflip": airbench94's
      alternating flip — a seeded half of the samples mirrored in odd epochs, the other half in
      even ones (every image seen both ways every two epochs); neither: never mirrored.

    "crop", "flip" and "crop+flip" share the same draws, so a mode only masks what the other would
    do. ``cutout`` > 0 adds airbench96's cutout (DeVries & Taylor 2017): a ``cutout`` x ``cutout``
    square of :data:`CUTOUT_FILL` grey at a uniform position wholly inside each image, after the
    crop and flip. "none" without cutout: None."""
    if mode == "none" and cutout == 0:
        return None
    parts = set(mode.split("+"))
    pad = TRANSLATE if "translate" in parts else PAD
    rng = np.random.default_rng([seed, epoch, 1])
    off = rng.integers(0, 2 * pad + 1, size=(2, m))
    flip = rng.random(m) < 0.5
    if not parts & {"crop", "translate"}:
        off[:] = pad
    if "altflip" in parts:  # one draw per run, complemented every other epoch
        flip = (np.random.default_rng([seed, 2]).random(m) < 0.5) ^ (epoch % 2 == 0)
    elif "flip" not in parts:
        flip[:] = False
    corners = np.random.default_rng([seed, epoch, 3]).random((2, m)) if cutout else (None, None)
    return AugmentPlan(dy=off[0], dx=off[1], flip=flip, pad=pad, reflect="translate" in parts,
                       cutout=cutout, cutout_u=corners[0], cutout_v=corners[1])


def augment(x: np.ndarray, plan: AugmentPlan, index: np.ndarray) -> np.ndarray:
    """Random crop of the padded image + horizontal flip (+ cutout) of ``x`` (n, H, W, C), samples
    ``index`` of the plan."""
    n, h, w, _ = x.shape
    p = plan.pad
    padded = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect" if plan.reflect else "constant")
    rows = plan.dy[index][:, None] + np.arange(h)  # (n, H)
    cols = plan.dx[index][:, None] + np.arange(w)  # (n, W)
    flip = plan.flip[index]
    cols[flip] = cols[flip][:, ::-1]
    out: np.ndarray = padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]  # (n, H, W, C)
    if plan.cutout and plan.cutout_u is not None and plan.cutout_v is not None:
        size = plan.cutout
        top = (plan.cutout_u[index] * (h - size + 1)).astype(np.int64)  # (n,) in 0..h - size
        left = (plan.cutout_v[index] * (w - size + 1)).astype(np.int64)  # (n,)
        in_rows = (np.arange(h) >= top[:, None]) & (np.arange(h) < top[:, None] + size)  # (n, H)
        in_cols = (np.arange(w) >= left[:, None]) & (np.arange(w) < left[:, None] + size)  # (n, W)
        out[in_rows[:, :, None] & in_cols[:, None, :]] = CUTOUT_FILL
    return out
