"""Liveness by heartbeat: a worker that hangs, is frozen or dies without exiting is found within
seconds, whatever the executor and the store.

Usage (the worker, for the whole call)::

    with Heartbeat(store_url, prefix, rank=k, ttl_s=3.0):
        ...train the round...

Usage (whoever waits for the workers: the driver through its executor, every collective wait)::

    watch = AttemptLiveness(store, prefix, workers=4, start_deadline_s=120, liveness_deadline_s=3)
    watch.lapsed([1, 3])    # {} while they live; {3: "no heartbeat for 3 s"} once worker 3 hung

Exit codes say when a worker *exited*; a real serverless platform also freezes or hangs a
function without it exiting, OOM-kills it without its future ever resolving (Lithops issue
#1285), or starts it many seconds after its peers (a cold start). So liveness is separate from
exit codes. A worker first marks itself started (``{prefix}:up:w{k}``, kept for the attempt),
then renews a heartbeat ``{prefix}:hb:w{k}`` — a key that expires ``ttl_s`` after it was last
set — from a thread every ``HEARTBEAT_PERIOD_S`` (0.5 s; the store itself expires the key, so no
two clocks are compared). Two deadlines, both run settings (``--start-deadline``,
``--liveness-deadline``):

* **start deadline** (default 120 s): a worker that has not marked itself started that long
  after its waiter began waiting has failed: ``"did not start within 120 s"``;
* **liveness deadline** (default 3 s, the heartbeat's time to live): a started worker whose
  heartbeat lapsed has failed: ``"no heartbeat for 3 s"`` — a stopped (``kill -STOP``), frozen or
  vanished process renews nothing, so its key is gone at most ``ttl_s`` after its last renewal.

Calls in the driver's own process (the ``local`` executor's threads) have no heartbeat: a frozen
process freezes its driver too, and a hung thread's heartbeat thread would go on beating; their
collective deadline and the round's timeout still apply.

The driver passes an :class:`AttemptLiveness` to ``Executor.run``: the executor asks it about
its still-running calls every ``CHECK_PERIOD_S`` and ends a lapsed one as failed (the process
executor kills it; Lithops stops waiting on its future), which aborts the attempt with that
reason, and the round is retried from its newest in-round checkpoint. Every collective wait
asks it too, after each ``WAIT_SLICE_S`` of waiting, so the peers of a hung worker stop even
when its driver is gone. A worker whose call ends marks itself done (``{prefix}:done:w{k}``)
before its heartbeat stops: a call whose result is still on its way back (a cloud future polled
every few seconds) is never taken for a hung one. A worker whose heartbeat thread cannot reach the
store keeps trying; its peers then see the lapse (a worker cut off from the store is as good as
hung).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Collection
from types import TracebackType

from lambdanet import adapters
from lambdanet.ports.tensorstore import TensorStore

HEARTBEAT_PERIOD_S = 0.5  # a worker renews its heartbeat this often
CHECK_PERIOD_S = 0.25  # a waiter looks at the heartbeats this often (driver side)
WAIT_SLICE_S = 1.0  # a collective wait looks at its peers' heartbeats after each slice this long


def up_key(prefix: str, rank: int) -> str:
    """Set once when worker ``rank`` of the attempt under ``prefix`` started (no expiry)."""
    return f"{prefix}:up:w{rank}"


def heartbeat_key(prefix: str, rank: int) -> str:
    """Worker ``rank``'s heartbeat: present while it lives (renewed, expiring)."""
    return f"{prefix}:hb:w{rank}"


def done_key(prefix: str, rank: int) -> str:
    """Set when worker ``rank``'s call ended (returned or raised), before its heartbeat stops."""
    return f"{prefix}:done:w{rank}"


class Heartbeat:
    """A thread that marks worker ``rank`` started, then renews its heartbeat every
    ``period_s`` until the context exits. It has its own store client (the worker's byte counts
    stay the worker's); a renewal that fails is tried again at the next period."""

    def __init__(self, store_url: str, prefix: str, rank: int, ttl_s: float,
                 period_s: float = HEARTBEAT_PERIOD_S) -> None:
        self.store_url, self.prefix, self.rank = store_url, prefix, rank
        self.ttl_s = float(ttl_s)
        self.period_s = min(float(period_s), self.ttl_s / 2)  # at least two renewals per time to live
        self.beats = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._store: TensorStore | None = None

    def __enter__(self) -> Heartbeat:
        self._store = adapters.open_store(self.store_url)
        self._beat()  # the first beat before the mark: a started worker is never seen without one
        self._store.set_if_absent(up_key(self.prefix, self.rank), b"1")
        self._thread = threading.Thread(target=self._loop, name=f"lambdanet-heartbeat-{self.rank}", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        assert self._store is not None
        self._store.set_expiring(heartbeat_key(self.prefix, self.rank), b"1", self.ttl_s)
        self.beats += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            with contextlib.suppress(Exception):  # the store may be down: the next period tries again
                self._beat()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._store is not None:
            with contextlib.suppress(Exception):  # the call is ending anyway; the executor reports it
                self._store.set_if_absent(done_key(self.prefix, self.rank), b"1")
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        if self._store is not None:
            self._store.close()


class AttemptLiveness:
    """Which workers of the attempt under ``prefix`` have failed by the two deadlines (see the
    module docstring). The start deadline counts from when this object was made (the driver:
    when it started the calls; a collective: when its wait began)."""

    def __init__(self, store: TensorStore, prefix: str, workers: int, start_deadline_s: float,
                 liveness_deadline_s: float) -> None:
        self.store, self.prefix, self.workers = store, prefix, workers
        self.start_deadline_s = float(start_deadline_s)
        self.liveness_deadline_s = float(liveness_deadline_s)
        self.since = time.monotonic()

    def lapsed(self, ranks: Collection[int]) -> dict[int, str]:
        """Of the workers ``ranks`` (calls still running), those that failed, with the reason
        (``"no heartbeat for 3 s"`` / ``"did not start within 120 s"``); one store round trip."""
        ranks = sorted(ranks)
        if not ranks:
            return {}
        values = self.store.get_bytes_many([k for r in ranks for k in (
            up_key(self.prefix, r), heartbeat_key(self.prefix, r), done_key(self.prefix, r))])
        late = time.monotonic() - self.since > self.start_deadline_s
        out: dict[int, str] = {}
        for i, r in enumerate(ranks):
            started, beating, done = (values[3 * i + j] is not None for j in range(3))
            if done:
                continue
            if started and not beating:
                out[r] = f"no heartbeat for {self.liveness_deadline_s:g} s"
            elif not started and late:
                out[r] = f"did not start within {self.start_deadline_s:g} s"
        return out
