"""The validation split of a study: the data set's *training* set split once, with a seeded
permutation, into ``train.npz`` (what trial runs train on: no test arrays, so no trial ever holds
the test set) and ``validation.npz`` (what the tune driver scores every round on), both under
``$LAMBDANET_HOME/studies/<study>/``.

Usage::

    split = ValidationSplit.prepare(data, fraction=0.2, seed=0, folder=study_folder(home, study))
    split.train_path, split.x_valid, split.y_valid, split.n_classes
    split = ValidationSplit.load(folder)       # a trial-driver process: the files the study wrote
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lambdanet.data.dataset import Dataset
from lambdanet.errors import DataError


def _save_npz(path: Path, x: np.ndarray, y: np.ndarray, classes: list[str]) -> None:
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez(tmp, x=x, y=y, classes=np.array(classes, dtype=str))
    tmp.replace(path)  # a driver killed while writing leaves no half file


def write_split(dataset: Dataset, fraction: float, seed: int, folder: Path) -> tuple[Path, Path]:
    """``train.npz`` (what trial runs train on: no test arrays) and ``validation.npz``."""
    m = len(dataset.y_train)
    n_val = round(m * fraction)
    if n_val < 1 or n_val >= m:
        raise DataError(f"{dataset.source}: --validation-fraction {fraction:g} of {m} training samples leaves "
                        f"{n_val} for validation and {m - n_val} for training; both need at least one")
    perm = np.random.default_rng(seed).permutation(m)
    valid, train = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    folder.mkdir(parents=True, exist_ok=True)
    train_path, valid_path = folder / "train.npz", folder / "validation.npz"
    _save_npz(train_path, dataset.x_train[train], dataset.y_train[train], dataset.classes)
    _save_npz(valid_path, dataset.x_train[valid], dataset.y_train[valid], dataset.classes)
    return train_path, valid_path


@dataclass(frozen=True)
class ValidationSplit:
    train_path: Path
    valid_path: Path
    train: Dataset  # the trials' training set (no test arrays)
    x_valid: np.ndarray  # (m_valid, …) as stored
    y_valid: np.ndarray  # (m_valid,)
    n_classes: int

    @classmethod
    def prepare(cls, data: str, fraction: float, seed: int, folder: Path, config: Any = None) -> ValidationSplit:
        """The split of ``data``, written on first use (the only read of ``data`` before the study
        ends), read back from ``folder`` after that. ``config``: the base config (its
        ``image_size`` fits the images before the split)."""
        from lambdanet.data.readers import load_dataset

        if not ((folder / "train.npz").exists() and (folder / "validation.npz").exists()):
            write_split(load_dataset(data, config), fraction, seed, folder)
        return cls.load(folder)

    @classmethod
    def load(cls, folder: Path) -> ValidationSplit:
        from lambdanet.data.readers import load_dataset

        train_path, valid_path = folder / "train.npz", folder / "validation.npz"
        valid = load_dataset(valid_path)
        return cls(train_path=train_path, valid_path=valid_path, train=load_dataset(train_path),
                   x_valid=valid.x_train, y_valid=valid.y_train, n_classes=valid.n_classes)
