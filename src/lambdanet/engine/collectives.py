"""Collectives over any TensorStore: barrier, all_gather, all_reduce, broadcast.

Usage (inside a worker; every worker calls the same collectives in the same order)::

    comm = Collective(store, prefix="ln:r-1:3:0", rank=k, size=K, timeout_s=60)
    parts = comm.all_gather(A_k)          # [A_0, …, A_{K-1}] — identical on every worker
    mine = comm.reduce_scatter(flat, block_bounds(flat.size, K))  # block k of Σ flat_j
    total = comm.all_reduce(partial)      # sum in worker-index order: identical bits everywhere
    W = comm.broadcast(W, root=0)
    comm.barrier()

Protocol of one collective step ``s`` (keys ``{prefix}:{s}:…``, the prefix being
``ln:{run}:{round}:{attempt}``, so a late write of a dead attempt can never reach a retry):

1. *arrive*: worker k writes its part ``{s}:w{k}`` (if it has one) and increments ``{s}:n``; the
   worker whose increment returns K pushes K release tokens to ``{s}:go`` and deletes the keys
   of step ``s-1`` (every worker has finished reading them, since all K have arrived at ``s``) —
   so a 2500-epoch round keeps only two steps in the store;
2. *wait and read*: every worker pops one token from ``[{prefix}:abort, {s}:go]`` (one
   ``BLPOP`` / a condition variable — never sleep-and-poll) within the collective deadline, else
   :class:`DeadlineExceeded`, and reads the other parts (its own it already has). With a
   ``liveness`` watch (:mod:`lambdanet.engine.liveness`) the wait is cut in slices of
   ``WAIT_SLICE_S``; after each empty slice the worker looks at its peers' heartbeats, and a peer
   that hung (or never started by the start deadline) aborts the attempt with
   ``"worker j: no heartbeat for 3 s"`` — so the peers of a hung worker stop within seconds even
   when its driver is gone, while a peer that is merely late (a cold start) is waited for.

The arrival is idempotent per rank (a client that re-sends it after a read timeout counts once:
see :mod:`lambdanet.stores.redis`), so any skew between the workers shorter than the collective
deadline is harmless.

Fail fast: when a call of the attempt fails (raises, is killed, times out), whoever sees it
first — the failing worker itself, or the driver through the executor's ``on_failure`` —
calls :func:`abort_attempt`: the FIRST reason is kept (``SET NX`` on ``{prefix}:abort:reason``)
and K tokens go to ``{prefix}:abort``. The abort list is listed first in every wait, so it wins
over a release token: every worker blocked in (or entering) a collective raises
:class:`AttemptAborted` with that first reason (``"worker 3: exit code -9"``) at once instead of
waiting out its deadline. A worker that pops an abort token pushes it back before it raises;
with K tokens at most K-1 other workers hold one at any moment, so the list never drains and
every later collective of the attempt raises too, however many waits a worker makes on its way
out. ``delete_prefix`` of the attempt removes it.

On Redis a step is ONE round trip (``RedisStore.exchange``, the optional
:class:`~lambdanet.ports.tensorstore.FusedExchange` capability: a Lua script for the arrival,
then ``BLPOP [abort, go]`` and ``MGET``, in one pipeline — Redis runs a connection's commands in
order). Any other store works through the port's primitives (put, incr, push, pop_first,
get_many, delete_prefix).
``reduce_scatter(flat, bounds)`` is one step: worker k first writes block j of its part for
every other worker j (keys ``{s}:w{k}:p{j}``, deleted with their step) and then sums block k of
every part — it adds 1/K of the numbers (the ``data`` strategy's sharded optimizer step follows
it). A large all-reduce (from ``REDUCE_SCATTER_MIN`` elements per worker) is a reduce-scatter
and an all-gather of the summed blocks, two steps — each worker moves 2(K-1)/K of a part
instead of K-1 parts. Every element is still added in worker order: the same bits as the
one-step form.
With K = 1 every collective returns at once without touching the store. The driver deletes
whatever is left of an attempt with ``delete_prefix`` when the attempt ends.

Compressed payloads (the ``data`` strategy's ``compress``): :func:`compress` turns a float
array into its wire form — ``fp16``: IEEE half (``float16``), ``bf16``: the top 16 bits of the
float32 value rounded to nearest even, carried as ``uint16`` (numpy has no bfloat16) — half the
bytes of float32; :func:`decompress` reads it back exactly. ``reduce_scatter(wire, bounds,
decode=…)`` sums the *decoded* pieces (in the strategy's float dtype, worker order), never the
16-bit numbers themselves. Error feedback (carrying what the rounding dropped into the next
payload) is the caller's: :func:`with_feedback`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from lambdanet.engine.liveness import WAIT_SLICE_S, AttemptLiveness
from lambdanet.errors import AttemptAborted, DeadlineExceeded
from lambdanet.ports.tensorstore import FusedExchange, SharedPut, TensorStore

_TOKEN = b"1"
REDUCE_SCATTER_MIN = 16_384  # elements per worker from which all_reduce is reduce-scatter + all-gather


def _ordered_sum(parts: list[np.ndarray]) -> np.ndarray:
    """``parts[0] + parts[1] + …`` in list order (a new array)."""
    total: np.ndarray = parts[0] + parts[1]
    for p in parts[2:]:
        total += p
    return total


def compress(x: np.ndarray, kind: str) -> np.ndarray:
    """The wire form of float array ``x``: ``fp16`` -> float16; ``bf16`` -> uint16 holding the top
    16 bits of ``x`` as float32, rounded to nearest even (float64 input goes to float32 first);
    ``none`` -> ``x`` itself."""
    if kind == "fp16":
        return np.asarray(x).astype(np.float16)
    if kind == "bf16":
        u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
        return ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)
    if kind == "none":
        return x
    raise ValueError(f"unknown compression {kind!r} (allowed: none, fp16, bf16)")


def decompress(wire: np.ndarray, kind: str, dtype: np.dtype | type | str) -> np.ndarray:
    """The values of a :func:`compress` wire array, as ``dtype`` (exact: every 16-bit value is a
    float32 / float64)."""
    if kind == "bf16":
        return (np.asarray(wire).astype(np.uint32) << np.uint32(16)).view(np.float32).astype(dtype, copy=False)
    return np.asarray(wire).astype(dtype, copy=False)


def with_feedback(x: np.ndarray, residual: np.ndarray, kind: str) -> np.ndarray:
    """Error feedback: the wire form of ``x + residual``; ``residual`` (same shape, updated in
    place) becomes what the rounding dropped, ``(x + residual) - decompress(wire)``, and is added
    to the next payload — so nothing is lost for good, only delayed."""
    y = x + residual
    wire = compress(y, kind)
    np.subtract(y, decompress(wire, kind, y.dtype), out=residual)
    return wire


def block_bounds(n: int, size: int) -> list[int]:
    """The ``size`` + 1 edges of ``n`` elements cut into contiguous blocks (block j is
    ``[edges[j], edges[j + 1])``): sizes differ by at most one, larger blocks first."""
    q, r = divmod(n, size)
    return [j * q + min(j, r) for j in range(size + 1)]


def abort_key(prefix: str) -> str:
    """The attempt's abort list (listed first in every collective wait)."""
    return f"{prefix}:abort"


def _reason_key(prefix: str) -> str:
    return f"{prefix}:abort:reason"


def abort_attempt(store: TensorStore, prefix: str, reason: str, size: int) -> None:
    """Abort the attempt under ``prefix``: keep ``reason`` if it is the first one, then push
    ``size`` (= K) tokens, which wake every worker blocked in (or about to enter) a collective."""
    store.set_if_absent(_reason_key(prefix), " ".join(reason.split()).encode())  # first wins
    store.push(abort_key(prefix), _TOKEN, count=max(1, size))


def abort_reason(store: TensorStore, prefix: str) -> str | None:
    """The first reason the attempt under ``prefix`` was aborted for, or None."""
    raw = store.get_bytes(_reason_key(prefix))
    return None if raw is None else raw.decode(errors="replace")


class Collective:
    """The collectives of one worker (``rank`` of ``size``) within one round attempt."""

    def __init__(self, store: TensorStore, prefix: str, rank: int, size: int, timeout_s: float,
                 liveness: AttemptLiveness | None = None) -> None:
        if not 0 <= rank < size:
            raise ValueError(f"rank {rank} is outside 0..{size - 1}")
        self.store = store
        self.prefix = prefix
        self.rank = rank
        self.size = size
        self.timeout_s = float(timeout_s)
        self.abort = abort_key(prefix)
        # the fused step (one round trip) where the store offers it; checked once, not per step
        self._fused = store if isinstance(store, FusedExchange) else None
        self._shared = store if isinstance(store, SharedPut) else None  # parts by reference (memory)
        self.liveness = liveness  # the peers' heartbeats, looked at between slices of a wait
        self.peers = [j for j in range(size) if j != rank]
        self.seq = 0
        self._pieces_at = 0  # the last step that wrote reduce-scatter pieces (their keys go with it)
        self.sync_seconds = 0.0  # time spent inside collectives (waits + transfers)
        self.calls = 0

    # ---- the step protocol ---------------------------------------------------------------
    @staticmethod
    def _piece_key(base: str, writer: int, reader: int) -> str:
        return f"{base}:w{writer}:p{reader}"

    def _keys(self, step: int) -> tuple[str, str, str]:
        base = f"{self.prefix}:{step}"
        return base, f"{base}:n", f"{base}:go"

    def _step(self, op: str, part: np.ndarray | None, read: list[int],
              pieces: list[np.ndarray] | None = None, hold: bool = False) -> list[np.ndarray]:
        """Steps 1–2 above: arrive with ``part``, wait for the release, return the parts of the
        workers in ``read`` (in that order). With ``pieces`` (one per worker: a reduce-scatter),
        worker k first writes piece j for every other worker j, and reads the pieces the workers
        in ``read`` wrote for it instead of their parts. ``hold``: the caller keeps ``part`` and
        ``pieces`` unchanged until its next collective returns, so a store in this process
        shares them instead of copying them."""
        self.seq += 1
        self.calls += 1
        s = self.seq
        base, count_key, go_key = self._keys(s)
        old: list[str] = []
        if s > 1:
            prev, prev_n, _ = self._keys(s - 1)
            old = [prev_n, *(f"{prev}:w{j}" for j in range(self.size))]
            if self._pieces_at == s - 1:
                old += [self._piece_key(prev, j, i) for j in range(self.size) for i in range(self.size) if i != j]
        part_key = f"{base}:w{self.rank}"
        read_keys = [f"{base}:w{j}" for j in read]
        share = self._shared if hold else None
        put = self.store.put if share is None else share.put_shared
        if pieces is not None:
            for j, piece in enumerate(pieces):
                if j != self.rank:  # written before the arrival, so every piece is there at the release
                    put(self._piece_key(base, self.rank, j), piece)
            read_keys = [self._piece_key(base, j, self.rank) for j in read]
            self._pieces_at = s
        if share is not None and part is not None:
            share.put_shared(part_key, part)  # before the arrival, as the fused write would be
            part = None
        deadline = time.monotonic() + self.timeout_s
        wait = self.timeout_s if self.liveness is None else min(self.timeout_s, WAIT_SLICE_S)
        if self._fused is not None:  # one round trip on Redis
            got = self._fused.exchange(part_key, part, count_key, self.size, go_key, _TOKEN, old,
                                       wait, read_keys, self.abort, self.rank)
        else:
            got = self._primitive_step(s, part_key, part, count_key, go_key, bool(old), read_keys, wait)
        while got is None and (left := deadline - time.monotonic()) > 0:
            self._watch_peers()  # a hung peer aborts the attempt: the next wait returns the abort
            wait = min(left, WAIT_SLICE_S)
            if self._fused is not None:
                got = self._fused.wait_and_get(go_key, wait, read_keys, self.abort)
            else:
                got = self._primitive_wait(go_key, read_keys, wait)
        if got is None:
            raise DeadlineExceeded(
                f"worker {self.rank} of {self.size} waited {self.timeout_s:g} s at {op} step {s} of "
                f"{self.prefix}: another worker is missing or too slow"
            )
        if got[0] == self.abort:
            # put the token back: the abort stays visible to every later wait of the attempt, so a
            # worker's clean-up collective can never take the token a blocked peer needs
            self.store.push(self.abort, _TOKEN)
            raise AttemptAborted(abort_reason(self.store, self.prefix) or f"attempt {self.prefix} was aborted")
        return list(got[1])

    def _watch_peers(self) -> None:
        """After an empty slice of a wait: abort the attempt if a peer hung or never started."""
        if self.liveness is None:
            return
        lapsed = self.liveness.lapsed(self.peers)
        if lapsed:
            j = min(lapsed)
            abort_attempt(self.store, self.prefix, f"worker {j}: {lapsed[j]}", self.size)

    def _primitive_step(self, s: int, part_key: str, part: np.ndarray | None, count_key: str, go_key: str,
                        drop_previous: bool, read_keys: list[str],
                        wait: float) -> tuple[str, list[np.ndarray]] | None:
        """One step through the port's primitives (any TensorStore); same result as ``exchange``.
        (The counter is not idempotent: a store reached this way must not re-send an ``incr``.)"""
        store = self.store
        if part is not None:
            store.put(part_key, part)
        if store.incr(count_key) == self.size:
            if drop_previous:
                store.delete_prefix(f"{self.prefix}:{s - 1}:")
            store.push(go_key, _TOKEN, count=self.size)
        return self._primitive_wait(go_key, read_keys, wait)

    def _primitive_wait(self, go_key: str, read_keys: list[str], wait: float) -> tuple[str, list[np.ndarray]] | None:
        popped = self.store.pop_first([self.abort, go_key], wait)  # abort first: it wins
        if popped is None or popped[0] == self.abort:
            return None if popped is None else (self.abort, [])
        return go_key, self.store.get_many(read_keys)

    # ---- the collectives -----------------------------------------------------------------
    def barrier(self) -> None:
        """Return once every worker has called ``barrier``."""
        if self.size == 1:
            return
        t0 = time.perf_counter()
        self._step("barrier", None, [])
        self.sync_seconds += time.perf_counter() - t0

    def all_gather(self, part: np.ndarray, hold: bool = False) -> list[np.ndarray]:
        """Every worker's ``part``, in worker order (the caller's own is returned as given; never
        write into the others: the memory store hands out read-only views).

        ``hold=True``: the caller promises not to write into ``part`` until its next collective
        returns (by then every peer has read it; never, after its last one) — an in-process
        store (:class:`~lambdanet.ports.tensorstore.SharedPut`) then hands the peers the array
        itself instead of a copy."""
        if self.size == 1:
            return [part]
        t0 = time.perf_counter()
        parts = self._step("all_gather", part, [j for j in range(self.size) if j != self.rank], hold=hold)
        parts.insert(self.rank, part)
        self.sync_seconds += time.perf_counter() - t0
        return parts

    def all_reduce(self, part: np.ndarray) -> np.ndarray:
        """The sum of every worker's ``part`` (same shape), added in worker-index order, so every
        worker gets the same bits whatever the timing. K = 1 returns ``part`` itself.

        A small part is gathered whole and summed by every worker (one step). From
        ``REDUCE_SCATTER_MIN`` elements per worker on, it is a reduce-scatter then an all-gather
        (two steps): worker k sums only block k of the parts and the summed blocks are gathered —
        each worker adds 1/K of the numbers instead of all of them, and moves 2(K-1)/K of a
        part instead of K-1 parts. Every element is still added in worker order, so the bits are
        the same either way."""
        if self.size == 1:
            return part
        if part.size >= REDUCE_SCATTER_MIN * self.size:
            return self._reduce_scatter_all_gather(part)
        parts = self.all_gather(part)
        t0 = time.perf_counter()
        total = _ordered_sum(parts)
        self.sync_seconds += time.perf_counter() - t0
        return total

    def reduce_scatter(self, flat: np.ndarray, bounds: list[int], hold: bool = False,
                       decode: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
        """Block ``rank`` of the sum of every worker's ``flat`` (1-D, the same length everywhere),
        added in worker order: ``sum_j flat_j[bounds[rank]:bounds[rank + 1]]``. ``bounds`` are
        the K + 1 block edges (:func:`block_bounds`). Worker k writes block j of its ``flat`` for
        every other worker j and sums the K copies of block k — it adds 1/K of the numbers and
        moves (K-1)/K of a part. K = 1 returns ``flat`` itself. ``hold`` as in :meth:`all_gather`,
        for ``flat``. ``decode``: ``flat`` is a wire form (:func:`compress`); every piece, this
        worker's too, is decoded before the (worker-order) sum."""
        if self.size == 1:
            return flat if decode is None else decode(flat)
        t0 = time.perf_counter()
        k = self.rank
        pieces = [flat[bounds[j]:bounds[j + 1]] for j in range(self.size)]  # views, (n_j,)
        got = self._step("reduce_scatter", None, [j for j in range(self.size) if j != k], pieces, hold)
        got.insert(k, pieces[k])
        if decode is not None:
            got = [decode(g) for g in got]
        mine = _ordered_sum(got)  # (n_k,): block k of the total, in worker order
        self.sync_seconds += time.perf_counter() - t0
        return mine

    def _reduce_scatter_all_gather(self, part: np.ndarray) -> np.ndarray:
        flat = np.ascontiguousarray(part).reshape(-1)  # (n,)
        mine = self.reduce_scatter(flat, block_bounds(flat.size, self.size))
        blocks = self.all_gather(mine)  # both time themselves
        t0 = time.perf_counter()
        total = np.concatenate(blocks).reshape(part.shape)
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


def average(comm: Collective, delta: np.ndarray, kind: str = "none", residual: np.ndarray | None = None,
            block_residual: np.ndarray | None = None) -> np.ndarray:
    """The mean over the workers of ``delta`` (1-D, the same length everywhere), the same bits on
    every worker: a ``reduce_scatter`` (block k summed in worker order by worker k, divided by K)
    and an ``all_gather`` of the blocks. ``kind`` fp16 / bf16: both legs carry :func:`compress`'d
    numbers with error feedback — ``residual`` (the length of ``delta``) for this worker's
    payload, ``block_residual`` (its block's length) for its averaged block; both are updated in
    place and must persist from one call to the next (and across checkpoints) to stay exact."""
    K = comm.size
    if K == 1:
        return delta
    bounds = block_bounds(delta.size, K)
    if kind == "none":
        return np.concatenate(comm.all_gather(comm.reduce_scatter(delta, bounds) / K))
    if residual is None or block_residual is None:
        raise ValueError("average: a compressed average needs both residuals")
    dtype = delta.dtype

    def decode(wire: np.ndarray) -> np.ndarray:
        return decompress(wire, kind, dtype)

    mine = comm.reduce_scatter(with_feedback(delta, residual, kind), bounds, decode=decode)
    return np.concatenate([decode(p) for p in comm.all_gather(with_feedback(mine / K, block_residual, kind))])
