"""Collectives over any TensorStore: barrier, all_gather, all_reduce, broadcast.

Usage (inside a worker; every worker calls the same collectives in the same order)::

    comm = Collective(store, prefix="ln:r-1:3:0", rank=k, size=K, timeout_s=60)
    parts = comm.all_gather(A_k)          # [A_0, …, A_{K-1}] — identical on every worker
    total = comm.all_reduce(partial)      # sum in worker-index order: identical bits everywhere
    W = comm.broadcast(W, root=0)
    comm.barrier()

Protocol of one collective step ``s`` (keys ``{prefix}:{s}:…``, the prefix being
``ln:{run}:{round}:{attempt}``, so a late write of a dead attempt can never reach a retry):

1. *arrive*: worker k writes its part ``{s}:w{k}`` (if it has one) and increments ``{s}:n``; the
   worker whose increment returns K pushes K release tokens to ``{s}:go`` and deletes the keys
   of step ``s-1`` (every worker has finished reading them, since all K have arrived at ``s``) —
   so a 2500-epoch round keeps only two steps in the store;
2. *wait and read*: every worker pops one token (``BLPOP`` / a condition variable — never
   sleep-and-poll) within the collective deadline, else :class:`DeadlineExceeded`, and reads the
   other parts (its own it already has).

On Redis both halves are ONE round trip (``RedisStore.exchange``: a Lua script for the arrival,
then ``BLPOP`` and ``MGET``, in one pipeline — Redis runs a connection's commands in order). A
store without ``exchange`` works through the port's primitives (put, incr, push, pop_blocking,
get_many, delete_prefix).
With K = 1 every collective returns at once without touching the store. The driver deletes
whatever is left of an attempt with ``delete_prefix`` when the attempt ends.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from lambdanet.errors import DeadlineExceeded
from lambdanet.ports.tensorstore import TensorStore

_TOKEN = b"1"


class Collective:
    """The collectives of one worker (``rank`` of ``size``) within one round attempt."""

    def __init__(self, store: TensorStore, prefix: str, rank: int, size: int, timeout_s: float) -> None:
        if not 0 <= rank < size:
            raise ValueError(f"rank {rank} is outside 0..{size - 1}")
        self.store = store
        self.prefix = prefix
        self.rank = rank
        self.size = size
        self.timeout_s = float(timeout_s)
        self.seq = 0
        self.sync_seconds = 0.0  # time spent inside collectives (waits + transfers)
        self.calls = 0

    # ---- the step protocol ---------------------------------------------------------------
    def _keys(self, step: int) -> tuple[str, str, str]:
        base = f"{self.prefix}:{step}"
        return base, f"{base}:n", f"{base}:go"

    def _step(self, op: str, part: np.ndarray | None, read: list[int]) -> list[np.ndarray]:
        """Steps 1–2 above: arrive with ``part``, wait for the release, return the parts of the
        workers in ``read`` (in that order)."""
        self.seq += 1
        self.calls += 1
        s = self.seq
        base, count_key, go_key = self._keys(s)
        old: list[str] = []
        if s > 1:
            prev, prev_n, _ = self._keys(s - 1)
            old = [prev_n, *(f"{prev}:w{j}" for j in range(self.size))]
        part_key = f"{base}:w{self.rank}"
        read_keys = [f"{base}:w{j}" for j in read]
        store: Any = self.store
        exchange = getattr(store, "exchange", None)
        if exchange is not None:  # fused: one round trip on Redis
            got = exchange(part_key, part, count_key, self.size, go_key, _TOKEN, old, self.timeout_s, read_keys)
        else:  # any TensorStore: the port's primitives
            if part is not None:
                store.put(part_key, part)
            if store.incr(count_key) == self.size:
                if old:
                    store.delete_prefix(f"{base[: base.rindex(':')]}:{s - 1}:")
                store.push(go_key, _TOKEN, count=self.size)
            got = None if store.pop_blocking(go_key, self.timeout_s) is None else store.get_many(read_keys)
        if got is None:
            raise DeadlineExceeded(
                f"worker {self.rank} of {self.size} waited {self.timeout_s:g} s at {op} step {s} of "
                f"{self.prefix}: another worker is missing or too slow"
            )
        return list(got)

    # ---- the collectives -----------------------------------------------------------------
    def barrier(self) -> None:
        """Return once every worker has called ``barrier``."""
        if self.size == 1:
            return
        t0 = time.perf_counter()
        self._step("barrier", None, [])
        self.sync_seconds += time.perf_counter() - t0

    def all_gather(self, part: np.ndarray) -> list[np.ndarray]:
        """Every worker's ``part``, in worker order (the caller's own is returned as given)."""
        if self.size == 1:
            return [part]
        t0 = time.perf_counter()
        parts = self._step("all_gather", part, [j for j in range(self.size) if j != self.rank])
        parts.insert(self.rank, part)
        self.sync_seconds += time.perf_counter() - t0
        return parts

    def all_reduce(self, part: np.ndarray) -> np.ndarray:
        """The sum of every worker's ``part`` (same shape), added in worker-index order, so every
        worker gets the same bits whatever the timing. K = 1 returns ``part`` itself."""
        if self.size == 1:
            return part
        parts = self.all_gather(part)
        t0 = time.perf_counter()
        total = parts[0] + parts[1]
        for p in parts[2:]:
            total += p
        self.sync_seconds += time.perf_counter() - t0
        return total

    def broadcast(self, array: np.ndarray | None, root: int = 0) -> np.ndarray:
        """``root``'s array on every worker (the others pass None or anything)."""
        if self.size == 1:
            assert array is not None
            return array
        t0 = time.perf_counter()
        got = self._step("broadcast", array if self.rank == root else None, [] if self.rank == root else [root])
        out = array if self.rank == root else got[0]
        self.sync_seconds += time.perf_counter() - t0
        assert out is not None
        return out

    def any_true(self, flag: bool) -> bool:
        """True on every worker if ``flag`` is True on any worker (a tiny all-reduce)."""
        if self.size == 1:
            return flag
        return bool(self.all_reduce(np.array([1.0 if flag else 0.0]))[0] > 0)
