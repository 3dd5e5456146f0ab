"""The ``process`` executor: one OS process per worker call, so a worker can crash alone.

Usage::

    executor = ProcessExecutor.from_url("process")
    outcomes = executor.run(run_worker, specs, timeout_s=600)
    # a worker killed with SIGKILL -> CallOutcome(ok=False, error="exit code -9")

Each call runs ``python -m lambdanet.executors.process MODULE:FUNCTION RESULT_FILE`` with the
JSON spec on stdin; the child imports the function, runs it and writes ``{"ok": …, "result":
…}`` to the result file. A non-zero exit without a result is ``"exit code N"`` (negative: the
signal); a call still running at ``timeout_s`` is killed and reported as ``"timed out after N
s"``. The function must be a module-level function (no pickle crosses the boundary, only
JSON). The children share nothing with the parent but the environment: ``memory://`` stores
cannot be used (use ``redis://``). Each child gets ``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS``
= cores // calls (unless already set) so K workers do not oversubscribe the CPU.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Self

from lambdanet.errors import URLError
from lambdanet.ports.executor import CallOutcome, WorkerFunction

_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


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

    def _env(self, n_calls: int) -> dict[str, str]:
        env = dict(os.environ)
        threads = str(max(1, (os.cpu_count() or 1) // max(1, n_calls)))
        for var in _THREAD_VARS:
            env.setdefault(var, threads)
        return env

    def run(self, fn: WorkerFunction, specs: list[dict[str, Any]], timeout_s: float) -> list[CallOutcome]:
        target = function_path(fn)
        env = self._env(len(specs))
        with tempfile.TemporaryDirectory(prefix="lambdanet-calls-") as tmp:
            procs: list[tuple[subprocess.Popen[bytes], Path, Path, float]] = []
            for i, spec in enumerate(specs):
                out, err = Path(tmp) / f"{i}.json", Path(tmp) / f"{i}.err"
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
                    with contextlib.suppress(OSError):  # proc.wait() below reports its exit code
                        proc.stdin.close()
                procs.append((proc, out, err, started))
            deadline = time.monotonic() + timeout_s
            outcomes: list[CallOutcome] = []
            for i, (proc, out, err, started) in enumerate(procs):
                worker = int(specs[i].get("worker", i))
                try:
                    code = proc.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    outcomes.append(CallOutcome(worker, False, error=f"timed out after {timeout_s:g} s",
                                                started_at=started, ended_at=time.time()))
                    continue
                ended = time.time()
                payload: dict[str, Any] | None = None
                if out.exists():
                    try:
                        payload = json.loads(out.read_text())
                    except (OSError, ValueError):
                        payload = None
                if payload is not None and payload.get("ok"):
                    outcomes.append(CallOutcome(worker, True, result=payload.get("result"),
                                                started_at=payload.get("started_at", started),
                                                ended_at=payload.get("ended_at", ended)))
                elif payload is not None:
                    outcomes.append(CallOutcome(worker, False, error=str(payload.get("error")),
                                                started_at=started, ended_at=ended))
                else:
                    tail = _last_line(err)
                    msg = f"exit code {code}" + (f" ({tail})" if tail and code > 0 else "")
                    outcomes.append(CallOutcome(worker, False, error=msg, started_at=started, ended_at=ended))
            return outcomes

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
        from lambdanet.executors.local import describe

        payload = {"ok": False, "error": describe(exc)}
        code = 1
    tmp = out_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f)
    os.replace(tmp, out_path)
    return code


if __name__ == "__main__":
    raise SystemExit(_child(sys.argv[1], sys.argv[2]))
