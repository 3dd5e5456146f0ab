"""Micro-batching: concurrent requests for one model version share one forward pass.

Usage (inside a request handler)::

    async with batcher.request() as submit:   # announces a request on its way
        images = decode(...)                   # uint8 (n, H, W, C)
        probs = await submit(images)           # float (n, n_classes)

The policy is adaptive, like NVIDIA Triton's dynamic batcher with its default
``max_queue_delay`` of 0: dispatch at once when the model is idle, batch only what queued while
it was busy. A request that finds no pass running and nobody waiting runs its own pass at once,
on the event loop, when that pass is quick (see below) — a quick pass blocks the loop, so no
other request could have joined it anyway; otherwise it queues. One worker per (model, version)
takes the queued requests in arrival order (FIFO) — those that became ready in the same
event-loop turn, then those that arrived while the previous pass ran — as one forward pass of at
most ``max_batch_size`` rows. Nothing waits for a timer, so batching adds no latency to a lone
request, and no request waits behind more than the running pass and the full passes of requests
that arrived before it.

``max_wait_ms`` > 0 (Triton's max queue delay, Ray Serve's ``batch_wait_timeout_s``) lets a pass
that would start from an idle worker wait up to that long for requests already *announced*
(still reading or decoding their upload) — a lone request never waits. It trades latency for
larger batches and is off by default.

Where the forward pass runs: on the event loop for batches of at most ``inline_max_rows`` rows
(:meth:`MicroBatcher.calibrate` measures, at model load, which batch sizes take under
``inline_forward_ms``: a thread hand-off costs more than a small MLP's pass), else in the
batcher's own thread, so the event loop keeps reading and decoding requests while a large
pass runs. With ``enabled=False`` every request runs its own forward pass (same thread rule).

The batcher remembers which requests formed each recent pass (:attr:`MicroBatcher.history`:
request sequence numbers in arrival order), for tests and diagnostics.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType

import numpy as np

from lambdanet.serve.options import DEFAULTS

PredictFn = Callable[[np.ndarray], np.ndarray]
Submit = Callable[[np.ndarray], Awaitable[np.ndarray]]


class _Waiting:
    """One request in the queue: its images and the future its handler awaits."""

    __slots__ = ("future", "images", "seq")

    def __init__(self, seq: int, images: np.ndarray, future: asyncio.Future[np.ndarray]) -> None:
        self.seq = seq
        self.images = images  # uint8 (n, H, W, C)
        self.future = future


class _Announcement:
    """``async with batcher.request() as submit``: counts a request on its way until it submits
    (a plain class, not a generator-based context manager: this is on every request's path)."""

    __slots__ = ("_batcher", "_pending")

    def __init__(self, batcher: MicroBatcher) -> None:
        self._batcher = batcher
        self._pending = False

    async def __aenter__(self) -> Submit:
        self._batcher._announced += 1
        self._pending = True
        return self._submit

    async def _submit(self, images: np.ndarray) -> np.ndarray:
        if self._pending:
            self._pending = False
            self._batcher._announced -= 1
        return await self._batcher.predict(images)

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._pending:  # failed (bad upload) before submitting
            self._pending = False
            self._batcher._announced -= 1


class MicroBatcher:
    """Groups concurrent ``predict`` calls for one predictor into batched forward passes."""

    def __init__(self, predict: PredictFn, max_batch_size: int = DEFAULTS.max_batch_size,
                 max_wait_ms: float = DEFAULTS.max_wait_ms,
                 enabled: bool = True, on_batch: Callable[[int], None] | None = None,
                 inline_max_rows: int = 0, history: int = 256) -> None:
        self._predict = predict
        self.inline_max_rows = inline_max_rows  # batches up to this size run on the event loop
        self.max_batch_size = max(1, int(max_batch_size))
        self.max_wait_s = max(0.0, float(max_wait_ms)) / 1000.0
        self.enabled = enabled and self.max_batch_size > 1
        self._on_batch = on_batch
        self._announced = 0  # requests inside ``request()`` that have not submitted yet
        self._waiting: deque[_Waiting] = deque()
        self._wake: asyncio.Future[None] | None = None  # the idle worker sleeps on it
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._stopping = False
        self._busy = False  # the worker is between taking a batch and handing out its results
        self._seq = 0
        self.batches = 0  # forward passes run (for tests and /metrics)
        self.history: deque[tuple[int, ...]] = deque(maxlen=history)  # seq numbers per recent pass

    # ---- the request side ------------------------------------------------------------------
    def request(self) -> _Announcement:
        """Announce a request; the yielded ``submit`` queues its images and awaits the result."""
        return _Announcement(self)

    @property
    def queued(self) -> int:
        """Requests waiting for a forward pass."""
        return len(self._waiting)

    async def predict(self, images: np.ndarray) -> np.ndarray:
        """uint8 (n, H, W, C) -> float (n, n_classes), batched with concurrent calls."""
        seq = self._seq
        self._seq += 1
        if not self.enabled:
            self._record((seq,), len(images))
            return await self._forward(images)
        if not self._waiting and not self._busy and len(images) <= self.inline_max_rows:
            self._record((seq,), len(images))  # idle and quick: this request's pass, right now
            return self._predict(images)
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None or self._task.done():
            # first call, or a new event loop (Mangum may run each Lambda event on a fresh loop)
            self._loop, self._waiting, self._wake = loop, deque(), None
            self._task = loop.create_task(self._run())
        future: asyncio.Future[np.ndarray] = loop.create_future()
        self._waiting.append(_Waiting(seq, images, future))
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)
        return await future

    # ---- the worker ------------------------------------------------------------------------
    async def _sleep_until_woken(self, loop: asyncio.AbstractEventLoop, deadline: float | None) -> None:
        wake = self._wake = loop.create_future()
        timer = None if deadline is None else loop.call_at(deadline, _resolve, wake)
        try:
            await wake
        finally:
            self._wake = None
            if timer is not None:
                timer.cancel()

    def _queued_rows(self) -> int:
        return sum(len(w.images) for w in self._waiting)

    async def _gather_announced(self, loop: asyncio.AbstractEventLoop) -> None:
        """``max_wait_ms`` > 0 only: hold a pass that starts from an idle worker while requests
        are announced, until the batch is full or the window closes."""
        deadline = loop.time() + self.max_wait_s
        while self._announced > 0 and self._queued_rows() < self.max_batch_size and loop.time() < deadline:
            await self._sleep_until_woken(loop, deadline)

    def _take(self) -> list[_Waiting]:
        """The oldest waiting requests, up to ``max_batch_size`` rows (a larger request goes alone);
        never skips ahead of a request that does not fit (FIFO)."""
        batch: list[_Waiting] = []
        rows = 0
        waiting = self._waiting
        while waiting:
            head = waiting[0]
            if head.future.done():  # its client went away
                waiting.popleft()
                continue
            n = len(head.images)
            if batch and rows + n > self.max_batch_size:
                break
            batch.append(waiting.popleft())
            rows += n
            if rows >= self.max_batch_size:
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        idle = True
        while True:
            if not self._waiting:
                if self._stopping:
                    return  # closed and nothing left; a later predict starts a new worker
                await self._sleep_until_woken(loop, None)
                idle = True
                continue
            if idle and self.max_wait_s > 0:
                await self._gather_announced(loop)
            batch = self._take()
            idle = False
            if not batch:
                continue
            self._busy = True
            try:
                await self._run_batch(batch)
            finally:
                self._busy = False

    async def _run_batch(self, batch: list[_Waiting]) -> None:
        try:  # any failure goes to the callers of this batch; the worker carries on
            images = batch[0].images if len(batch) == 1 else np.concatenate([w.images for w in batch])
            self._record(tuple(w.seq for w in batch), len(images))
            probs = await self._forward(images)  # (N, n_classes)
        except Exception as exc:
            for w in batch:
                if not w.future.done():
                    w.future.set_exception(exc)
            return
        start = 0
        for w in batch:
            n = len(w.images)
            if not w.future.done():
                w.future.set_result(probs[start:start + n])
            start += n

    def _record(self, seqs: tuple[int, ...], rows: int) -> None:
        self.batches += 1
        self.history.append(seqs)
        if self._on_batch is not None:
            self._on_batch(rows)

    async def _forward(self, images: np.ndarray) -> np.ndarray:
        """One forward pass: on the event loop for at most ``inline_max_rows`` rows, else in the
        batcher's thread (one: a model's passes never overlap, and without batching they queue
        there in arrival order)."""
        if len(images) <= self.inline_max_rows:
            return self._predict(images)
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lambdanet-forward")
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._predict, images)

    def calibrate(self, input_shape: tuple[int, ...], inline_forward_ms: float, repeats: int = 7) -> float:
        """Time batches of 1, 2, 4, … ``max_batch_size`` rows (best of ``repeats``, also a
        warm-up; the best of several, because a server often starts on a busy machine);
        batches up to the largest size that takes under ``inline_forward_ms`` run on the event
        loop. Returns the seconds one full batch took (extrapolated from the largest size timed:
        sizes stop at the first one over the limit)."""
        sizes = sorted({min(2 ** k, self.max_batch_size) for k in range(self.max_batch_size.bit_length() + 1)})
        self.inline_max_rows = 0
        best = float("inf")
        for size in sizes:
            x = np.zeros((size, *input_shape), dtype=np.uint8)  # (B, H, W, C)
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                self._predict(x)
                best = min(best, time.perf_counter() - start)
            if best * 1000.0 < inline_forward_ms:
                self.inline_max_rows = size
            elif size > 1:
                # larger batches only take longer: stop timing (a VGG batch of 32 takes seconds)
                return best * self.max_batch_size / size
        return best

    def close(self) -> None:
        """Let the worker finish what is queued, then stop (used when a version is evicted).
        Requests that still reach a closed batcher are served by a short-lived worker."""
        self._stopping = True
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)
        if self._thread is not None:
            self._thread.shutdown(wait=False)
            self._thread = None


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
