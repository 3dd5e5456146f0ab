"""Mini-batch index lists, reshuffled every epoch, reproducible from ``(seed, epoch)`` alone.

Because the permutation depends only on the seed and the epoch number, a resumed run, a later
round and every worker of a run all see the same batches without passing them around.
"""

from __future__ import annotations

import numpy as np


def minibatches(m: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Index arrays (int64) that cover ``range(m)`` exactly once.

    ``batch_size >= m``: one full batch ``[arange(m)]`` in order (no shuffle). Otherwise a
    permutation from ``np.random.default_rng([seed, epoch])`` cut into batches of
    ``batch_size``; the last one holds the remainder.
    """
    if m <= 0:
        raise ValueError(f"minibatches: m must be positive, got {m}")
    if batch_size <= 0:
        raise ValueError(f"minibatches: batch_size must be positive, got {batch_size}")
    if batch_size >= m:
        return [np.arange(m)]
    perm = np.random.default_rng([seed % 2**64, epoch]).permutation(m)  # (m,)
    return [perm[i:i + batch_size] for i in range(0, m, batch_size)]
