"""The process executor survives a worker that dies before it has read its spec (a kill -9
right after spawn): the call is a failed outcome, the driver's round is retried — never a
BrokenPipeError out of ``run``. And it reports a child killed with SIGKILL at once, through
``on_failure``, while its siblings still run (every child has its own waiting thread)."""

from __future__ import annotations

import queue
import shutil
import signal
import threading
import time
from typing import Any

import psutil
import pytest

from lambdanet.executors.process import ProcessExecutor
from lambdanet.ports import CallOutcome
from lambdanet.testing.probes import echo, sleep


def test_worker_gone_before_reading_its_spec_is_a_failed_call() -> None:
    # /bin/true exits at once without reading stdin; a spec larger than the pipe buffer (64 KiB)
    # makes the write hit the closed pipe.
    ex = ProcessExecutor.from_url("process", python=shutil.which("true"))
    big = {"worker": 0, "padding": "x" * 300_000}
    outcomes = ex.run(echo, [big, {**big, "worker": 1}], timeout_s=30)
    assert [o.worker for o in outcomes] == [0, 1]
    assert [o.ok for o in outcomes] == [False, False]
    assert all(o.error == "exit code 0" for o in outcomes), [o.error for o in outcomes]


def _is_worker(proc: psutil.Process) -> bool:
    """A live worker process of the process executor (not a zombie left by an earlier test)."""
    try:
        return "lambdanet.executors.process" in " ".join(proc.cmdline())
    except (psutil.ZombieProcess, psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _children(n: int, guard_s: float = 30.0) -> list[psutil.Process]:
    """The ``n`` worker processes this test process spawned (waits until they all exist)."""
    end = time.monotonic() + guard_s
    while time.monotonic() < end:
        kids = [c for c in psutil.Process().children() if _is_worker(c)]
        if len(kids) == n:
            return kids
        time.sleep(0.02)
    raise AssertionError(f"{n} worker processes never appeared")


def test_a_child_killed_with_sigkill_is_reported_while_the_others_still_run() -> None:
    ex = ProcessExecutor.from_url("process")
    specs = [{"worker": k, "seconds": 600.0} for k in range(3)]
    failures: queue.Queue[tuple[CallOutcome, list[bool]]] = queue.Queue()
    done: list[list[CallOutcome]] = []
    kids: list[psutil.Process] = []

    def on_failure(o: CallOutcome) -> None:  # notes whether the siblings were still alive then
        failures.put((o, [k.is_running() and k.status() != psutil.STATUS_ZOMBIE for k in kids[1:]]))

    runner = threading.Thread(target=lambda: done.append(ex.run(sleep, specs, 600, on_failure=on_failure)),
                              daemon=True)
    runner.start()
    kids.extend(_children(3))
    time.sleep(0.5)  # let them reach their sleep (a kill any earlier is an "exit code -9" too)
    kids[0].send_signal(signal.SIGKILL)
    first, siblings_alive = failures.get(timeout=30)  # the guard: without on_failure it would take 600 s
    assert first.error == "exit code -9"
    assert siblings_alive == [True, True] and runner.is_alive()  # reported before the others ended
    for k in kids[1:]:
        k.send_signal(signal.SIGTERM)
    runner.join(30)
    assert not runner.is_alive()
    outcomes: dict[int, Any] = {o.worker: o.error for o in done[0]}
    assert sorted(outcomes) == [0, 1, 2]
    assert outcomes[first.worker] == "exit code -9"
    assert sorted(e for w, e in outcomes.items() if w != first.worker) == ["exit code -15", "exit code -15"]
    later = [failures.get(timeout=5)[0].error for _ in range(2)]
    assert later == ["exit code -15", "exit code -15"]  # every failure reported, once each
    assert failures.empty()


@pytest.mark.redis
def test_a_killed_worker_aborts_its_peers_blocked_in_a_collective(redis_server: Any) -> None:
    """Executor + collectives, real processes over a real redis-server: worker processes meet at
    a barrier with a 600 s deadline; one is killed before it gets there. ``on_failure`` aborts the
    attempt, so the others stop at once with the first reason instead of waiting 600 s."""
    import uuid

    from lambdanet import adapters
    from lambdanet.engine.collectives import abort_attempt
    from lambdanet.testing.probes import meet

    prefix = f"ln:ff-{uuid.uuid4().hex[:8]}:1:0"
    store = adapters.open_store(redis_server.url)
    specs = [{"worker": k, "workers": 3, "store_url": redis_server.url, "prefix": prefix, "timeout_s": 600}
             for k in range(3)]

    def on_failure(o: CallOutcome) -> None:
        abort_attempt(store, prefix, f"worker {o.worker}: {o.error}", 3)

    done: list[list[CallOutcome]] = []
    runner = threading.Thread(target=lambda: done.append(
        ProcessExecutor.from_url("process").run(meet, specs, 600, on_failure=on_failure)), daemon=True)
    runner.start()
    _children(3)[0].send_signal(signal.SIGKILL)  # at once: it never reaches the barrier
    runner.join(60)  # the guard: without the abort the others would wait 600 s
    assert not runner.is_alive(), "the peers did not stop after the abort"
    errors = sorted((o.error or "") for o in done[0])
    killed = next(o.worker for o in done[0] if o.error == "exit code -9")
    reason = f"worker {killed}: exit code -9"
    assert errors == sorted(["exit code -9", f"AttemptAborted: {reason}", f"AttemptAborted: {reason}"])
    store.delete_prefix(prefix + ":")
    store.close()
