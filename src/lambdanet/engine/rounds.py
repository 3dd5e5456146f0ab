"""One round of a run: K worker calls, retried from the last checkpoint when an attempt fails.

:func:`run_round` is the driver's inner loop. An attempt:

1. takes a fresh attempt id (``INCR ln:{run}:attempts``, unique per run even across a resumed
   driver) and sets the run's fence ``ln:{run}:fence`` = (round, attempt) — workers of any other attempt
   refuse to start (:class:`StaleAttempt`), and every key they write is under their own
   ``ln:{run}:{round}:{attempt}:`` prefix, so a late worker can never touch a retry;
2. starts K worker calls through the executor (JSON specs, see :mod:`lambdanet.engine.worker`);
3. fails if any call failed (raised, crashed, timed out, missed a collective deadline), if a
   worker is missing, or if the workers disagree on how many epochs they did; duplicate
   deliveries (``{"duplicate": true}``) are ignored;
4. reads the K shards from the store and merges them into the full state;
5. always deletes the attempt's keys (``delete_prefix``), whatever happened.

A failed attempt is retried (fresh attempt number, same checkpoint) after a short backoff, up
to ``max_retries`` times; then :class:`RoundFailed` carries the last reason.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lambdanet.engine.accounting import Accounting
from lambdanet.engine.worker import attempt_prefix, attempts_key, fence_key, out_key, run_worker
from lambdanet.errors import EngineError, Unavailable, WorkerFailed
from lambdanet.ports.executor import CallOutcome, Executor
from lambdanet.ports.ledger import CallRow, Ledger
from lambdanet.ports.tensorstore import TensorStore

State = dict[str, np.ndarray]
STARTUP_GRACE_S = 120.0  # process start, imports, data load — on top of the round budget


class RoundFailed(EngineError):
    """Every attempt of a round failed; ``reason`` is the last one."""

    def __init__(self, message: str, reason: str, attempts: int) -> None:
        super().__init__(message)
        self.reason = reason
        self.attempts = attempts


@dataclass
class RoundPlan:
    """What is constant across the rounds of a run."""

    run_id: str
    workers: int
    strategy: Any  # the Strategy instance (driver side)
    strategy_target: str  # "module:Class" for the workers
    config: Any
    config_json: dict[str, Any]
    store_url: str  # with its password: workers need it (never logged)
    objects_url: str
    round_seconds: float
    collective_timeout_s: float
    max_retries: int
    faults: list[dict[str, Any]] = field(default_factory=list)
    retry_backoff_s: float = 0.5
    checkpoint_seconds: float = 30.0  # in-round checkpoints: every this many seconds (see worker)


@dataclass
class RoundResult:
    costs: list[float]
    seconds: list[float]
    stop_reason: str | None
    state: State
    attempts: int
    sync_seconds: float
    extras: list[dict[str, Any]] = field(default_factory=list)  # worker 0's per-epoch extras


def _fault_for(plan: RoundPlan, rnd: int, attempt: int, worker: int) -> dict[str, Any] | None:
    """The test fault for this call; its ``attempt`` is the try of the round (0 = the first)."""
    for f in plan.faults:
        if (f.get("round", rnd) in (rnd, "*") and f.get("attempt", attempt) in (attempt, "*")
                and f.get("worker", 0) == worker):
            return f
    return None


def _specs(plan: RoundPlan, rnd: int, attempt: int, checkpoint: str, start: int, end: int,
           try_no: int) -> list[dict[str, Any]]:
    specs = []
    for k in range(plan.workers):
        spec: dict[str, Any] = {
            "run_id": plan.run_id, "round": rnd, "attempt": attempt, "worker": k, "workers": plan.workers,
            "strategy": plan.strategy_target, "config": plan.config_json, "store_url": plan.store_url,
            "objects_url": plan.objects_url, "checkpoint": checkpoint, "start_epoch": start,
            "end_epoch": end, "round_seconds": plan.round_seconds,
            "collective_timeout_s": plan.collective_timeout_s,
        }
        fault = _fault_for(plan, rnd, try_no, k)
        if fault is not None:
            spec["fault"] = fault
        specs.append(spec)
    return specs


def _check(outcomes: list[CallOutcome], workers: int) -> dict[int, dict[str, Any]]:
    """The result of every worker, or WorkerFailed with the first reason."""
    failed = [o for o in outcomes if not o.ok]
    if failed:
        o = failed[0]
        raise WorkerFailed(f"worker {o.worker} failed: {o.error}")
    results: dict[int, dict[str, Any]] = {}
    for o in outcomes:
        res = o.result or {}
        if not res.get("duplicate"):
            results[int(res.get("worker", o.worker))] = res
    missing = [k for k in range(workers) if k not in results]
    if missing:
        raise WorkerFailed(f"no result from worker(s) {missing} (every delivery was a duplicate)")
    epochs = {res["epochs"] for res in results.values()}
    if len(epochs) != 1:
        raise WorkerFailed(f"workers disagree on the epochs done: {sorted(epochs)}")
    return results


def run_round(plan: RoundPlan, rnd: int, checkpoint: str, start: int, end: int, *, executor: Executor,
              store: TensorStore, ledger: Ledger, acc: Accounting,
              on_retry: Any = None) -> RoundResult:
    """Run round ``rnd`` (epochs ``start … end-1``) from ``checkpoint``; retries included."""
    timeout = plan.round_seconds + 2 * plan.collective_timeout_s + STARTUP_GRACE_S
    reason = ""
    for i in range(plan.max_retries + 1):
        prefix: str | None = None
        attempt = i
        b0 = store.bytes_in + store.bytes_out
        try:
            # attempt ids are unique per run in the store (also across a resumed driver), so the
            # workers of an attempt whose driver died can never share keys with a new attempt
            attempt = store.incr(attempts_key(plan.run_id)) - 1
            prefix = attempt_prefix(plan.run_id, rnd, attempt)
            store.put(fence_key(plan.run_id), np.array([rnd, attempt], dtype=np.int64))
            outcomes = executor.run(run_worker, _specs(plan, rnd, attempt, checkpoint, start, end, i), timeout)
            for o in outcomes:
                acc.add_call(o.seconds)
                if o.ok and o.result:
                    acc.add_bytes(int(o.result.get("bytes_in", 0)) + int(o.result.get("bytes_out", 0)))
            with contextlib.suppress(Unavailable):  # the timeline is nice to have, never fatal
                ledger.record_calls(plan.run_id, [
                    CallRow(plan.run_id, rnd, attempt, o.worker, o.started_at, o.ended_at, o.ok, o.error)
                    for o in outcomes if not (o.ok and (o.result or {}).get("duplicate"))
                ])
            results = _check(outcomes, plan.workers)
            shards: list[State] = []
            for k in range(plan.workers):
                names = list(results[k].get("shard_keys", []))
                arrays = store.get_many([out_key(prefix, k, n) for n in names]) if names else []
                shards.append(dict(zip(names, arrays, strict=True)))
            state = plan.strategy.merge(plan.config, shards)
            first = results[0]
            stops = {res.get("stop_reason") for res in results.values()}
            return RoundResult(
                costs=list(first["costs"]), seconds=list(first["seconds"]),
                stop_reason="threshold" if "threshold" in stops else None, state=state,
                attempts=i + 1,
                sync_seconds=max(float(res.get("sync_seconds", 0.0)) for res in results.values()),
                extras=list(first.get("extras") or []),
            )
        except (EngineError, Unavailable, KeyError) as exc:
            reason = str(exc) if not isinstance(exc, KeyError) else f"missing store key {exc}"
            if i < plan.max_retries:
                acc.retries += 1
                if on_retry is not None:
                    on_retry(rnd, attempt, reason)
                time.sleep(min(plan.retry_backoff_s * 2**i, 10.0))
        finally:
            if prefix is not None:
                with contextlib.suppress(Unavailable):
                    store.delete_prefix(prefix + ":")
            acc.add_bytes(store.bytes_in + store.bytes_out - b0)
    attempts = plan.max_retries + 1
    raise RoundFailed(f"round {rnd} failed {attempts} time(s): {reason}", reason, attempts)
