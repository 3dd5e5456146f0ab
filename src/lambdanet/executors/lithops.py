"""The Lithops executor: a round's worker calls as Lithops function calls (AWS Lambda & co.).

Usage::

    executor = LithopsExecutor.from_url("lithops")                       # localhost backend
    executor = LithopsExecutor.from_url("lithops://localhost?version=2&worker_processes=8")
    executor = LithopsExecutor.from_url("lithops", config_file="lithops-aws.yaml")   # AWS Lambda
    outcomes = executor.run(run_worker, specs, timeout_s=300.0)          # one CallOutcome per spec

The Lithops config is always explicit — built here, or read from ``config_file`` /
``?config=FILE`` / the ``lithops_config`` option (``Settings.executor_options()``: ``--lithops-config`` or
``$LAMBDANET_LITHOPS_CONFIG``; YAML or JSON, Lithops' own format, or inline JSON) — and passed
to ``FunctionExecutor(config=…)``, so a stray ``~/.lithops/config`` is never used.

Localhost (the default, no credentials): runtime = this interpreter (``sys.executable``),
storage = localhost, ``worker_processes`` ≥ the calls of a round (they meet at barriers: fewer
processes would deadlock). Localhost v1 (default here; one runner forks the calls) starts a
round in ≈0.4 s on 2 busy cores, v2 (a process per call) in ≈0.6 s; choose with ``?version=``.

AWS Lambda: a config file such as::

    lithops: {backend: aws_lambda, storage: aws_s3}
    aws: {region: eu-west-1}
    aws_lambda: {execution_role: arn:aws:iam::…:role/…, runtime: lambdanet-runtime:latest,
                 runtime_memory: 2048, runtime_timeout: 900,
                 vpc: {subnets: [subnet-…], security_groups: [sg-…]}}
    aws_s3: {storage_bucket: my-lithops-bucket}

(``deploy/`` builds the runtime image, role, subnets and security group.) A call's timeout is
capped below Lambda's 900 s. Each call runs :func:`run_call`, which imports the worker function
by name (never shipping code beyond Lithops' own cloudpickle of this wrapper) and catches its
exceptions, so a failure comes back as ``CallOutcome(ok=False, error="ValueError: …")``; a
call Lithops kills at its timeout, or that never reports, is ``"timed out after N s"``.
Duplicate deliveries (Lambda async retries) are made harmless by the engine's fencing.

Fail fast (``on_failure``): ``run`` polls the calls every ``POLL_S`` with Lithops'
``wait(return_when=ALWAYS)`` (one non-blocking pass over the statuses its job monitor has
received — no SIGALRM, so ``run`` works from any thread) and hands each failed call to
``on_failure`` as soon as its status arrives, while the others still run. What a ``kill -9``
does, measured on Lithops 3.8 localhost (v1 and v2; K = 2, one call killed 2 s in):

* the call's own process (the JobRunner that runs :func:`run_call`, ``os.getpid()`` inside the
  worker): Lithops' handler sees it die without a result and reports ``MemoryError("The
  function process was killed with SIGKILL, …")``; that is read back as ``"exit code -9"``
  (any signal N: ``"exit code -N"``; an exit without a result: ``"exit code N"``).
  ``on_failure`` fires a fraction of a second after the kill;
* the call's whole process tree (its Lithops worker process too, as when a machine or
  container dies): Lithops never reports the call at all. On localhost, ``run_call`` therefore
  first writes its pid to a file of this ``run`` (``payload["alive"]``; the worker's spec is
  unchanged), and a call whose process is gone (or a zombie) with no status for
  ``DEAD_GRACE_S`` (5 s — Lithops itself reports a dead call process in ~0.1 s, so a normal
  end never hits it) is reported as ``"process N died without a report from Lithops …"``,
  about ``DEAD_GRACE_S`` after the kill (both delays measured: docs/benchmarks.md).

Liveness (``run(…, liveness=probe)``): every ``CHECK_PERIOD_S`` the probe is asked about the
calls still pending, and each one it names — a call whose heartbeat lapsed (frozen, hung,
OOM-killed without its future ever resolving) or that never started — is settled as failed with
the probe's reason at once: ``run`` stops waiting on its future (Lithops cannot cancel one call;
the round then shuts the job down, below).

On cloud backends a dead call is whatever Lithops reports (or ``"timed out after N s"``). A
round where some call never reported shuts the Lithops executor down (killing what is left of
its job); the next round starts a fresh one.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Self

import lithops
import psutil  # a dependency of lithops
from lithops.wait import ALWAYS

from lambdanet.adapters import parse_url
from lambdanet.cpu_budget import CpuBudget, plan_budget, process_limits, requested_threads, round_budget, thread_limits
from lambdanet.errors import ConfigError, URLError, WorkerFailed
from lambdanet.ports.executor import (
    CHECK_PERIOD_S,
    CallOutcome,
    FailureCallback,
    LivenessProbe,
    WorkerFunction,
    ask,
    report_failure,
)

LAMBDA_LIMIT_S = 900.0
LAMBDA_MARGIN_S = 15.0  # keep a call's own timeout this far below the function limit
WAIT_GRACE_S = 20.0  # how long past a call's timeout we wait for Lithops to report it
POLL_S = 0.05  # between two looks at the calls' statuses (Lithops' own localhost poll is 0.1 s)
# Lithops reports a call process that died in ~0.1 s; only a call whose whole process tree died
# (no status will ever come) waits this long after its pid vanished before it is reported dead
DEAD_GRACE_S = 5.0
_KILLED = re.compile(r"function process was killed with (?:(SIG[A-Z0-9]+)|signal (\d+))")
_EXITED = re.compile(r"function process exited with code (-?\d+)")


def _exit_code(text: str) -> str | None:
    """``"exit code -9"`` from Lithops' report of a call process that died without a result
    ("The function process was killed with SIGKILL, …" / "… exited with code 3 before …")."""
    if m := _KILLED.search(text):
        name, number = m.group(1), m.group(2)
        try:
            signum = int(number) if number else int(signal.Signals[name])
        except KeyError:
            return None
        return f"exit code -{signum}"
    if m := _EXITED.search(text):
        return f"exit code {m.group(1)}"
    return None


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` still runs on this machine (a zombie counts as dead)."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.Error:
        return True  # cannot tell (AccessDenied): assume alive, the deadline still applies


def _dead_call(path: Path | None, dead_since: dict[int, float], i: int) -> str | None:
    """The failure of call ``i`` if its process (pid in ``path``) has been gone for
    ``DEAD_GRACE_S`` without a status from Lithops, else None."""
    if path is None:
        return None
    try:
        pid = int(json.loads(path.read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # not started yet (or the file is unreadable): nothing to check
    if _pid_alive(pid):
        return None
    first = dead_since.setdefault(i, time.monotonic())
    if time.monotonic() - first < DEAD_GRACE_S:
        return None
    return f"process {pid} died without a report from Lithops (its worker process was killed?)"


def _one_line(text: str, limit: int = 300) -> str:
    return " ".join(str(text).split())[:limit]


def fn_reference(fn: WorkerFunction) -> str | None:
    """``"module:qualname"`` for a lambdanet function (importable in any runtime that has
    lambdanet), else None (the function object then travels inside Lithops' cloudpickle)."""
    module = getattr(fn, "__module__", None) or ""
    qualname = getattr(fn, "__qualname__", "")
    if not module.startswith("lambdanet.") or "<" in qualname:
        return None
    return f"{module}:{qualname}"


def _resolve(ref: str) -> WorkerFunction:
    module_name, _, qualname = ref.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[no-any-return]


def _write_alive(path: str) -> None:
    """Record this call's pid for the localhost liveness check (atomically: never half a file)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump({"pid": os.getpid()}, f)
    os.replace(tmp, path)


def run_call(payload: dict[str, Any]) -> dict[str, Any]:
    """What runs inside each Lithops call: the worker function on its spec, never raising. On
    localhost, ``payload["alive"]`` names a file where the call first records its pid."""
    started = time.time()
    if payload.get("alive"):
        with contextlib.suppress(OSError):  # only a fallback check depends on it
            _write_alive(str(payload["alive"]))
    try:
        fn = payload.get("fn_obj") or _resolve(str(payload["fn"]))
        budget = CpuBudget.model_validate(payload.get("budget") or {})  # localhost: this call's share
        with process_limits(budget), thread_limits(budget):
            result = fn(payload["spec"])
        return {"ok": True, "result": result, "started_at": started, "ended_at": time.time()}
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        return {"ok": False, "error": _one_line(f"{type(exc).__name__}: {exc}"),
                "started_at": started, "ended_at": time.time()}


def ping(spec: dict[str, Any]) -> dict[str, Any]:
    """A no-op worker: ``executor.run(ping, specs, 60)`` checks a Lithops setup end to end and
    measures the per-round start overhead (``benchmarks/lithops_row.py``)."""
    return {"worker": spec.get("worker"), "pid": os.getpid(), "python": sys.version.split()[0]}


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A Lithops config from a YAML or JSON file, or inline JSON text starting with ``{`` (as
    ``deploy/template.yaml`` sets ``LAMBDANET_LITHOPS_CONFIG``); ConfigError with one line otherwise."""
    text_value = str(path).strip()
    if text_value.startswith("{"):
        try:
            inline = json.loads(text_value)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"inline Lithops config is not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(inline, dict):
            raise ConfigError("inline Lithops config must be a JSON object")
        return inline
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the Lithops config ({exc.strerror or exc})") from None
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml  # lithops depends on PyYAML

            data = yaml.safe_load(text)
    except Exception as exc:
        raise ConfigError(f"{p}: not valid YAML/JSON ({_one_line(str(exc), 120)})") from None
    if not isinstance(data, dict) or not isinstance(data.get("lithops", {}), dict):
        raise ConfigError(f"{p}: a Lithops config is a mapping with a 'lithops' section")
    return data


class LithopsExecutor:
    """An :class:`lambdanet.ports.Executor` running each worker call as a Lithops call."""

    name = "lithops"
    in_process = False  # every call is a function (a process on localhost)

    def __init__(self, config: dict[str, Any] | None = None, *, version: int = 1,
                 worker_processes: int | None = None) -> None:
        self.base_config: dict[str, Any] = json.loads(json.dumps(config or {}))
        lithops_section = self.base_config.setdefault("lithops", {})
        self.backend = str(lithops_section.get("backend") or "localhost")
        lithops_section["backend"] = self.backend
        self.localhost = self.backend == "localhost"
        self.version = int(version)
        if self.version not in (1, 2):
            raise URLError(f"lithops localhost version must be 1 or 2, got {version}")
        self.worker_processes = worker_processes
        self._fexec: Any = None
        self._fexec_processes = 0
        self.rounds = 0

    @classmethod
    def from_url(cls, url: str = "lithops", **options: Any) -> Self:
        """``lithops`` | ``lithops://localhost[?version=1|2&worker_processes=N]`` |
        ``lithops://?config=FILE`` (any backend); options: ``config_file``/``lithops_config``,
        ``config`` (a dict), ``version``, ``worker_processes``; others are ignored."""
        parts = parse_url(url, schemes=("lithops",), name="Lithops", bare=True,
                          usage="lithops or lithops://localhost", options=("version", "worker_processes", "config"))
        host, query = parts.netloc.lower(), parts.options
        config: dict[str, Any] | None = options.get("config")
        config_file = options.get("config_file") or options.get("lithops_config") or query.get("config")
        if config is None and config_file:
            config = load_config_file(config_file)
        config = dict(config or {})
        if host and host != "localhost":
            config.setdefault("lithops", {})["backend"] = host
        try:
            version = int(options.get("version") or query.get("version") or 1)
            wp = options.get("worker_processes") or query.get("worker_processes")
            worker_processes = int(wp) if wp else None
        except ValueError as exc:
            raise URLError(f"Lithops URL {url!r}: version and worker_processes are integers") from exc
        return cls(config, version=version, worker_processes=worker_processes)

    # ---- configuration -------------------------------------------------------------------------
    def config_for(self, n_calls: int) -> dict[str, Any]:
        """The explicit Lithops config used for a round of ``n_calls`` concurrent calls."""
        config: dict[str, Any] = json.loads(json.dumps(self.base_config))
        section = config.setdefault("lithops", {})
        section.setdefault("log_level", None)
        if self.localhost:
            section["backend"] = "localhost"
            section["storage"] = "localhost"
            local = config.setdefault("localhost", {})
            local["runtime"] = sys.executable
            local["version"] = self.version
            wanted = max(n_calls, self.worker_processes or 0, os.cpu_count() or 1)
            local["worker_processes"] = max(int(local.get("worker_processes") or 0), wanted)
        return config

    def _executor(self, n_calls: int) -> Any:
        config = self.config_for(n_calls)
        procs = int(config.get("localhost", {}).get("worker_processes", 0))
        if self._fexec is not None and (not self.localhost or procs <= self._fexec_processes):
            return self._fexec
        self._shutdown()
        try:
            self._fexec = lithops.FunctionExecutor(config=config, log_level=None)
        except Exception as exc:
            raise ConfigError(f"cannot start Lithops ({self.backend}): {_one_line(str(exc), 200)}") from exc
        self._fexec_processes = procs
        return self._fexec

    def call_timeout(self, timeout_s: float) -> int:
        """Per-call timeout in whole seconds (below the 900 s function limit on AWS Lambda)."""
        seconds = max(1, math.ceil(timeout_s))
        if self.backend == "aws_lambda":
            seconds = min(seconds, int(LAMBDA_LIMIT_S - LAMBDA_MARGIN_S))
        return seconds

    # ---- the CPU budget ------------------------------------------------------------------------
    # Localhost calls are processes on this machine's cores, as the process executor's children
    # are, and get the same share: without it each call's BLAS / torch pool takes every core and
    # K calls thrash (a K = 2 MLP run took 10.8 s once and 151 s another time beside other work).
    def planned_budget(self, workers: int, cpu_threads: int | None) -> CpuBudget:
        """The budget ``workers`` calls will get: the process executor's on localhost, none on a
        cloud backend (each call has its own vCPUs)."""
        if not self.localhost:
            return CpuBudget(source="none", workers=max(1, workers))
        return plan_budget("process", workers, cpu_threads)

    def budget(self, specs: list[dict[str, Any]]) -> CpuBudget:
        """The CPU budget of one ``run`` of ``specs`` (the free cores measured now, on localhost)."""
        if not self.localhost:
            return CpuBudget(source="none", workers=max(1, len(specs)))
        return round_budget("process", len(specs), requested_threads(specs))

    # ---- the port ------------------------------------------------------------------------------
    def run(self, fn: WorkerFunction, specs: list[dict[str, Any]], timeout_s: float,
            on_failure: FailureCallback | None = None, liveness: LivenessProbe | None = None) -> list[CallOutcome]:
        if not specs:
            return []
        fexec = self._executor(len(specs))
        ref = fn_reference(fn)
        payloads: list[dict[str, Any]] = [{"fn": ref, "spec": spec} if ref else {"fn_obj": fn, "spec": spec}
                                          for spec in specs]
        call_timeout = self.call_timeout(timeout_s)
        with contextlib.ExitStack() as stack:
            alive: list[Path | None] = [None] * len(specs)
            if self.localhost:  # the calls run on this machine: their pids can be watched
                folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lambdanet-lithops-")))
                alive = [folder / f"{i}.json" for i in range(len(specs))]
                budget = self.budget(specs).model_dump(mode="json")
                for p, path in zip(payloads, alive, strict=True):
                    p["alive"], p["budget"] = str(path), budget
            t0 = time.time()
            self.rounds += 1
            try:
                futures = fexec.map(run_call, [{"payload": p} for p in payloads], timeout=call_timeout,
                                    include_modules=None)
            except Exception as exc:
                raise WorkerFailed(f"Lithops ({self.backend}) could not start the calls: "
                                   f"{_one_line(str(exc), 200)}") from exc
            workers = [int(spec.get("worker", i)) for i, spec in enumerate(specs)]
            return self._collect(fexec, list(futures), alive, t0, call_timeout, on_failure, liveness, workers)

    def _collect(self, fexec: Any, futures: list[Any], alive: list[Path | None], t0: float,
                 call_timeout: int, on_failure: FailureCallback | None, liveness: LivenessProbe | None = None,
                 workers: list[int] | None = None) -> list[CallOutcome]:
        """Poll the calls until each has an outcome; report every failure the moment it is seen.

        One ``wait(return_when=ALWAYS)`` per ``POLL_S`` fetches whatever statuses Lithops' job
        monitor has received (no SIGALRM, so this works from any thread; Lithops' own wait polls
        localhost every 0.1 s too). On localhost a call whose process is gone for ``DEAD_GRACE_S``
        without any status from Lithops is reported as dead (see the module docstring)."""
        outcomes: list[CallOutcome | None] = [None] * len(futures)
        dead_since: dict[int, float] = {}
        wait_error: str | None = None
        deadline = time.monotonic() + call_timeout + WAIT_GRACE_S
        ranks = workers or list(range(len(futures)))
        next_check = time.monotonic() + CHECK_PERIOD_S

        def settle(i: int, outcome: CallOutcome) -> None:
            outcomes[i] = outcome
            report_failure(on_failure, outcome)

        while time.monotonic() < deadline:
            pending = [i for i, o in enumerate(outcomes) if o is None]
            if not pending:
                break
            try:
                fexec.wait([futures[i] for i in pending], throw_except=False, download_results=True,
                           return_when=ALWAYS, show_progressbar=False)
            except Exception as exc:
                wait_error = _one_line(f"{type(exc).__name__}: {exc}", 200)
                break
            for i in pending:
                if getattr(futures[i], "done", False):
                    settle(i, self._outcome(i, futures[i], t0, time.time(), call_timeout, None))
                elif (dead := _dead_call(alive[i], dead_since, i)) is not None:
                    settle(i, CallOutcome(i, False, error=dead, started_at=t0, ended_at=time.time(),
                                          extra={"activation_id": getattr(futures[i], "activation_id", None)}))
            if liveness is not None and time.monotonic() >= next_check:
                next_check = time.monotonic() + CHECK_PERIOD_S
                waiting = {ranks[i]: i for i, o in enumerate(outcomes) if o is None}
                for rank, reason in ask(liveness, list(waiting)).items():  # hung or never started:
                    i = waiting[rank]  # stop waiting on its future
                    settle(i, CallOutcome(rank, False, error=reason, started_at=t0, ended_at=time.time(),
                                          extra={"activation_id": getattr(futures[i], "activation_id", None)}))
            time.sleep(POLL_S)
        for i, o in enumerate(outcomes):
            if o is None:  # past the deadline, or Lithops failed: "timed out" (or its error)
                settle(i, self._outcome(i, futures[i], t0, time.time(), call_timeout, wait_error))
        if all(getattr(f, "done", False) for f in futures):
            with contextlib.suppress(Exception):  # all done: returns at once and cleans the job's data
                fexec.wait(futures, throw_except=False, download_results=True, show_progressbar=False)
        else:  # a call never reported (dead, or still running): stop its job; the next round starts afresh
            self._shutdown()
        return [o for o in outcomes if o is not None]

    @staticmethod
    def _outcome(worker: int, future: Any, t0: float, t1: float, call_timeout: int,
                 wait_error: str | None) -> CallOutcome:
        stats = getattr(future, "stats", {}) or {}
        start = float(stats.get("worker_start_tstamp") or t0)
        end = float(stats.get("worker_end_tstamp") or t1)
        extra = {"activation_id": getattr(future, "activation_id", None)}
        if getattr(future, "error", False):
            exc_info = getattr(future, "_exception", None)
            exc = exc_info[1] if isinstance(exc_info, tuple) and len(exc_info) > 1 else exc_info
            if isinstance(exc, TimeoutError) or "exceeded maximum time" in str(exc):
                error = f"timed out after {call_timeout} s"
            else:
                error = _exit_code(str(exc)) or _one_line(f"{type(exc).__name__}: {exc}")
            return CallOutcome(worker, False, error=error, started_at=start, ended_at=end, extra=extra)
        if not getattr(future, "done", False):
            error = wait_error or f"timed out after {call_timeout} s"
            return CallOutcome(worker, False, error=error, started_at=start, ended_at=end, extra=extra)
        try:
            value = future.result(throw_except=False)
        except Exception as exc:
            value = {"ok": False, "error": _one_line(f"{type(exc).__name__}: {exc}")}
        if not isinstance(value, dict):
            return CallOutcome(worker, False, error=f"the call returned no result ({type(value).__name__})",
                               started_at=start, ended_at=end, extra=extra)
        start = float(value.get("started_at") or start)
        end = float(value.get("ended_at") or end)
        if not value.get("ok"):
            return CallOutcome(worker, False, error=str(value.get("error") or "failed"), started_at=start,
                               ended_at=end, extra=extra)
        return CallOutcome(worker, True, result=value.get("result"), started_at=start, ended_at=end, extra=extra)

    def _shutdown(self) -> None:
        fexec, self._fexec = self._fexec, None
        if fexec is None:
            return
        with contextlib.suppress(Exception):  # best effort
            fexec.__exit__(None, None, None)
        with contextlib.suppress(Exception):
            fexec.clean(clean_cloudobjects=False)

    def close(self) -> None:
        self._shutdown()

    def __repr__(self) -> str:
        return f"LithopsExecutor(backend={self.backend!r}, version={self.version})"
