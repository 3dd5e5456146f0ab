"""CIFAR-10 loading, normalisation and the worker-independent augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lambdanet.errors import DataError
from lambdanet.torchnet.data import (
    CIFAR10_CLASSES,
    augment,
    augment_plan,
    class_names,
    load_cifar10,
    minibatches,
    to_tensor,
)
from tests.conftest import CIFAR10


def test_load_subset_is_shuffled_across_classes() -> None:
    d = load_cifar10(CIFAR10, limit_train=300, limit_test=50)
    assert d.x_train.shape == (300, 32, 32, 3) and d.x_train.dtype == np.uint8
    assert d.x_test.shape == (50, 32, 32, 3) and d.y_test.dtype == np.int64
    assert len(np.unique(d.y_train)) == 10  # the files are sorted by class; a subset must mix them
    assert d.classes == CIFAR10_CLASSES


def test_missing_or_malformed_npz_is_data_error(tmp_path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_cifar10(tmp_path)
    np.savez(tmp_path / "cifar10_train.npz", a=np.zeros(3))
    with pytest.raises(DataError, match="expected arrays 'x' and 'y'"):
        load_cifar10(tmp_path)


def test_to_tensor_normalises_to_minus_one_one() -> None:
    x = np.array([[[[0, 255, 51]]]], dtype=np.uint8)  # (1, 1, 1, 3)
    t = to_tensor(x)
    assert t.shape == (1, 3, 1, 1) and t.dtype == torch.float32
    assert np.allclose(t.numpy().ravel(), [-1.0, 1.0, (51 / 255 - 0.5) / 0.5])


def test_minibatches_cover_every_sample_once() -> None:
    b = minibatches(250, 100, seed=0, epoch=1)
    assert [len(i) for i in b] == [100, 100, 50]
    assert np.array_equal(np.sort(np.concatenate(b)), np.arange(250))
    assert not np.array_equal(np.concatenate(b), np.concatenate(minibatches(250, 100, seed=0, epoch=2)))


def test_augment_matches_per_sample_crop_and_flip() -> None:
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, size=(40, 32, 32, 3), dtype=np.uint8)
    plan = augment_plan(40, seed=0, epoch=1)
    idx = np.arange(40)
    out = augment(x, plan, idx)
    for i in range(40):
        padded = np.pad(x[i], ((4, 4), (4, 4), (0, 0)))
        ref = padded[plan.dy[i] : plan.dy[i] + 32, plan.dx[i] : plan.dx[i] + 32]
        if plan.flip[i]:
            ref = ref[:, ::-1]
        assert np.array_equal(out[i], ref)
    assert 0 < plan.flip.sum() < 40 and len(np.unique(plan.dx)) > 3


def test_augment_depends_on_sample_index_not_on_the_worker_slice() -> None:
    rng = np.random.default_rng(6)
    x = rng.integers(0, 256, size=(10, 32, 32, 3), dtype=np.uint8)
    plan = augment_plan(10, seed=2, epoch=3)
    whole = augment(x, plan, np.arange(10))
    halves = np.concatenate([augment(x[:5], plan, np.arange(5)), augment(x[5:], plan, np.arange(5, 10))])
    assert np.array_equal(whole, halves)


def test_class_names_for_numeric_cifar_labels() -> None:
    assert class_names([str(i) for i in range(10)], 10) == CIFAR10_CLASSES
    assert class_names(["a", "b"], 2) == ["a", "b"]
