"""The Executor port: start K worker calls and report each one's result or failure.

Usage::

    executor = adapters.open_executor("process")
    outcomes = executor.run(run_worker, [spec0, spec1], timeout_s=120.0,
                            on_failure=lambda o: abort_attempt(store, prefix, f"worker {o.worker}: {o.error}", 2))
    for o in outcomes:            # one per spec, in spec order
        if not o.ok:
            print(o.worker, o.error)   # "exit code -9", "timed out after 120 s", "ValueError: …"

Liveness: ``run(…, liveness=probe)`` — the executor asks ``probe.lapsed(workers)`` about its
still-running calls every ``CHECK_PERIOD_S`` (0.25 s) and ends each call it names as failed with
the reason given (``"no heartbeat for 3 s"``): the process executor kills the child, Lithops
stops waiting on the future, threads are left to finish on their own. The reason reaches
``on_failure`` as the outcome's error, as a crash would.

``run_worker`` is a module-level function ``(spec: dict) -> dict`` taking and returning plain
JSON-able dicts (so it can cross a process or a cloud function boundary). All K calls run
*concurrently* — they meet at barriers, so an executor that ran them one after another would
deadlock. ``run`` returns when every call finished, failed or passed ``timeout_s``; a call
still running at the deadline is reported as failed (and killed where the executor can).

Fail fast: ``on_failure(outcome)`` is called as soon as a call is *known* to have failed (it
raised, its process died, it passed the deadline) — from any thread, possibly while the other
calls still run, at most once per call, and never for a call that succeeded. The engine uses it
to abort the attempt so the peers stop at once instead of waiting out their collective
deadline. An exception raised by ``on_failure`` is logged, never raised (the outcome is still
returned).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from lambdanet.cpu_budget import CpuBudget

_log = logging.getLogger("lambdanet.executors")

WorkerFunction = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class CallOutcome:
    """What happened to one worker call."""

    worker: int
    ok: bool
    result: dict[str, Any] | None = None
    error: str | None = None  # one line: "exit code -9", "timed out after 30 s", "KeyError: 'x'"
    started_at: float = 0.0  # time.time() when the call started
    ended_at: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return max(0.0, self.ended_at - self.started_at)


FailureCallback = Callable[[CallOutcome], None]


def report_failure(on_failure: FailureCallback | None, outcome: CallOutcome) -> None:
    """Call ``on_failure(outcome)`` for a failed outcome; an error in the callback never breaks
    the executor (the outcome is returned all the same)."""
    if on_failure is None or outcome.ok:
        return
    try:
        on_failure(outcome)
    except Exception as exc:  # a callback failure must not lose the round's outcomes
        _log.warning("on_failure for worker %s failed: %s: %s", outcome.worker, type(exc).__name__, exc)


class LivenessProbe(Protocol):
    """Which running calls have failed although their process may still exist (hung, frozen,
    never started) — :class:`lambdanet.engine.liveness.AttemptLiveness` by heartbeats."""

    def lapsed(self, ranks: Collection[int]) -> dict[int, str]:
        """Of the calls' workers ``ranks``, those that failed, with a one-line reason."""


CHECK_PERIOD_S = 0.25  # how often an executor asks a LivenessProbe about its running calls


def ask(probe: LivenessProbe | None, ranks: Collection[int]) -> dict[int, str]:
    """``probe.lapsed(ranks)``; {} without a probe, and {} when the probe cannot tell (its store
    is unreachable: the calls then fail by their own errors or deadlines)."""
    if probe is None or not ranks:
        return {}
    try:
        return probe.lapsed(ranks)
    except Exception as exc:  # a check that cannot run must not end the round
        _log.warning("liveness check failed: %s: %s", type(exc).__name__, exc)
        return {}


@runtime_checkable
class Executor(Protocol):
    name: str  # "local", "process", "lithops"
    in_process: bool  # True when the calls share the driver's process, so a memory:// store works

    def run(
        self, fn: WorkerFunction, specs: list[dict[str, Any]], timeout_s: float,
        on_failure: FailureCallback | None = None, liveness: LivenessProbe | None = None,
    ) -> list[CallOutcome]:
        """Run ``fn(spec)`` for every spec concurrently; one outcome per spec, in order, once all
        calls ended; ``on_failure(outcome)`` as soon as any call is known to have failed;
        a call ``liveness`` names as lapsed is ended as failed."""

    def close(self) -> None:
        """Release pools / processes."""


@runtime_checkable
class BudgetedExecutor(Executor, Protocol):
    """An executor that knows whether its K calls share this machine's cores — threads, child
    processes, Lithops' localhost processes — and then holds each call to its share of them
    (:mod:`lambdanet.cpu_budget`); calls on machines of their own (Lambda) get ``source="none"``.

    Usage::

        budget = executor.planned_budget(workers=4, cpu_threads=None)   # recorded with the run
        budget.applies                                                    # False: not limited here
    """

    def planned_budget(self, workers: int, cpu_threads: int | None) -> CpuBudget:
        """The budget ``workers`` calls will get (the free cores are measured again each round)."""
