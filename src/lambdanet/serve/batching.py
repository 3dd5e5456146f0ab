"""Micro-batching: concurrent requests for one model version share one forward pass.

Usage (inside a request handler)::

    async with batcher.request() as submit:   # announces a request on its way
        images = decode(...)                   # uint8 (n, H, W, C)
        probs = await submit(images)           # float (n, n_classes)

One asyncio queue and one worker task per (model, version). The worker takes the first waiting
request, then everything already queued, and — only while other requests are announced but not
yet queued (they are still decoding their images) — waits up to ``max_wait_ms`` for them, until
``max_batch_size`` rows. A lone client therefore never waits; under load the batch fills while
the previous forward pass runs. The forward pass runs in a thread so the event loop keeps
accepting requests — except when a full batch is measured (:meth:`MicroBatcher.calibrate`, at
model load) to take under ``inline_forward_ms`` (a small MLP: ~0.2 ms for 32 images): handing
work to a thread and back costs more than that, so such passes run on the event loop. With
``enabled=False`` every request runs its own forward pass (same thread rule).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import numpy as np

PredictFn = Callable[[np.ndarray], np.ndarray]
Submit = Callable[[np.ndarray], Awaitable[np.ndarray]]


@dataclass
class _Item:
    images: np.ndarray  # uint8 (n, H, W, C)
    future: asyncio.Future[np.ndarray] = field(repr=False)


_STOP = object()


class MicroBatcher:
    """Groups concurrent ``predict`` calls for one predictor into batched forward passes."""

    def __init__(self, predict: PredictFn, max_batch_size: int = 32, max_wait_ms: float = 2.0,
                 enabled: bool = True, on_batch: Callable[[int], None] | None = None,
                 inline_max_rows: int = 0) -> None:
        self._predict = predict
        self.inline_max_rows = inline_max_rows  # batches up to this size run on the event loop
        self.max_batch_size = max(1, int(max_batch_size))
        self.max_wait_s = max(0.0, float(max_wait_ms)) / 1000.0
        self.enabled = enabled and self.max_batch_size > 1
        self._on_batch = on_batch
        self._incoming = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[_Item | object] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.batches = 0  # forward passes run (for tests and /metrics)

    @asynccontextmanager
    async def request(self) -> AsyncIterator[Submit]:
        """Announce a request; the yielded ``submit`` queues its images and awaits the result."""
        self._incoming += 1
        announced = True

        async def submit(images: np.ndarray) -> np.ndarray:
            nonlocal announced
            if announced:
                announced = False
                self._incoming -= 1
            return await self.predict(images)

        try:
            yield submit
        finally:
            if announced:
                self._incoming -= 1

    async def predict(self, images: np.ndarray) -> np.ndarray:
        """uint8 (n, H, W, C) -> float (n, n_classes), batched with concurrent calls."""
        if not self.enabled:
            self.batches += 1
            if self._on_batch is not None:
                self._on_batch(len(images))
            return await self._forward(images)
        queue = self._ensure_worker()
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        queue.put_nowait(_Item(images, future))
        return await future

    def _ensure_worker(self) -> asyncio.Queue[_Item | object]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._queue is None or self._task is None or self._task.done():
            # first call, or a new event loop (Mangum may run each Lambda event on a fresh loop)
            self._loop = loop
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._run(self._queue))
        return self._queue

    async def _collect(self, queue: asyncio.Queue[_Item | object], first: _Item) -> list[_Item]:
        batch = [first]
        rows = len(first.images)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while rows < self.max_batch_size:
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if self._incoming <= 0 or remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    break
            if isinstance(item, _Item):
                batch.append(item)
                rows += len(item.images)
        return batch

    async def _run(self, queue: asyncio.Queue[_Item | object]) -> None:
        while True:
            if self._stopping and queue.empty():
                return  # closed and nothing left; a later predict starts a new worker
            first = await queue.get()
            if not isinstance(first, _Item):
                continue  # the wake-up sent by close()
            batch = await self._collect(queue, first)
            live = [item for item in batch if not item.future.done()]  # cancelled clients drop out
            if not live:
                continue
            try:  # any failure goes to the callers of this batch; the worker carries on
                images = live[0].images if len(live) == 1 else np.concatenate([i.images for i in live])
                self.batches += 1
                if self._on_batch is not None:
                    self._on_batch(len(images))
                probs = await self._forward(images)  # (N, n_classes)
            except Exception as exc:
                for item in live:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            start = 0
            for item in live:
                n = len(item.images)
                if not item.future.done():
                    item.future.set_result(probs[start:start + n])
                start += n

    async def _forward(self, images: np.ndarray) -> np.ndarray:
        """One forward pass: in a thread, or on the event loop for batches of at most
        ``inline_max_rows`` (set by :meth:`calibrate` when a full batch is quicker than a thread
        hand-off, which costs milliseconds on a busy machine)."""
        if len(images) <= self.inline_max_rows:
            return self._predict(images)
        return await asyncio.to_thread(self._predict, images)

    def calibrate(self, input_shape: tuple[int, ...], inline_forward_ms: float, repeats: int = 3) -> float:
        """Time a full batch (best of ``repeats``, also a warm-up); run such batches on the event
        loop if that takes under ``inline_forward_ms``. Returns the seconds one full batch took."""
        x = np.zeros((self.max_batch_size, *input_shape), dtype=np.uint8)  # (B, H, W, C)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            self._predict(x)
            best = min(best, time.perf_counter() - start)
        self.inline_max_rows = self.max_batch_size if best * 1000.0 < inline_forward_ms else 0
        return best

    def close(self) -> None:
        """Let the worker finish what is queued, then stop (used when a version is evicted).
        Requests that still reach a closed batcher are served by a short-lived worker."""
        self._stopping = True
        if self._queue is not None and self._task is not None and not self._task.done():
            self._queue.put_nowait(_STOP)
