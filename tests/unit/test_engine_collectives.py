"""Collectives over the memory store (threads) and a real redis-server: results identical on
every worker and independent of timing, deadlines, K = 1 fast path, bounded keys."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from lambdanet import adapters
from lambdanet.engine.collectives import (
    REDUCE_SCATTER_MIN,
    Collective,
    abort_attempt,
    abort_key,
    abort_reason,
    block_bounds,
)
from lambdanet.engine.strategies.base import columns, row_block
from lambdanet.errors import AttemptAborted, DeadlineExceeded
from lambdanet.ports.tensorstore import FusedExchange
from tests.conftest import RedisServer


def run_workers(url: str, size: int, body: Callable[[Collective], Any], timeout_s: float = 10.0,
                prefix: str | None = None) -> list[Any]:
    """Run ``body(comm)`` on ``size`` threads, each with its own store client; results by rank."""
    prefix = prefix or f"ln:test-{uuid.uuid4().hex[:8]}:1:0"
    results: list[Any] = [None] * size

    def work(rank: int) -> None:
        store = open_store(url)
        try:
            results[rank] = body(Collective(store, prefix, rank, size, timeout_s))
        except Exception as exc:
            results[rank] = exc
        finally:
            store.close()

    threads = [threading.Thread(target=work, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


class PortOnly:
    """A real store seen only through the TensorStore port (no fused collective operations, no
    shared puts), so the collectives' generic path is exercised."""

    def __init__(self, url: str) -> None:
        self._s = adapters.open_store(url)

    def __getattr__(self, name: str) -> Any:
        if name in ("arrive", "wait_and_get", "exchange", "put_shared"):
            raise AttributeError(name)
        return getattr(self._s, name)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis), "port-only"])
def url(request: pytest.FixtureRequest) -> str:
    if request.param in ("memory", "port-only"):
        return f"{request.param}+memory://coll-{uuid.uuid4().hex[:8]}"
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url


def open_store(url: str) -> Any:
    if url.startswith("port-only+"):
        return PortOnly(url.split("+", 1)[1])
    return adapters.open_store(url.split("+", 1)[-1])


@pytest.mark.parametrize("n", [1000, 4 * REDUCE_SCATTER_MIN + 7])  # one step; reduce-scatter + all-gather
@pytest.mark.parametrize("size", [2, 3, 4])
def test_all_reduce_is_the_worker_order_sum_on_every_worker(url: str, size: int, n: int) -> None:
    rng = np.random.default_rng(size)
    parts = [rng.standard_normal(n).astype(np.float32) * np.float32(10.0) ** int(rng.integers(-3, 3))
             for _ in range(size)]
    expected = parts[0] + parts[1]
    for p in parts[2:]:
        expected += p

    def body(comm: Collective) -> list[np.ndarray]:
        out = []
        for step in range(5):
            time.sleep(random.random() * 0.01)  # different arrival orders every step
            out.append(comm.all_reduce(parts[comm.rank] * (step + 1)))
        return out

    results = run_workers(url, size, body)
    for res in results:
        assert not isinstance(res, Exception), res
        for step, got in enumerate(res):
            scaled = [p * (step + 1) for p in parts]
            exp = scaled[0] + scaled[1]
            for p in scaled[2:]:
                exp += p
            assert got.tobytes() == exp.tobytes()  # bit-identical, whatever the timing
    assert results[0][0].tobytes() == expected.tobytes()


@pytest.mark.parametrize("size", [2, 3])
def test_reduce_scatter_gives_each_worker_its_block_of_the_worker_order_sum(url: str, size: int) -> None:
    """Uneven blocks (11 elements over 2 or 3 workers, and one worker owning none of 2): worker k
    gets elements ``[edges[k], edges[k + 1])`` of ``parts[0] + parts[1] + …``, bit for bit."""
    rng = np.random.default_rng(size)
    parts = [rng.standard_normal(11).astype(np.float32) for _ in range(size)]
    cuts = [block_bounds(11, size), [0, 11, *([11] * (size - 1))]]

    def body(comm: Collective) -> list[np.ndarray]:
        return [comm.reduce_scatter(parts[comm.rank], edges) for edges in cuts]

    results = run_workers(url, size, body)
    total = parts[0] + parts[1]
    for p in parts[2:]:
        total += p
    assert cuts[0] == ([0, 6, 11] if size == 2 else [0, 4, 8, 11])
    for k, res in enumerate(results):
        assert not isinstance(res, Exception), res
        for edges, got in zip(cuts, res, strict=True):
            assert got.tobytes() == total[edges[k]:edges[k + 1]].tobytes()


def test_a_held_part_is_shared_in_process_and_copied_by_every_other_store(url: str) -> None:
    """``hold=True``: on the memory store a peer reads the caller's own array (read-only, no copy);
    through Redis or the port's plain ``put`` it reads a copy. The values are the same."""
    def body(comm: Collective) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        part = np.full(4, float(comm.rank))
        flat = np.arange(6.0) * (comm.rank + 1)
        got = comm.all_gather(part, hold=True)
        mine = comm.reduce_scatter(flat, [0, 2, 4, 6], hold=True)
        comm.barrier()  # peers are done reading before the arrays go out of scope
        return part, got, mine

    results = run_workers(url, 3, body)
    in_process = url.startswith("memory")
    for k, (_, got, mine) in enumerate(results):
        assert not isinstance(got, Exception), got
        assert [float(g[0]) for g in got] == [0.0, 1.0, 2.0]
        np.testing.assert_array_equal(mine, (np.arange(6.0) * 6)[2 * k:2 * k + 2])  # 1 + 2 + 3 times
        for j, (part_j, _, _) in enumerate(results):
            if j != k:
                assert np.shares_memory(got[j], part_j) == in_process
                assert not (in_process and got[j].flags.writeable)  # a shared part is a read-only view


def test_all_gather_broadcast_and_barrier(url: str) -> None:
    def body(comm: Collective) -> tuple[list[np.ndarray], np.ndarray]:
        parts = comm.all_gather(np.full((comm.rank + 1, 2), comm.rank, dtype=np.float64))  # uneven rows
        comm.barrier()
        root = comm.broadcast(np.arange(4.0) if comm.rank == 2 else None, root=2)
        return parts, root

    results = run_workers(url, 3, body)
    for parts, root in results:
        assert [p.shape for p in parts] == [(1, 2), (2, 2), (3, 2)]
        assert [float(p[0, 0]) for p in parts] == [0.0, 1.0, 2.0]
        np.testing.assert_array_equal(root, np.arange(4.0))


def test_a_missing_worker_is_a_deadline_exceeded(url: str) -> None:
    def body(comm: Collective) -> Any:
        if comm.rank == 1:
            return "absent"
        return comm.all_reduce(np.ones(3))

    t0 = time.monotonic()
    results = run_workers(url, 2, body, timeout_s=0.5)
    assert isinstance(results[0], DeadlineExceeded)
    assert "worker 0 of 2 waited 0.5 s at all_gather step 1" in str(results[0])
    assert time.monotonic() - t0 < 20


def test_an_abort_wakes_every_blocked_peer_at_once_with_the_first_reason(url: str) -> None:
    """K = 3: ranks 0 and 1 block in all_gather (deadline 600 s); rank 2 'fails' and aborts the
    attempt. Both peers must raise AttemptAborted carrying the first reason — not wait 600 s."""
    prefix = f"ln:abort-{uuid.uuid4().hex[:8]}:1:0"
    blocked = threading.Barrier(3)
    results: list[Any] = [None] * 3

    def peer(rank: int) -> None:
        store = open_store(url)
        try:
            comm = Collective(store, prefix, rank, 3, timeout_s=600.0)
            blocked.wait(10)
            results[rank] = comm.all_gather(np.full(4, float(rank)))
        except Exception as exc:
            results[rank] = exc
        finally:
            store.close()

    threads = [threading.Thread(target=peer, args=(r,), daemon=True) for r in (0, 1)]
    for t in threads:
        t.start()
    store = open_store(url)
    blocked.wait(10)
    time.sleep(0.2)  # let the peers reach their wait (correct either way: the tokens stay until popped)
    abort_attempt(store, prefix, "worker 2: exit code -9", 3)
    abort_attempt(store, prefix, "worker 0: AttemptAborted: worker 2: exit code -9", 3)  # a later reason
    for t in threads:
        t.join(30)  # the test's own guard: without the abort they would block for 600 s
    assert not any(t.is_alive() for t in threads), "a peer is still blocked after the abort"
    for rank in (0, 1):
        assert isinstance(results[rank], AttemptAborted), results[rank]
        assert str(results[rank]) == "worker 2: exit code -9"  # the first reason wins
    assert abort_reason(store, prefix) == "worker 2: exit code -9"
    store.delete_prefix(prefix + ":")
    assert abort_reason(store, prefix) is None
    store.close()


def test_an_abort_wins_over_a_release_token_and_is_kept_per_attempt(url: str) -> None:
    prefix = f"ln:abort-{uuid.uuid4().hex[:8]}:1:0"
    other = f"ln:abort-{uuid.uuid4().hex[:8]}:1:1"  # another attempt of the same round
    store = open_store(url)
    assert abort_reason(store, prefix) is None
    abort_attempt(store, prefix, "worker 1:   exit\ncode -9", 3)  # stored as one line
    assert abort_key(prefix) == f"{prefix}:abort"

    def body(comm: Collective) -> Any:
        return comm.barrier()  # all 3 arrive: the release tokens are there, yet the abort wins

    results = run_workers(url, 3, body, timeout_s=600.0, prefix=prefix)
    assert all(isinstance(r, AttemptAborted) for r in results), results
    assert {str(r) for r in results} == {"worker 1: exit code -9"}
    assert run_workers(url, 3, lambda c: c.all_reduce(np.ones(2)), prefix=other)[0].tolist() == [3.0, 3.0]
    store.delete_prefix(prefix + ":")
    store.delete_prefix(other + ":")
    store.close()


def test_an_abort_never_drains_so_no_peer_is_starved_of_it(url: str) -> None:
    """K = 3 abort tokens, three workers that each wait twice (as clean-up code might): every wait
    raises — six pops of three tokens — because a worker that pops a token puts it back."""
    prefix = f"ln:abort-{uuid.uuid4().hex[:8]}:1:0"
    store = open_store(url)
    abort_attempt(store, prefix, "driver: gave up", 3)

    def body(comm: Collective) -> list[str]:
        seen = []
        for _ in range(2):
            try:
                comm.barrier()
                seen.append("released")
            except AttemptAborted as exc:
                seen.append(str(exc))
        return seen

    results = run_workers(url, 3, body, timeout_s=600.0, prefix=prefix)
    assert results == [["driver: gave up"] * 2] * 3
    store.delete_prefix(prefix + ":")
    assert store.keys(prefix) == []  # type: ignore[attr-defined]
    store.close()


def test_the_fused_exchange_is_a_declared_capability() -> None:
    assert isinstance(adapters.open_store("memory://fused"), FusedExchange)
    assert not isinstance(PortOnly("memory://fused"), FusedExchange)  # the generic path is used


def test_per_step_keys_are_cleaned_as_the_round_goes(url: str) -> None:
    prefix = f"ln:keys-{uuid.uuid4().hex[:8]}:1:0"
    large = np.ones(3 * REDUCE_SCATTER_MIN)  # reduce-scatter pieces are keys of their step too

    def body(comm: Collective) -> int:
        for i in range(200):
            if i % 3:
                comm.all_gather(np.ones(4) * comm.rank)
            else:
                comm.all_reduce(large)  # two steps
        return comm.seq

    results = run_workers(url, 3, body, prefix=prefix)
    assert results == [267, 267, 267]
    store = open_store(url)
    left = store.keys(prefix)  # type: ignore[attr-defined]
    # only the last two steps may remain (their parts and counters), never 200 steps of keys
    steps = {k.split(":")[4] for k in left}
    assert steps <= {"266", "267"}, sorted(left)[:10]
    store.delete_prefix(prefix + ":")
    assert store.keys(prefix) == []  # type: ignore[attr-defined]


def test_k1_collectives_touch_nothing() -> None:
    store = adapters.open_store(f"memory://k1-{uuid.uuid4().hex[:8]}")
    comm = Collective(store, "ln:x:1:0", 0, 1, 1.0)
    a = np.arange(5.0)
    assert comm.all_reduce(a) is a
    assert comm.all_gather(a)[0] is a
    assert comm.broadcast(a) is a
    comm.barrier()
    assert store.bytes_in == 0 and store.bytes_out == 0
    assert store.keys("") == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("n,size", [(20, 3), (7, 4), (1, 4), (209, 4), (5, 5)])
def test_row_blocks_cover_every_row_once(n: int, size: int) -> None:
    blocks = [row_block(n, size, k) for k in range(size)]
    assert blocks[0][0] == 0 and blocks[-1][1] == n
    assert all(blocks[i][1] == blocks[i + 1][0] for i in range(size - 1))
    sizes = [b - a for a, b in blocks]
    assert max(sizes) - min(sizes) <= 1
    assert sizes == [len(s) for s in np.array_split(np.arange(n), size)]


def test_columns_is_a_view_for_contiguous_indices_and_a_copy_otherwise() -> None:
    A = np.arange(20.0).reshape(2, 10)
    v = columns(A, np.arange(3, 7))
    assert np.shares_memory(v, A)
    np.testing.assert_array_equal(v, A[:, 3:7])
    idx = np.array([5, 1, 2])
    c = columns(A, idx)
    assert not np.shares_memory(c, A)
    np.testing.assert_array_equal(c, A[:, idx])
