"""CPU budgets: how many BLAS / OpenMP / torch threads each of K workers on one machine may use.

Usage::

    budget = plan_budget("local", workers=4)        # CpuBudget(threads=cores // 4 or 1, source="budget", …)
    with process_limits(budget):                    # the executor's run: BLAS pools and torch's count
        with thread_limits(budget):                 # each worker thread: its own OpenMP pool
            run_worker(spec)
    env = budget_env(budget, os.environ)            # a worker process: the same share, set at start-up
    observed_threads()                              # inside a worker: {"blas": 1, "openmp": 1, "torch": 1}

Why: numpy's OpenBLAS, torch's OpenMP pool and MKL each size their pool to the whole machine.
K workers on one machine then run K × cores threads on cores cores and thrash (measured in
docs/benchmarks.md, "Figures behind the code's choices"). Each worker gets
``cores // K`` threads instead (at least 1); ``cores`` is the CPUs this process may run on
(``os.sched_getaffinity``, so a container's or ``taskset``'s limit counts).

The policy, in order:

1. **user env** — the user set a thread variable (``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS``,
   ``MKL_NUM_THREADS`` …): nothing is changed; the libraries keep what the user asked for, and
   ``threads`` records the first variable's value;
2. **request** — the run asked for ``cpu_threads`` per worker (a tuner running P trials in one
   process passes ``cores // (P × K)``): that many;
3. **budget** — ``free // workers``, at least 1, where ``free`` is the cores not kept busy by
   other programs: an executor measures it at the start of every round (:func:`free_cores`: the
   CPUs' busy time over 0.1 s from ``/proc/stat``, less this process's own). A busy laptop is why:
   multithreaded BLAS spins at its barriers when one of its threads has no core, so beside one
   other CPU-bound program the main job took about three times as long with every core's thread
   as with the free cores' (docs/benchmarks.md). Where nothing can be measured (no ``/proc``), every core
   counts as free.

Executors whose calls each have their own machine (Lithops on Lambda: its own vCPUs) apply no
budget: ``source="none"``, ``threads=None``. Lithops' localhost calls share this machine and get
the process executor's budget (``LithopsExecutor.planned_budget``; the port is
:class:`lambdanet.ports.BudgetedExecutor`).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from threadpoolctl import ThreadpoolController, threadpool_info

# every variable a BLAS / OpenMP library reads for its pool size; any of them set = the user decides
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS")
# the ones an executor sets for a worker process (torch reads OMP_NUM_THREADS and MKL_NUM_THREADS)
_BUDGET_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
BUDGETED_EXECUTORS = ("local", "process")  # the executors whose K calls share this machine

Source = Literal["budget", "request", "user env", "none"]


class CpuBudget(BaseModel):
    """The threads each worker of a run may use, and where that figure came from."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    threads: int | None = Field(default=None, ge=1)  # per worker; None: not limited here
    source: Source = "none"
    workers: int = Field(default=1, ge=1)
    cores: int | None = None  # the CPUs this process may use when the budget was planned
    user_env: dict[str, str] = Field(default_factory=dict)  # the thread variables the user set
    free_cores: int | None = None  # the cores other programs left free when it was planned (None: not measured)

    @property
    def applies(self) -> bool:
        """True when an executor must limit the pools (not for "user env" or "none")."""
        return self.threads is not None and self.source in ("budget", "request")


def available_cores() -> int:
    """The CPUs this process may run on (its affinity mask), else ``os.cpu_count()``."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS has no sched_getaffinity
        return max(1, os.cpu_count() or 1)


def user_thread_env(env: Mapping[str, str]) -> dict[str, str]:
    """The thread variables set (non-empty) in ``env``."""
    return {var: env[var] for var in THREAD_VARS if env.get(var, "").strip()}


BUSY_SAMPLE_S = 0.1  # how long free_cores watches the CPUs (10 ticks of a 100 Hz clock per CPU)


def _cpu_ticks(cpus: set[int]) -> tuple[int, int] | None:
    """(busy, total) clock ticks since boot of the CPUs ``cpus`` (``/proc/stat``), None elsewhere."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    busy = total = 0
    for line in lines:
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        ticks = [int(v) for v in rest.split()]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
        total += sum(ticks[:8])  # guest time is already inside user time
        busy += sum(ticks[:8]) - idle
    return (busy, total) if total else None


def _cpu_set() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def free_cores(sample_s: float = BUSY_SAMPLE_S) -> int | None:
    """The cores of this process's CPU set that OTHER programs leave free, measured over
    ``sample_s``: the CPUs' busy time (``/proc/stat``) less this process's own CPU time, in whole
    cores (one counts as taken from 0.75 on); at least 1. None where ``/proc/stat`` cannot be read."""
    cpus = _cpu_set()
    before, own_before, t0 = _cpu_ticks(cpus), os.times(), time.monotonic()
    time.sleep(sample_s)
    after, own_after, t1 = _cpu_ticks(cpus), os.times(), time.monotonic()
    if before is None or after is None or after[1] <= before[1]:
        return None
    busy_share = (after[0] - before[0]) / (after[1] - before[1])  # of the CPU set, 0..1
    own = ((own_after.user - own_before.user) + (own_after.system - own_before.system)) / max(1e-9, t1 - t0)
    others = max(0.0, busy_share * len(cpus) - own)  # cores kept busy by other programs
    # a core counts as taken from 3/4 of it on: a quiet machine's background flickers (up to ~0.1
    # core over 0.1 s here) never costs a thread, one CPU-bound program (~1.0) always does
    return max(1, len(cpus) - int(others + 0.25))


def plan_budget(executor: str, workers: int, cpu_threads: int | None = None,
                env: Mapping[str, str] | None = None, free: int | None = None) -> CpuBudget:
    """The budget of ``workers`` calls of the ``executor`` scheme (see the module docstring);
    ``free``: the cores other programs leave free (:func:`free_cores`), None: every core."""
    workers = max(1, workers)
    if executor not in BUDGETED_EXECUTORS:
        return CpuBudget(source="none", workers=workers)
    cores = available_cores()
    user = user_thread_env(os.environ if env is None else env)
    if user:
        first = next(iter(user.values())).strip()
        threads = int(first) if first.isdigit() and int(first) >= 1 else None
        return CpuBudget(threads=threads, source="user env", workers=workers, cores=cores, user_env=user)
    if cpu_threads is not None:
        return CpuBudget(threads=max(1, cpu_threads), source="request", workers=workers, cores=cores)
    usable = cores if free is None else max(1, min(cores, free))
    return CpuBudget(threads=max(1, usable // workers), source="budget", workers=workers, cores=cores,
                     free_cores=free)


def round_budget(executor: str, workers: int, cpu_threads: int | None = None) -> CpuBudget:
    """The budget an executor applies to one round: :func:`plan_budget` with the free cores
    measured now — only when the budget is the executor's share (no thread variable set, no
    ``cpu_threads`` asked for), so a user's or a tuner's choice costs no measurement."""
    planned = plan_budget(executor, workers, cpu_threads)
    if planned.source != "budget":
        return planned
    return plan_budget(executor, workers, cpu_threads, free=free_cores())


SPEC_FIELD = "cpu_threads"  # the engine's per-worker override in every call spec (None: the share)


def requested_threads(specs: list[dict[str, Any]]) -> int | None:
    """The ``cpu_threads`` a round's specs ask for (the same in every spec of a round), else None."""
    value = specs[0].get(SPEC_FIELD) if specs else None
    return int(value) if value is not None else None


def budget_env(budget: CpuBudget, env: Mapping[str, str]) -> dict[str, str]:
    """``env`` for a worker process: with the budget's thread variables when it applies. A fresh
    process sizes its pools when it loads the libraries, so the variables are the whole budget."""
    out = dict(env)
    if budget.applies:
        for var in _BUDGET_VARS:
            out[var] = str(budget.threads)
    return out


class _ProcessLimits:
    """The process-wide pools — OpenBLAS/MKL (one pool per process) and torch's intra-op count —
    held at the smallest budget of the runs active in this process. Counted, so that runs that
    overlap (a tuner's parallel trials) never restore the limits under another run's feet; the
    last one out restores what was there before the first one came in."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: list[int] = []
        self._blas: ThreadpoolController | None = None  # the BLAS libraries seen by the first enter
        self._blas_before: list[dict[str, Any]] = []
        self._torch_before: int | None = None

    def enter(self, threads: int) -> None:
        with self._lock:
            if not self._active:
                self._blas = ThreadpoolController().select(user_api="blas")
                self._blas_before = self._blas.info()
                self._torch_before = _torch_threads()
            self._active.append(threads)
            self._set(min(self._active))

    def leave(self, threads: int) -> None:
        with self._lock:
            self._active.remove(threads)
            if self._active:
                self._set(min(self._active))
                return
            assert self._blas is not None
            for lib, before in zip(self._blas.lib_controllers, self._blas_before, strict=True):
                lib.set_num_threads(before["num_threads"])
            if self._torch_before is not None and "torch" in sys.modules:
                sys.modules["torch"].set_num_threads(self._torch_before)

    def _set(self, threads: int) -> None:
        assert self._blas is not None
        self._blas.limit(limits=threads)
        if "torch" in sys.modules:  # loaded by the driver (a CNN run); never imported just for this
            if self._torch_before is None:  # loaded since the first run came in
                self._torch_before = _torch_threads()
            sys.modules["torch"].set_num_threads(threads)


_PROCESS_LIMITS = _ProcessLimits()


def _torch_threads() -> int | None:
    return int(sys.modules["torch"].get_num_threads()) if "torch" in sys.modules else None


@contextmanager
def process_limits(budget: CpuBudget) -> Iterator[None]:
    """Hold this process's BLAS pools and torch's thread count at the budget (when it applies)."""
    if not budget.applies or budget.threads is None:
        yield
        return
    threads = budget.threads
    _PROCESS_LIMITS.enter(threads)
    try:
        yield
    finally:
        _PROCESS_LIMITS.leave(threads)


@contextmanager
def thread_limits(budget: CpuBudget) -> Iterator[None]:
    """Limit the calling thread's OpenMP pool (an OpenMP thread count is per calling thread, so
    every worker thread sets its own); restored on exit (the K = 1 call runs in the caller's thread)."""
    if not budget.applies or budget.threads is None:
        yield
        return
    openmp = ThreadpoolController().select(user_api="openmp")
    if not openmp.lib_controllers:
        yield
        return
    with openmp.limit(limits=budget.threads):
        yield


def observed_threads() -> dict[str, int | None]:
    """The thread counts the calling thread would use now: BLAS and OpenMP (threadpoolctl; None
    when no such library is loaded) and torch (None when torch is not loaded)."""
    blas: int | None = None
    openmp: int | None = None
    for lib in threadpool_info():
        if lib["user_api"] == "blas":
            blas = int(lib["num_threads"]) if blas is None else min(blas, int(lib["num_threads"]))
        elif lib["user_api"] == "openmp":
            openmp = int(lib["num_threads"]) if openmp is None else min(openmp, int(lib["num_threads"]))
    return {"blas": blas, "openmp": openmp, "torch": _torch_threads()}

