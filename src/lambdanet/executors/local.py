"""The ``local`` executor: every worker call is a thread of this process (the embedded default).

Usage::

    executor = LocalExecutor.from_url("local")
    outcomes = executor.run(run_worker, specs, timeout_s=600)

All calls start at once (they meet at barriers). A call that raises is reported as
``ok=False`` with ``"ExceptionName: message"`` — to ``on_failure`` at once, from the call's own
thread, while the other calls may still run; a call still running at ``timeout_s`` is reported
as ``"timed out after N s"`` (to ``on_failure`` too) and left to finish on its own (a thread
cannot be killed; the engine's abort or its collective deadlines end it). Works with every
store, including ``memory://`` (the threads share the process).

CPU budget (:mod:`lambdanet.cpu_budget`): while the calls run, the process's BLAS pools
and torch's thread count are held at ``cores // K`` (or the specs' ``cpu_threads``) and every call
limits its own thread's OpenMP pool the same way — unless the user set a thread variable.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Self

from lambdanet.cpu_budget import (
    CpuBudget,
    plan_budget,
    process_limits,
    requested_threads,
    round_budget,
    thread_limits,
)
from lambdanet.errors import URLError, describe
from lambdanet.ports.executor import (
    CHECK_PERIOD_S,
    CallOutcome,
    FailureCallback,
    LivenessProbe,
    WorkerFunction,
    ask,
    report_failure,
)


class LocalExecutor:
    """A :class:`lambdanet.ports.Executor` running each call in its own thread."""

    name = "local"

    def __init__(self) -> None:
        self.in_process = True  # workers share this process (memory:// works)

    @classmethod
    def from_url(cls, url: str = "local", **options: Any) -> Self:
        if url.strip().lower() not in ("local", "local://"):
            raise URLError(f"not a local executor: {url!r} (use local)")
        return cls()

    def planned_budget(self, workers: int, cpu_threads: int | None) -> CpuBudget:
        """The budget ``workers`` calls will get (:class:`lambdanet.ports.BudgetedExecutor`)."""
        return plan_budget(self.name, workers, cpu_threads)

    def budget(self, specs: list[dict[str, Any]]) -> CpuBudget:
        """The CPU budget of one ``run`` of ``specs`` (K = len(specs) threads of this process)."""
        return round_budget(self.name, len(specs), requested_threads(specs))

    def run(self, fn: WorkerFunction, specs: list[dict[str, Any]], timeout_s: float,
            on_failure: FailureCallback | None = None, liveness: LivenessProbe | None = None) -> list[CallOutcome]:
        results: list[CallOutcome | None] = [None] * len(specs)
        starts = [0.0] * len(specs)
        lock = threading.Lock()
        budget = self.budget(specs)

        def settle(i: int, outcome: CallOutcome) -> None:
            """Record call ``i``'s outcome unless it already has one (a thread that ends after
            the deadline keeps its "timed out"); a failure goes to ``on_failure`` at once."""
            with lock:
                if results[i] is not None:
                    return
                results[i] = outcome
            report_failure(on_failure, outcome)

        def call(i: int, spec: dict[str, Any]) -> None:
            starts[i] = time.time()
            worker = int(spec.get("worker", i))
            try:
                with thread_limits(budget):
                    out = fn(spec)
                settle(i, CallOutcome(worker=worker, ok=True, result=out, started_at=starts[i],
                                      ended_at=time.time()))
            except KeyboardInterrupt:  # Ctrl-C in the inline K=1 call: the driver marks the run interrupted
                raise
            except BaseException as exc:  # every other failure becomes an outcome
                settle(i, CallOutcome(worker=worker, ok=False, error=describe(exc), started_at=starts[i],
                                      ended_at=time.time()))

        with process_limits(budget):
            if len(specs) == 1:  # no thread for a single call: the fastest K=1 path
                call(0, specs[0])
                return [results[0]]  # type: ignore[list-item]
            threads = [threading.Thread(target=call, args=(i, s), name=f"lambdanet-worker-{i}", daemon=True)
                       for i, s in enumerate(specs)]
            for t in threads:
                t.start()
            deadline = time.monotonic() + timeout_s
            while (left := deadline - time.monotonic()) > 0:
                running = [i for i, t in enumerate(threads) if t.is_alive() and results[i] is None]
                if not running:
                    break
                threads[running[0]].join(min(left, CHECK_PERIOD_S) if liveness is not None else left)
                workers = {int(specs[i].get("worker", i)): i for i in running}
                for worker, reason in ask(liveness, list(workers)).items():  # a thread cannot be
                    i = workers[worker]  # killed: it is left to finish, its outcome is the lapse
                    settle(i, CallOutcome(worker=worker, ok=False, error=reason, started_at=starts[i] or time.time(),
                                          ended_at=time.time()))
        for i, spec in enumerate(specs):
            settle(i, CallOutcome(worker=int(spec.get("worker", i)), ok=False, error=f"timed out after {timeout_s:g} s",
                                  started_at=starts[i] or time.time(), ended_at=time.time()))
        return [res for res in results if res is not None]

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return "LocalExecutor()"
