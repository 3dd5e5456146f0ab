"""The worker function: one call trains one round of one run as worker k of K.

``run_worker(spec) -> dict`` is what every executor runs (a thread, a process, a Lambda): it takes
a :class:`~lambdanet.engine.messages.WorkerSpec` as JSON and returns a
:class:`~lambdanet.engine.messages.WorkerResult` as JSON::

    {"run_id": "r-…", "round": 3, "attempt": 0, "worker": 1, "workers": 4,
     "strategy": "lambdanet.engine.strategies.neuron:NeuronStrategy",
     "config": {…MLPConfig…}, "store_url": "redis://…", "objects_url": "/…/objects",
     "checkpoint": "runs/r-…/checkpoints/round-00002.safetensors",
     "start_epoch": 2000, "end_epoch": 3000, "round_seconds": 300, "collective_timeout_s": 60,
     "checkpoint_seconds": 2.0, "start_deadline_s": 120, "liveness_deadline_s": 3, "heartbeat": true, …}

A field missing from the spec has its run setting's default; a bad or unknown one is refused.

Steps: check the run's fence (``ln:{run}:fence`` must hold this round and attempt, else
:class:`StaleAttempt`); claim ``{prefix}:claim:w{k}`` with SET-NX — a second delivery of the
same spec finds the claim taken and returns ``{"duplicate": true}`` without touching anything;
load the data and the checkpoint (cached per process); run the strategy's round; write the
shard under ``{prefix}:out:w{k}:{name}`` for the driver; return per-epoch costs and figures
(with ``threads``: the BLAS / OpenMP / torch thread counts this call ran with, its CPU budget).

In-round checkpoints: every ``checkpoint_seconds`` (a collective decision, see
:class:`~lambdanet.engine.strategies.base.RoundContext`) the worker writes its shard under
``ln:{run}:{round}:ckpt:…`` (:mod:`lambdanet.engine.round_checkpoints`); a retry of the round
starts from the newest complete one. The result says how many it wrote (``checkpoints``) and the
time that took (``checkpoint_write_seconds``).

Liveness (:mod:`lambdanet.engine.liveness`): right after its claim (and the strategy's import)
the worker marks itself started and renews a heartbeat (time to live ``liveness_deadline_s``; none
without ``heartbeat``: a call in the driver's own process) from a thread until the call ends;
its collectives watch the peers' heartbeats between slices of every wait, and the driver watches
them through the executor.

Fail fast: when the strategy raises (anything but :class:`AttemptAborted`, which is a peer's
failure echoed), the worker aborts the attempt with ``"worker k: ExcName: message"``
(:func:`~lambdanet.engine.collectives.abort_attempt`) before re-raising, so its peers stop at
their next collective instead of waiting out the collective deadline.

Run as ``python -m lambdanet.engine.worker < spec.json`` it prints the result as JSON.
A spec field ``fault`` (a :class:`~lambdanet.engine.messages.Fault`) is honoured only when the
environment has ``LAMBDANET_FAULTS=1`` (fault-injection tests).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from typing import Any

import numpy as np
from pydantic import JsonValue

from lambdanet import adapters
from lambdanet.cpu_budget import observed_threads
from lambdanet.engine import checkpoints, round_checkpoints
from lambdanet.engine.collectives import Collective, abort_attempt
from lambdanet.engine.liveness import AttemptLiveness, Heartbeat
from lambdanet.engine.messages import Fault, WorkerResult, WorkerSpec
from lambdanet.engine.strategies import load_strategy
from lambdanet.engine.strategies.base import RoundContext, State, Strategy
from lambdanet.errors import AttemptAborted, StaleAttempt, describe
from lambdanet.ports.tensorstore import TensorStore
from lambdanet.settings import Settings

_LOCK = threading.Lock()
_CACHES: dict[str, dict[str, object]] = {}


def attempt_prefix(run_id: str, round_no: int, attempt: int) -> str:
    return f"ln:{run_id}:{round_no}:{attempt}"


def attempts_key(run_id: str) -> str:
    return f"ln:{run_id}:attempts"


def fence_key(run_id: str) -> str:
    return f"ln:{run_id}:fence"


def out_key(prefix: str, worker: int, name: str) -> str:
    return f"{prefix}:out:w{worker}:{name}"


def _run_cache(run_id: str) -> dict[str, object]:
    with _LOCK:
        cache = _CACHES.get(run_id)
        if cache is None:
            if len(_CACHES) >= 4:
                _CACHES.pop(next(iter(_CACHES)))
            cache = _CACHES[run_id] = {}
        return cache


def run_worker(raw: dict[str, JsonValue]) -> dict[str, JsonValue]:
    """Train one round as the spec's worker (``raw``: a WorkerSpec as JSON); the WorkerResult as JSON."""
    t_start = time.perf_counter()
    spec = WorkerSpec.from_json(raw)
    if spec.fault is not None and not Settings.from_env().faults:  # honoured in fault-injection tests only
        spec = spec.model_copy(update={"fault": None})
    fault = spec.fault
    if fault is not None and fault.action == "late":  # a cold start: nothing of this call exists yet
        time.sleep(fault.seconds if fault.seconds is not None else 7.0)
    store = adapters.open_store(spec.store_url)  # its own client: exact byte counts per call
    try:
        return _run(spec, store, t_start).to_json()
    finally:
        store.close()


def _run(spec: WorkerSpec, store: TensorStore, t_start: float) -> WorkerResult:
    run_id, rnd, attempt, k = spec.run_id, spec.round, spec.attempt, spec.worker
    prefix = attempt_prefix(run_id, rnd, attempt)

    try:
        fence = store.get(fence_key(run_id))
    except KeyError:
        fence = None
    if fence is None or (int(fence[0]), int(fence[1])) != (rnd, attempt):
        now = "none" if fence is None else f"round {int(fence[0])} attempt {int(fence[1])}"
        raise StaleAttempt(f"worker {k}: round {rnd} attempt {attempt} of run {run_id} is not current "
                           f"(current: {now})")
    if not store.set_if_absent(f"{prefix}:claim:w{k}", str(os.getpid()).encode()):
        return WorkerResult(worker=k, duplicate=True)
    try:
        # imported before the heartbeat starts: loading a large extension (torch) can hold the GIL
        # for seconds, and until the worker has marked itself started only the start deadline applies
        strategy = load_strategy(spec.strategy)
    except Exception as exc:
        _abort(store, prefix, spec.workers, f"worker {k}: {describe(exc)}")
        raise
    if not spec.heartbeat:
        return _train(spec, store, t_start, prefix, strategy, None)
    liveness = AttemptLiveness(store, prefix, spec.workers, spec.start_deadline_s, spec.liveness_deadline_s)
    with Heartbeat(spec.store_url, prefix, k, spec.liveness_deadline_s):
        return _train(spec, store, t_start, prefix, strategy, liveness)


def _train(spec: WorkerSpec, store: TensorStore, t_start: float, prefix: str, strategy: Strategy[Any],
           liveness: AttemptLiveness | None) -> WorkerResult:
    run_id, rnd, attempt, k, K = spec.run_id, spec.round, spec.attempt, spec.worker, spec.workers
    try:
        objects = checkpoints.open_objects(spec.objects_url)
        dataset = checkpoints.read_data(objects, run_id)
        state = checkpoints.read_state(objects, spec.checkpoint)
        fault: Fault | None = spec.fault
        if fault is not None and fault.once and not store.set_if_absent(f"ln:{run_id}:fault:{rnd}:w{k}", b"1"):
            fault = None  # a one-shot fault fires in the first attempt that reaches it, whatever its driver
        comm = Collective(store, prefix, k, K, spec.collective_timeout_s, liveness=liveness)

        def checkpointer(epochs: int, shard: State, info: dict[str, JsonValue]) -> None:
            round_checkpoints.write(store, run_id, rnd, attempt, k, K, epochs, shard, info)

        ctx = RoundContext(config=spec.config, dataset=dataset, state=state, comm=comm,
                           start_epoch=spec.start_epoch, end_epoch=spec.end_epoch, budget_s=spec.round_seconds,
                           cache=_run_cache(run_id), fault=fault, checkpoint_seconds=spec.checkpoint_seconds,
                           checkpointer=checkpointer, cpu_threads=spec.cpu_threads)
        t_train = time.perf_counter()
        report = strategy.run_round(ctx)
        t_done = time.perf_counter()
    except AttemptAborted:
        raise  # a peer failed first: its reason is the attempt's
    except Exception as exc:
        _abort(store, prefix, K, f"worker {k}: {describe(exc)}")
        raise

    for name, arr in report.shard.items():
        store.put(out_key(prefix, k, name), np.asarray(arr))
    return WorkerResult(
        worker=k, epochs=len(report.costs), costs=[float(c) for c in report.costs],
        seconds=[float(s) for s in report.seconds], stop_reason=report.stop_reason, extras=report.extras,
        shard_keys=sorted(report.shard), sync_seconds=comm.sync_seconds, checkpoints=ctx.checkpoints,
        checkpoint_write_seconds=ctx.checkpoint_write_seconds, collectives=comm.calls,
        setup_seconds=t_train - t_start, train_seconds=t_done - t_train, bytes_in=store.bytes_in,
        bytes_out=store.bytes_out, pid=os.getpid(),
        threads=observed_threads(),  # the CPU budget as this worker's thread sees it
    )


def _abort(store: TensorStore, prefix: str, size: int, reason: str) -> None:
    """Abort the attempt for the peers; never hides the worker's own error."""
    with contextlib.suppress(Exception):  # the store itself may be what failed: the executor reports the call
        abort_attempt(store, prefix, reason, size)


def main() -> int:
    spec = json.loads(sys.stdin.read())
    print(json.dumps(run_worker(spec)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
