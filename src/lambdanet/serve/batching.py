"""Micro-batching: concurrent requests for one model version share one forward pass.

Usage (inside a request handler)::

    async with batcher.request() as submit:   # announces a request on its way
        images = decode(...)                   # uint8 (n, H, W, C)
        probs = await submit(images)           # float (n, n_classes)

The policy is adaptive, like NVIDIA Triton's dynamic batcher with its default
``max_queue_delay`` of 0: dispatch at once when the model is idle, batch only what queued while
it was busy. Nothing waits for a timer, so batching adds no latency to a lone request.

- **Idle and quick**: a request that finds no pass running and nobody queued runs its own pass
  at once, on the event loop, when that pass is quick (see below) — a quick pass blocks the
  loop, so no other request could have joined it anyway. Unless such a pass already ran in
  this event-loop turn: then requests are arriving as a burst (the server read several at
  once), and this one leads, as below, so the rest of the burst shares its pass instead of
  each running its own (for an MLP under load, most of the CPU a batch saves).
- **Idle, not quick: the request leads.** It queues itself, yields exactly one event-loop turn
  (requests made ready in the same turn — a burst the server read at once — queue behind it),
  then takes the queue as one pass and starts it. No worker task sits between a request and
  its pass: a lone request costs one loop turn more than running unbatched, not a task hand-off
  to a worker and back.
- **Busy**: a request that finds a pass running (or a leader gathering) queues. When a pass
  ends, its results go to its members and the next pass starts at once, from that completion,
  over the oldest queued requests.

Every pass takes the queue in arrival order (FIFO), at most ``max_batch_size`` rows, never
skipping a request that does not fit; passes of one model never overlap. So no request waits
behind more than the running pass and the full passes of requests that arrived before it. A
pass's completion does not depend on any request's task: a client that goes away (its task
cancelled, the leader's included) loses only its own answer.

``max_wait_ms`` > 0 (Triton's max queue delay, Ray Serve's ``batch_wait_timeout_s``) lets a
leader wait up to that long for requests already *announced* (still reading or decoding their
upload) — a lone request never waits. It trades latency for larger batches and is off by
default.

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
import contextlib
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
        self._wake: asyncio.Future[None] | None = None  # a leader waiting for announced requests
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._closed = False
        # a leader is gathering, or passes are running: arrivals queue. False only when the
        # queue is empty and no pass runs (a pass's completion starts the next or clears it)
        self._busy = False
        self._pass_this_turn = False  # a lone quick pass ran in this loop turn (see _turn_ended)
        self._seq = 0
        self.passes_led = 0  # passes started by a leading request (the rest: by a pass's completion)
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
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # first call, or a new event loop (Mangum may run each Lambda event on a fresh
            # loop): nothing of the old loop's queue can run any more
            self._loop, self._waiting, self._wake, self._busy = loop, deque(), None, False
            self._pass_this_turn = False
        if not self._busy:
            if len(images) <= self.inline_max_rows and not self._pass_this_turn:
                self._record((seq,), len(images))  # idle and quick: this request's pass, right now
                self._pass_this_turn = True
                loop.call_soon(self._turn_ended)
                return self._predict(images)
            future: asyncio.Future[np.ndarray] = loop.create_future()
            await self._lead(loop, _Waiting(seq, images, future))
        else:
            future = loop.create_future()
            self._waiting.append(_Waiting(seq, images, future))
            wake = self._wake
            if wake is not None and not wake.done():
                wake.set_result(None)
        return await future

    async def _lead(self, loop: asyncio.AbstractEventLoop, me: _Waiting) -> None:
        """Queue ``me`` first, let the requests of this loop turn queue behind, start the pass."""
        self._busy = True
        self._waiting.append(me)
        try:
            await asyncio.sleep(0)  # exactly one turn: same-turn requests join this pass
            if self.max_wait_s > 0:
                await self._gather_announced(loop)
        except BaseException:  # the leader's client went away: the others still get their pass
            me.future.cancel()
            self._start_passes(loop)
            raise
        self.passes_led += 1
        self._start_passes(loop)

    def _turn_ended(self) -> None:
        """Called soon after a lone quick pass: after the requests already ready in that turn."""
        self._pass_this_turn = False

    # ---- passes ------------------------------------------------------------------------------
    async def _sleep_until_woken(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        wake = self._wake = loop.create_future()
        timer = loop.call_at(deadline, _resolve, wake)
        try:
            await wake
        finally:
            self._wake = None
            timer.cancel()

    def _queued_rows(self) -> int:
        return sum(len(w.images) for w in self._waiting)

    async def _gather_announced(self, loop: asyncio.AbstractEventLoop) -> None:
        """``max_wait_ms`` > 0 only: hold a pass that starts from idle while requests are
        announced, until the batch is full or the window closes."""
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

    def _start_passes(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run passes over the queue, oldest first: quick ones here, on the event loop; the first
        that goes to the forward thread continues from its completion (:meth:`_pass_done`).
        Leaves the batcher idle when the queue is empty."""
        while True:
            batch = self._take()
            if not batch:
                self._busy = False
                if self._closed and self._thread is not None:
                    self._thread.shutdown(wait=False)
                    self._thread = None
                return
            try:  # any failure goes to the callers of this batch; the batcher carries on
                images = batch[0].images if len(batch) == 1 else np.concatenate([w.images for w in batch])
                self._record(tuple(w.seq for w in batch), len(images))
                if len(images) > self.inline_max_rows:
                    self._forward_thread().submit(self._forward_in_thread, loop, batch, images)
                    return
                probs = self._predict(images)  # (N, n_classes)
            except Exception as exc:
                _fail(batch, exc)
                continue
            _deliver(batch, probs)

    def _forward_in_thread(self, loop: asyncio.AbstractEventLoop, batch: list[_Waiting],
                           images: np.ndarray) -> None:
        try:
            probs, error = self._predict(images), None  # (N, n_classes)
        except Exception as exc:
            probs, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody is left to answer
            loop.call_soon_threadsafe(self._pass_done, loop, batch, probs, error)

    def _pass_done(self, loop: asyncio.AbstractEventLoop, batch: list[_Waiting], probs: np.ndarray | None,
                   error: Exception | None) -> None:
        """On the event loop, when a pass in the forward thread ended: answer, start the next."""
        if error is not None or probs is None:
            _fail(batch, error or RuntimeError("the forward pass returned nothing"))
        else:
            _deliver(batch, probs)
        if self._loop is loop:
            self._start_passes(loop)

    def _record(self, seqs: tuple[int, ...], rows: int) -> None:
        self.batches += 1
        self.history.append(seqs)
        if self._on_batch is not None:
            self._on_batch(rows)

    def _forward_thread(self) -> ThreadPoolExecutor:
        """The batcher's one forward thread: a model's passes never overlap, and without
        batching they queue there in arrival order."""
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lambdanet-forward")
        return self._thread

    async def _forward(self, images: np.ndarray) -> np.ndarray:
        """Without batching: one forward pass, on the event loop for at most ``inline_max_rows``
        rows, else in the batcher's thread."""
        if len(images) <= self.inline_max_rows:
            return self._predict(images)
        return await asyncio.get_running_loop().run_in_executor(self._forward_thread(), self._predict, images)

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
                return float(best * self.max_batch_size / size)
        return best

    def close(self) -> None:
        """Stop the forward thread once what is queued has run (used when a version is evicted).
        Requests that still reach a closed batcher are served, in a short-lived thread."""
        self._closed = True
        if self._thread is not None and not self._busy:
            self._thread.shutdown(wait=False)
            self._thread = None


def _deliver(batch: list[_Waiting], probs: np.ndarray) -> None:
    """Each member of a pass gets its own rows of ``probs`` (N, n_classes)."""
    start = 0
    for w in batch:
        n = len(w.images)
        if not w.future.done():  # a member whose client went away is skipped
            w.future.set_result(probs[start:start + n])
        start += n


def _fail(batch: list[_Waiting], error: Exception) -> None:
    for w in batch:
        if not w.future.done():
            w.future.set_exception(error)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
