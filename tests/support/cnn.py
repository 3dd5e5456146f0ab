"""Helpers for other areas' tests: train a tiny LeNet on a CIFAR-10 subset and register it.

Usage (e.g. a serve test fixture)::

    registry = ModelRegistry(FolderStore(tmp_path / "objects"))
    mv = train_tiny_lenet(registry, n_train=200, epochs=2)        # -> ModelVersion "cifar-lenet:1"
    x_test, y_test = cifar_subset(n_test=20)[2:]                   # uint8 (20, 32, 32, 3), labels

Runs on the CPU in a second or two. The data folder is ``datasets/cifar10`` of the shared folder
(:data:`tests.support.SHARED`).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from lambdanet.config import CNNConfig
from lambdanet.registry import ModelRegistry, ModelVersion
from lambdanet.torchnet.data import ImageData, load_cifar10
from lambdanet.torchnet.export import model_metadata, registry_weights
from lambdanet.torchnet.models import build_model
from lambdanet.torchnet.train import configure_torch, make_optimizer, train_epochs
from tests.support import CIFAR10


def cifar_dir() -> Path:
    return CIFAR10


@functools.lru_cache(maxsize=4)
def _cached(folder: str, n_train: int, n_test: int, seed: int) -> ImageData:
    return load_cifar10(folder, limit_train=n_train, limit_test=n_test, seed=seed)


def cifar_subset(
    n_train: int = 200, n_test: int = 100, seed: int = 0, folder: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): shuffled subsets (cached; do not modify the arrays)."""
    d = _cached(str(folder or cifar_dir()), n_train, n_test, seed)
    return d.x_train, d.y_train, d.x_test, d.y_test


def plain_images(x: np.ndarray) -> torch.Tensor:
    """uint8 (n, H, W, 3) -> float (n, 3, H, W): x / 255, minus 0.5, over 0.5 — written here, not
    lambdanet's ``to_tensor``."""
    t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).to(torch.float32)
    return (t / 255.0 - 0.5) / 0.5


def write_cifar_subset(folder: str | Path, n_train: int = 200, n_test: int = 100) -> Path:
    """``folder/cifar10_train.npz`` and ``cifar10_test.npz`` (the reader pairs them) holding a
    :func:`cifar_subset`; returns the train file's path, the data argument of a CNN run."""
    x, y, xt, yt = cifar_subset(n_train=n_train, n_test=n_test)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "cifar10_train.npz", x=x, y=y.astype(np.uint8))
    np.savez(folder / "cifar10_test.npz", x=xt, y=yt.astype(np.uint8))
    return folder / "cifar10_train.npz"


def train_tiny_lenet(
    registry: ModelRegistry,
    n_train: int = 200,
    epochs: int = 2,
    name: str = "cifar-lenet",
    n_test: int = 100,
    seed: int = 0,
    folder: str | Path | None = None,
) -> ModelVersion:
    """Train a wide LeNet on ``n_train`` CIFAR-10 images for ``epochs`` and register a version."""
    d = _cached(str(folder or cifar_dir()), n_train, n_test, seed)
    cfg = CNNConfig(model="lenet", epochs=epochs, batch_size=50, seed=seed)
    configure_torch()
    model = build_model("lenet", seed=seed)
    opt = make_optimizer(model, cfg)
    out = train_epochs(model, opt, d.x_train, d.y_train, cfg, epochs, test=(d.x_test, d.y_test))
    last = out.epochs[-1]
    metrics = {"final_cost": last.loss, "train_accuracy": last.train_accuracy, "test_accuracy": last.test_accuracy}
    return registry.register(name, registry_weights(model), model_metadata(cfg, d.classes, metrics))
