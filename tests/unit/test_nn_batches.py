"""Mini-batches: cover every index once, reshuffle per epoch, depend only on (seed, epoch)."""

from __future__ import annotations

import numpy as np
import pytest

from lambdanet.nn.batches import minibatches


def test_full_batch_is_in_order() -> None:
    for bs in (10, 11, 1000):
        (b,) = minibatches(10, bs, seed=3, epoch=5)
        np.testing.assert_array_equal(b, np.arange(10))


def test_cover_every_index_once_with_a_remainder_batch() -> None:
    batches = minibatches(209, 64, seed=1, epoch=0)
    assert [len(b) for b in batches] == [64, 64, 64, 17]
    np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(209))


def test_reshuffled_per_epoch_and_deterministic() -> None:
    e0 = np.concatenate(minibatches(100, 10, seed=1, epoch=0))
    e1 = np.concatenate(minibatches(100, 10, seed=1, epoch=1))
    again = np.concatenate(minibatches(100, 10, seed=1, epoch=0))
    other_seed = np.concatenate(minibatches(100, 10, seed=2, epoch=0))
    assert not np.array_equal(e0, e1)
    assert not np.array_equal(e0, other_seed)
    np.testing.assert_array_equal(e0, again)
    np.testing.assert_array_equal(e0, np.random.default_rng([1, 0]).permutation(100))


def test_bad_sizes() -> None:
    with pytest.raises(ValueError, match="batch_size must be positive"):
        minibatches(10, 0, 1, 0)
    with pytest.raises(ValueError, match="m must be positive"):
        minibatches(0, 5, 1, 0)
