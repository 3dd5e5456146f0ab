"""MicroBatcher: concurrent requests share forward passes; a lone request never waits."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from lambdanet.serve.batching import MicroBatcher


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[int] = []
        self.fail = fail

    def __call__(self, images: np.ndarray) -> np.ndarray:  # uint8 (N, 1, 1, 1) -> (N, 2)
        self.calls.append(len(images))
        if self.fail:
            raise RuntimeError("forward failed")
        v = images.reshape(len(images)).astype(np.float64)
        return np.stack([v, -v], axis=1)


def _img(value: int, n: int = 1) -> np.ndarray:
    return np.full((n, 1, 1, 1), value, dtype=np.uint8)


def test_concurrent_requests_share_one_forward_pass() -> None:
    rec = Recorder()
    batcher = MicroBatcher(rec, max_batch_size=32, max_wait_ms=1)

    async def main() -> list[np.ndarray]:
        return await asyncio.gather(*(batcher.predict(_img(i)) for i in range(8)))

    results = asyncio.run(main())
    assert rec.calls == [8]
    for i, r in enumerate(results):  # each caller gets its own rows back
        np.testing.assert_array_equal(r, [[i, -i]])


def test_max_batch_size_splits_batches() -> None:
    rec = Recorder()
    batcher = MicroBatcher(rec, max_batch_size=4, max_wait_ms=1)

    async def main() -> list[np.ndarray]:
        return await asyncio.gather(*(batcher.predict(_img(i)) for i in range(10)))

    results = asyncio.run(main())
    assert rec.calls == [4, 4, 2] and batcher.batches == 3
    assert [int(r[0, 0]) for r in results] == list(range(10))


def test_announced_requests_are_waited_for_up_to_max_wait() -> None:
    rec = Recorder()
    batcher = MicroBatcher(rec, max_batch_size=32, max_wait_ms=5_000)

    async def late(value: int) -> np.ndarray:
        async with batcher.request() as submit:  # announced at once …
            await asyncio.sleep(0.05)  # … but its image is still "decoding"
            return await submit(_img(value))

    async def main() -> list[np.ndarray]:
        return await asyncio.gather(batcher.predict(_img(1)), late(2), late(3))

    results = asyncio.run(main())
    assert rec.calls == [3]  # the first request waited for the two announced ones
    assert [int(r[0, 0]) for r in results] == [1, 2, 3]


def test_a_lone_request_does_not_wait() -> None:
    rec = Recorder()
    batcher = MicroBatcher(rec, max_batch_size=32, max_wait_ms=600_000)  # ten minutes

    async def main() -> np.ndarray:
        return await asyncio.wait_for(batcher.predict(_img(7, n=3)), timeout=60)

    out = asyncio.run(main())
    assert rec.calls == [3] and out.shape == (3, 2)


def test_abandoned_announcement_does_not_stall_others() -> None:
    rec = Recorder()
    batcher = MicroBatcher(rec, max_batch_size=32, max_wait_ms=600_000)

    async def main() -> np.ndarray:
        with pytest.raises(ValueError):
            async with batcher.request():
                raise ValueError("bad upload")  # announced, then failed before submitting
        return await asyncio.wait_for(batcher.predict(_img(1)), timeout=60)

    asyncio.run(main())
    assert rec.calls == [1]


def test_errors_reach_every_caller_of_the_batch() -> None:
    batcher = MicroBatcher(Recorder(fail=True), max_batch_size=8, max_wait_ms=1)

    async def main() -> list[object]:
        return await asyncio.gather(*(batcher.predict(_img(i)) for i in range(3)), return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) for r in results)


def test_disabled_batching_runs_one_pass_per_request_and_survives_new_loops() -> None:
    rec = Recorder()
    off = MicroBatcher(rec, max_batch_size=32, enabled=False)

    async def main(b: MicroBatcher) -> list[np.ndarray]:
        return await asyncio.gather(*(b.predict(_img(i)) for i in range(4)))

    asyncio.run(main(off))
    assert sorted(rec.calls) == [1, 1, 1, 1]
    on_rec = Recorder()
    on = MicroBatcher(on_rec, max_batch_size=32)
    asyncio.run(main(on))
    asyncio.run(main(on))  # a second event loop (as Mangum may use) gets a fresh worker
    assert on_rec.calls == [4, 4]


def test_calibrate_runs_cheap_batches_on_the_event_loop() -> None:
    import threading

    threads: list[str] = []

    def predict(images: np.ndarray) -> np.ndarray:
        threads.append(threading.current_thread().name)
        return np.zeros((len(images), 2))

    cheap = MicroBatcher(predict, max_batch_size=4)
    assert cheap.calibrate((1, 1, 1), inline_forward_ms=10_000) >= 0 and cheap.inline_max_rows == 4
    slow = MicroBatcher(predict, max_batch_size=4)
    slow.calibrate((1, 1, 1), inline_forward_ms=0)
    assert slow.inline_max_rows == 0
    threads.clear()

    async def main() -> str:
        await cheap.predict(_img(1))
        await slow.predict(_img(1))
        return threading.current_thread().name

    loop_thread = asyncio.run(main())
    assert threads[0] == loop_thread and threads[1] != loop_thread


def test_a_closed_batcher_still_serves_late_requests() -> None:
    rec = Recorder()
    batcher = MicroBatcher(rec, max_batch_size=8, max_wait_ms=1)

    async def main() -> list[np.ndarray]:
        first = await batcher.predict(_img(1))
        batcher.close()  # evicted while a request still holds it …
        late = await asyncio.wait_for(asyncio.gather(batcher.predict(_img(2)), batcher.predict(_img(3))), 60)
        again = await asyncio.wait_for(batcher.predict(_img(4)), 60)  # … and after its worker stopped
        return [first, *late, again]

    results = asyncio.run(main())
    assert [int(r[0, 0]) for r in results] == [1, 2, 3, 4]


# ---- the leader: a request that finds the batcher idle runs its own pass -------------------------
class Gate:
    """Wraps a forward function: holds its first pass until released (from the event loop)."""

    def __init__(self, forward: Recorder) -> None:
        import threading

        self.forward = forward
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        self.started.set()
        assert self.release.wait(timeout=60)
        return self.forward(images)


def test_a_lone_request_leads_its_own_pass_without_a_worker_task() -> None:
    import threading

    rec = Recorder()
    gate = Gate(rec)
    batcher = MicroBatcher(gate, max_batch_size=8, inline_max_rows=0)  # passes in the forward thread

    async def main() -> tuple[np.ndarray, int, str]:
        request = asyncio.ensure_future(batcher.predict(_img(5, n=2)))
        assert await asyncio.to_thread(gate.started.wait, 60)
        tasks_during_pass = len(asyncio.all_tasks())  # this one and the request: no worker
        gate.release.set()
        return await request, tasks_during_pass, threading.current_thread().name

    out, tasks, _ = asyncio.run(main())
    np.testing.assert_array_equal(out, [[5, -5], [5, -5]])
    assert tasks == 2
    assert list(batcher.history) == [(0,)] and batcher.passes_led == 1 and rec.calls == [2]
    assert batcher.queued == 0


def test_requests_of_the_same_turn_join_the_leaders_pass() -> None:
    rec = Recorder()
    batcher = MicroBatcher(rec, max_batch_size=8, inline_max_rows=0)

    async def main() -> list[np.ndarray]:
        return await asyncio.gather(*(batcher.predict(_img(i)) for i in range(5)))

    results = asyncio.run(main())
    assert list(batcher.history) == [(0, 1, 2, 3, 4)] and batcher.passes_led == 1 and rec.calls == [5]
    assert [int(r[0, 0]) for r in results] == [0, 1, 2, 3, 4]


def test_requests_arriving_during_a_leaders_pass_form_the_next_pass_in_order() -> None:
    rec = Recorder()
    gate = Gate(rec)
    batcher = MicroBatcher(gate, max_batch_size=4, inline_max_rows=0)

    async def main() -> list[np.ndarray]:
        first = asyncio.ensure_future(batcher.predict(_img(0)))
        assert await asyncio.to_thread(gate.started.wait, 60)
        later = []
        for i in range(1, 7):  # one per loop turn, while the leader's pass runs
            later.append(asyncio.ensure_future(batcher.predict(_img(i))))
            await asyncio.sleep(0)
        assert batcher.queued == 6
        gate.release.set()
        return [await first, *(await asyncio.gather(*later))]

    results = asyncio.run(main())
    # the leader went alone; the six that queued behind it ran next, oldest first, in full passes
    # started by the previous pass's completion (one pass led by a request in all)
    assert list(batcher.history) == [(0,), (1, 2, 3, 4), (5, 6)] and rec.calls == [1, 4, 2]
    assert batcher.passes_led == 1
    assert [int(r[0, 0]) for r in results] == list(range(7))


def test_a_failing_leader_pass_reaches_every_member_and_the_batcher_carries_on() -> None:
    rec = Recorder(fail=True)
    batcher = MicroBatcher(rec, max_batch_size=8, inline_max_rows=0)

    async def main() -> tuple[list[object], np.ndarray]:
        failed = await asyncio.gather(*(batcher.predict(_img(i)) for i in range(3)), return_exceptions=True)
        rec.fail = False
        return failed, await asyncio.wait_for(batcher.predict(_img(9)), 60)

    failed, served = asyncio.run(main())
    assert len(failed) == 3 and all(isinstance(r, RuntimeError) and str(r) == "forward failed" for r in failed)
    np.testing.assert_array_equal(served, [[9, -9]])
    assert list(batcher.history) == [(0, 1, 2), (3,)] and batcher.passes_led == 2


def test_a_leader_that_goes_away_still_starts_the_pass_of_those_behind_it() -> None:
    rec = Recorder()
    batcher = MicroBatcher(rec, max_batch_size=8, inline_max_rows=0)

    async def main() -> tuple[asyncio.Task[np.ndarray], np.ndarray]:
        leader = asyncio.ensure_future(batcher.predict(_img(1)))
        follower = asyncio.ensure_future(batcher.predict(_img(2)))
        await asyncio.sleep(0)  # the leader has queued and yielded its turn; the follower queued
        assert batcher.queued == 2
        leader.cancel()  # its client went away before the pass started
        return leader, await asyncio.wait_for(follower, 60)

    leader, served = asyncio.run(main())
    assert leader.cancelled()
    np.testing.assert_array_equal(served, [[2, -2]])
    assert list(batcher.history) == [(1,)] and rec.calls == [1]


def test_a_burst_of_quick_requests_shares_one_pass_after_the_first() -> None:
    import threading

    threads: list[str] = []
    rec = Recorder()

    def forward(images: np.ndarray) -> np.ndarray:
        threads.append(threading.current_thread().name)
        return rec(images)

    batcher = MicroBatcher(forward, max_batch_size=8, inline_max_rows=8)  # every pass is quick

    async def main() -> tuple[list[np.ndarray], str]:
        burst = await asyncio.gather(*(batcher.predict(_img(i)) for i in range(5)))  # one loop turn
        await asyncio.sleep(0)
        lone = await batcher.predict(_img(9))  # a later turn: alone, at once
        return [*burst, lone], threading.current_thread().name

    results, loop_thread = asyncio.run(main())
    assert list(batcher.history) == [(0,), (1, 2, 3, 4), (5,)] and rec.calls == [1, 4, 1]
    assert batcher.passes_led == 1 and set(threads) == {loop_thread}  # all on the event loop
    assert [int(r[0, 0]) for r in results] == [0, 1, 2, 3, 4, 9]
