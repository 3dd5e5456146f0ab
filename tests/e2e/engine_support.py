"""Helpers shared by the engine tests (tests/e2e/test_engine_*.py, tests/faults/test_engine_faults.py):
a small real data set, configs, the single-process reference and weight comparison."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lambdanet.config import MLPConfig, itsacat_defaults, parse_config
from lambdanet.data.readers import load_dataset, to_matrix, to_targets
from lambdanet.engine.driver import RunResult
from lambdanet.nn import reference
from lambdanet.services import Services
from lambdanet.settings import Settings
from tests.conftest import CATVNONCAT, CIFAR10

FULL_DATA = CATVNONCAT / "datasets.h5"


def small_data(folder: Path) -> Path:
    """catvnoncat downsampled to 16x16x3 (768 inputs): all 209 training and 50 test images, so the
    uneven splits (209 samples over 4 workers, a last mini-batch of 17) are the real ones."""
    path = folder / "cats16.npz"
    if not path.exists():
        ds = load_dataset(FULL_DATA)
        assert ds.x_test is not None and ds.y_test is not None
        np.savez(path, x=ds.x_train[:, ::4, ::4, :], y=ds.y_train, x_test=ds.x_test[:, ::4, ::4, :],
                 y_test=ds.y_test, classes=np.array(ds.classes))
    return path


def three_class_data(folder: Path) -> Path:
    """CIFAR-10's airplane, automobile and bird, 40 test images each, interleaved, downsampled to
    16x16x3 (768 inputs): a softmax output with 3 classes on real pictures (120 samples)."""
    path = folder / "cifar3.npz"
    if not path.exists():
        with np.load(CIFAR10 / "cifar10_test.npz") as f:
            x, y = f["x"], f["y"]
        idx = np.stack([np.flatnonzero(y == c)[:50] for c in range(3)], axis=1).reshape(-1)  # 0, 1, 2, 0, …
        train, test = idx[:120], idx[120:]
        np.savez(path, x=x[train][:, ::2, ::2, :], y=y[train].astype(np.int64), x_test=x[test][:, ::2, ::2, :],
                 y_test=y[test].astype(np.int64), classes=np.array(["airplane", "automobile", "bird"]))
    return path


def few_samples_data(folder: Path, m: int) -> Path:
    """The first ``m`` images of :func:`small_data` (16x16x3 catvnoncat): tiny batches."""
    path = folder / f"cats16-{m}.npz"
    if not path.exists():
        ds = load_dataset(small_data(folder))
        np.savez(path, x=ds.x_train[:m], y=ds.y_train[:m], classes=np.array(ds.classes))
    return path


def config(**overrides: Any) -> MLPConfig:
    """itsacat's parameters.json (layers 20-7-5-1) in float64, no early stop, with overrides."""
    base: dict[str, Any] = {**itsacat_defaults(), "epochs": 3, "dtype": "float64", "threshold": 0.0}
    base.update(overrides)
    cfg = parse_config(base)
    assert isinstance(cfg, MLPConfig)
    return cfg


def reference_run(cfg: MLPConfig, data: Path) -> reference.TrainResult:
    ds = load_dataset(data)
    X = to_matrix(ds.x_train, cfg.dtype)
    Y = to_targets(ds.y_train, ds.n_classes, cfg.activation_list[-1], cfg.dtype)
    return reference.train(cfg, X, Y)


def max_rel_diff(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> float:
    """max over parameters of max|got - want| / max|want|."""
    assert sorted(got) == sorted(want)
    return max(float(np.max(np.abs(got[k].astype(np.float64) - want[k].astype(np.float64))))
               / max(float(np.max(np.abs(want[k]))), 1e-30) for k in want)


def open_services() -> Services:
    return Services.open(Settings.from_env())


def weights_of(services: Services, result: RunResult) -> dict[str, np.ndarray]:
    assert result.model is not None
    return dict(services.registry.load(result.model).weights)


class RecordingSink:
    """A progress sink that records the epochs it is given (``update`` follows each commit's rows)."""

    def __init__(self) -> None:
        self.epochs: list[int] = []

    def start(self, total_epochs: int, done_epochs: int) -> None:
        pass

    def update(self, epoch: int, cost: float) -> None:
        self.epochs.append(epoch)

    def finish(self) -> None:
        pass
