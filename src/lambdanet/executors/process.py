"""The ``process`` executor: one OS process per worker call, so a worker can crash alone.

Usage::

    executor = ProcessExecutor.from_url("process")
    outcomes = executor.run(run_worker, specs, timeout_s=600)
    # a worker killed with SIGKILL -> CallOutcome(ok=False, error="exit code -9")

Each call runs ``python -m lambdanet.executors.process MODULE:FUNCTION RESULT_FILE`` with the
JSON spec on stdin; the child imports the function, runs it and writes ``{"ok": …, "result":
…}`` to the result file. A non-zero exit without a result is ``"exit code N"`` (negative: the
signal); a call still running at ``timeout_s`` is killed and reported as ``"timed out after N
s"``. Every child has its own waiting thread (``Popen.wait``), so the death of any one of them
— a ``kill -9`` while the others still run — reaches ``on_failure`` within a few tens of
milliseconds (``Popen.wait``'s poll step), not when the children before it end.

Liveness: with ``liveness=probe`` one more thread asks the probe about the running children
every ``CHECK_PERIOD_S`` and kills (SIGKILL: it ends a stopped process too) each one it names;
its outcome's error is the probe's reason (``"no heartbeat for 3 s"``), not the exit code.

The function must be a module-level function (no pickle crosses the boundary, only JSON). The
children share nothing with the parent but the environment: ``memory://`` stores cannot be
used (use ``redis://``).

CPU budget (:mod:`lambdanet.cpu_budget`): each child starts with
``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` = ``cores // K`` (or the specs'
``cpu_threads``), so K workers do not oversubscribe the CPU; a fresh process sizes its BLAS,
OpenMP and torch pools from them when it loads the libraries. When the user set any thread
variable, the children inherit the environment unchanged.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from lambdanet.cpu_budget import CpuBudget, budget_env, plan_budget, requested_threads, round_budget
from lambdanet.errors import URLError
from lambdanet.ports.executor import (
    CHECK_PERIOD_S,
    CallOutcome,
    FailureCallback,
    LivenessProbe,
    WorkerFunction,
    ask,
    report_failure,
)


def function_path(fn: WorkerFunction) -> str:
    """``module:qualname`` of a module-level function (what a child process imports)."""
    module, name = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or "<" in name or module == "__main__":
        raise ValueError(f"{fn!r} is not an importable module-level function")
    return f"{module}:{name}"


def _last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:400] if lines else ""


@dataclass(frozen=True)
class _Call:
    """One running child: its process, result file, stderr file and start time."""

    proc: subprocess.Popen[bytes]
    out: Path
    err: Path
    started: float


class ProcessExecutor:
    """A :class:`lambdanet.ports.Executor` running each call in a fresh Python process."""

    name = "process"

    def __init__(self, python: str | None = None) -> None:
        self.python = python or sys.executable
        self.in_process = False

    @classmethod
    def from_url(cls, url: str = "process", **options: Any) -> Self:
        if url.strip().lower() not in ("process", "process://"):
            raise URLError(f"not a process executor: {url!r} (use process)")
        return cls(python=options.get("python"))

    def planned_budget(self, workers: int, cpu_threads: int | None) -> CpuBudget:
        """The budget ``workers`` calls will get (:class:`lambdanet.ports.BudgetedExecutor`)."""
        return plan_budget(self.name, workers, cpu_threads)

    def budget(self, specs: list[dict[str, Any]]) -> CpuBudget:
        """The CPU budget of one ``run`` of ``specs`` (one child per spec)."""
        return round_budget(self.name, len(specs), requested_threads(specs))

    def run(self, fn: WorkerFunction, specs: list[dict[str, Any]], timeout_s: float,
            on_failure: FailureCallback | None = None, liveness: LivenessProbe | None = None) -> list[CallOutcome]:
        target = function_path(fn)
        env = budget_env(self.budget(specs), os.environ)
        workers = [int(spec.get("worker", i)) for i, spec in enumerate(specs)]
        with tempfile.TemporaryDirectory(prefix="lambdanet-calls-") as tmp:
            calls = [self._start(target, spec, Path(tmp) / str(i), env) for i, spec in enumerate(specs)]
            deadline = time.monotonic() + timeout_s
            outcomes: list[CallOutcome | None] = [None] * len(calls)
            lapsed: dict[int, str] = {}  # call index -> the probe's reason (set before the kill)
            ended = threading.Event()

            def watch(i: int) -> None:
                """Wait for child ``i`` alone, so its death is reported the moment it happens."""
                try:
                    outcome = self._wait(calls[i], workers[i], deadline, timeout_s)
                except Exception as exc:  # never lose a call's outcome to a bug in the reading
                    outcome = CallOutcome(workers[i], False, error=f"cannot read the call's outcome: {exc}",
                                          started_at=calls[i].started, ended_at=time.time())
                if i in lapsed and not outcome.ok:
                    outcome = CallOutcome(workers[i], False, error=lapsed[i], started_at=outcome.started_at,
                                          ended_at=outcome.ended_at)
                outcomes[i] = outcome
                report_failure(on_failure, outcome)

            def check_liveness() -> None:
                """Kill every running child the probe says has lapsed (hung, frozen, never started)."""
                while not ended.wait(CHECK_PERIOD_S):
                    running = {workers[i]: i for i, c in enumerate(calls) if c.proc.poll() is None and i not in lapsed}
                    for worker, reason in ask(liveness, list(running)).items():
                        i = running[worker]
                        lapsed[i] = reason
                        calls[i].proc.kill()

            watchers = [threading.Thread(target=watch, args=(i,), name=f"lambdanet-call-{i}", daemon=True)
                        for i in range(len(calls))]
            if liveness is not None:
                watchers.append(threading.Thread(target=check_liveness, name="lambdanet-liveness", daemon=True))
            try:
                for t in watchers:
                    t.start()
                for t in watchers[:len(calls)]:
                    t.join()  # each watcher ends by the deadline (it kills a late child)
            finally:  # Ctrl-C or an error here: leave no child behind
                ended.set()
                for call in calls:
                    if call.proc.poll() is None:
                        call.proc.kill()
            return [o for o in outcomes if o is not None]

    def _start(self, target: str, spec: dict[str, Any], base: Path, env: dict[str, str]) -> _Call:
        """Spawn one child and hand it its JSON spec on stdin."""
        out, err = base.with_suffix(".json"), base.with_suffix(".err")
        with open(err, "wb") as errf:
            proc = subprocess.Popen(
                [self.python, "-m", "lambdanet.executors.process", target, str(out)],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errf, env=env,
            )
        started = time.time()
        assert proc.stdin is not None
        try:
            proc.stdin.write(json.dumps(spec).encode())
            proc.stdin.close()
        except OSError:  # BrokenPipeError: the worker died before reading its spec (kill -9);
            with contextlib.suppress(OSError):  # _wait reports its exit code
                proc.stdin.close()
        return _Call(proc, out, err, started)

    @staticmethod
    def _wait(call: _Call, worker: int, deadline: float, timeout_s: float) -> CallOutcome:
        """The outcome of one child: its result file, else its exit code; killed at the deadline."""
        try:
            code = call.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            call.proc.kill()
            call.proc.wait()
            return CallOutcome(worker, False, error=f"timed out after {timeout_s:g} s",
                               started_at=call.started, ended_at=time.time())
        ended = time.time()
        payload: dict[str, Any] | None = None
        if call.out.exists():
            try:
                payload = json.loads(call.out.read_text())
            except (OSError, ValueError):
                payload = None
        if payload is not None and payload.get("ok"):
            return CallOutcome(worker, True, result=payload.get("result"),
                               started_at=payload.get("started_at", call.started),
                               ended_at=payload.get("ended_at", ended))
        if payload is not None:
            return CallOutcome(worker, False, error=str(payload.get("error")), started_at=call.started,
                               ended_at=ended)
        tail = _last_line(call.err)
        msg = f"exit code {code}" + (f" ({tail})" if tail and code > 0 else "")
        return CallOutcome(worker, False, error=msg, started_at=call.started, ended_at=ended)

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return "ProcessExecutor()"


def _child(target: str, out_path: str) -> int:
    """Run ``target`` on the JSON spec from stdin; write the outcome to ``out_path``."""
    import importlib

    started = time.time()
    spec = json.loads(sys.stdin.read() or "{}")
    try:
        module_name, _, func_name = target.partition(":")
        fn: Any = importlib.import_module(module_name)
        for part in func_name.split("."):
            fn = getattr(fn, part)
        result = fn(spec)
        payload: dict[str, Any] = {"ok": True, "result": result, "started_at": started, "ended_at": time.time()}
        code = 0
    except Exception as exc:
        from lambdanet.errors import describe

        payload = {"ok": False, "error": describe(exc)}
        code = 1
    tmp = out_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f)
    os.replace(tmp, out_path)
    return code


if __name__ == "__main__":
    raise SystemExit(_child(sys.argv[1], sys.argv[2]))
