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
