"""One round of a run: K worker calls; a failed attempt is retried from the round's newest
in-round checkpoint.

:func:`run_round` is the driver's inner loop. An attempt:

1. takes a fresh attempt id (``INCR ln:{run}:attempts``, unique per run even across a resumed
   driver) and sets the run's fence ``ln:{run}:fence`` = (round, attempt) — workers of any other attempt
   refuse to start (:class:`StaleAttempt`), and every key they write is under their own
   ``ln:{run}:{round}:{attempt}:`` prefix, so a late worker can never touch a retry;
2. starts K worker calls through the executor (:class:`~lambdanet.engine.messages.WorkerSpec` as
   JSON, see :mod:`lambdanet.engine.worker`)
   with an ``on_failure`` callback: the first call known to have failed (killed, raised, timed
   out, or found hung by its heartbeat — the executor asks an
   :class:`~lambdanet.engine.liveness.AttemptLiveness` about its running calls and ends a
   lapsed one: ``"worker 2: no heartbeat for 3 s"``) aborts the attempt
   (:func:`~lambdanet.engine.collectives.abort_attempt`), so its peers stop at their next
   collective instead of waiting out the collective deadline;
3. fails if any call failed — the reason names the worker that failed FIRST and how
   (``"worker 3: exit code -9"``: the attempt's abort reason, else the first failed call that is
   not an :class:`AttemptAborted` echo) — if a worker is missing, or if the workers disagree on
   how many epochs they did; duplicate deliveries (``{"duplicate": true}``) are ignored;
4. reads the K shards from the store and merges them into the full state (and records the
   thread counts the workers saw — their CPU budget as applied — as the metric ``worker_threads``);
5. always deletes the attempt's keys (``delete_prefix``), whatever happened.

In-round checkpoints: workers write their shards every ``checkpoint_seconds``
(:mod:`lambdanet.engine.round_checkpoints`, keys outside the attempt prefix). A failed attempt is
retried (fresh attempt number) from the newest COMPLETE in-round checkpoint — at once when the
tensor store answers (a worker failed), after a growing backoff when it does not (an outage):
its shards are merged (``strategy.merge``) and written as a checkpoint object (the run's pointer
does not move), and the per-epoch costs/seconds/extras it holds are kept, so the
:class:`RoundResult` covers every epoch of the round once. ``RoundResult.retries`` and
``on_retry(round, attempt, reason, from_epoch)`` say where each retry began. Up to
``max_retries`` retries; then :class:`RoundFailed` carries the last reason. The round's in-round
checkpoints are deleted when it ends.

Live progress (:class:`LiveEpochs`): while a round runs, a thread of the driver reads the round's
newest complete in-round checkpoint every :data:`LIVE_POLL_S` — its pointer and worker 0's small
JSON part, which holds the attempt's per-epoch costs, seconds and extras (every strategy's
per-epoch figures are the same on every worker) — and hands the epochs it has not handed yet, in
order and each once, to ``on_epochs``. So the driver sees a round's epochs at most about
``checkpoint_seconds`` plus a quarter second after the workers did them, at the price of two
small store reads a quarter second and nothing in the workers (they write these checkpoints
anyway). The rows are a prefix of what the round will commit: a retry starts from the newest
complete in-round checkpoint or earlier, and training is deterministic per epoch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lambdanet import adapters
from lambdanet.engine import checkpoints, round_checkpoints
from lambdanet.engine.accounting import Accounting
from lambdanet.engine.collectives import abort_attempt, abort_reason
from lambdanet.engine.liveness import AttemptLiveness
from lambdanet.engine.messages import Extras, Fault, Retry, WorkerResult, WorkerSpec
from lambdanet.engine.requests import TrainRequest, WorkerSettings
from lambdanet.engine.strategies.base import Strategy
from lambdanet.engine.worker import attempt_prefix, attempts_key, fence_key, out_key, run_worker
from lambdanet.errors import AttemptAborted, EngineError, LambdanetError, RoundFailed, Unavailable, WorkerFailed
from lambdanet.ports.executor import CallOutcome, Executor
from lambdanet.ports.ledger import CallRow, Ledger
from lambdanet.ports.tensorstore import TensorStore

State = dict[str, np.ndarray]
LIVE_POLL_S = 0.25  # how often the driver looks for the running round's newest epochs

# one epoch of a running round: (epoch number, 1-based and absolute; cost; seconds; extras)
EpochFigures = tuple[int, float, float, Extras]
OnRetry = Callable[[int, int, str, int], None]  # (round, attempt, reason, from_epoch)

log = logging.getLogger("lambdanet.engine.rounds")


@dataclass
class RoundPlan:
    """What is constant across the rounds of a run."""

    run_id: str
    req: TrainRequest  # the run's settings and config (its store URL with the password: never logged)
    strategy: Strategy[Any]  # the Strategy instance (driver side), of the config's kind
    strategy_target: str  # "module:Class" for the workers
    objects_url: str
    faults: list[Fault] = field(default_factory=list)
    retry_backoff_s: float = 0.5
    # called before every retry; raises (e.g. StaleDriver) when this driver may no longer drive the run
    before_retry: Callable[[], None] | None = None

    @property
    def workers(self) -> int:
        return self.req.workers


@dataclass
class RoundResult:
    costs: list[float]
    seconds: list[float]
    stop_reason: str | None
    state: State
    attempts: int
    sync_seconds: float
    extras: list[Extras] = field(default_factory=list)  # worker 0's per-epoch extras
    retries: list[Retry] = field(default_factory=list)  # one per failed attempt, where its retry began


def _specs(plan: RoundPlan, rnd: int, attempt: int, checkpoint: str, start: int, end: int,
           try_no: int, heartbeat: bool) -> list[WorkerSpec]:
    """The K calls of an attempt (``try_no``: the try of the round, 0 first, as faults count it)."""
    settings = plan.req.fields_of(WorkerSettings)
    return [WorkerSpec.model_validate({
        **settings, "run_id": plan.run_id, "round": rnd, "attempt": attempt, "worker": k,
        "strategy": plan.strategy_target, "config": plan.req.config, "objects_url": plan.objects_url,
        "checkpoint": checkpoint, "start_epoch": start, "end_epoch": end, "heartbeat": heartbeat,
        "fault": next((f for f in plan.faults if f.matches(rnd, try_no, k)), None),
    }) for k in range(plan.workers)]


def _echo(o: CallOutcome) -> bool:
    """A call that stopped because a peer failed first (its error repeats the peer's reason)."""
    return (o.error or "").startswith(AttemptAborted.__name__)


def failure_reason(outcomes: list[CallOutcome], aborted: str | None) -> str | None:
    """The failure of an attempt in one line naming the worker that failed FIRST and how
    (``"worker 3: exit code -9"``): the abort reason when the attempt was aborted, else the first
    failed call that is not an :class:`AttemptAborted` echo; None when every call succeeded."""
    failed = [o for o in outcomes if not o.ok]
    if not failed:
        return None
    if aborted:
        return aborted
    first = next((o for o in failed if not _echo(o)), failed[0])
    return f"worker {first.worker}: {first.error}"


def _result(o: CallOutcome) -> WorkerResult | None:
    """The result of a call that succeeded; None for a failed call or a result that is not one."""
    if not o.ok:
        return None
    try:
        return WorkerResult.from_json({"worker": o.worker, **(o.result or {})})
    except ValueError:  # pydantic's ValidationError
        return None


def _check(outcomes: list[CallOutcome], got: list[WorkerResult | None], workers: int,
           aborted: str | None = None) -> dict[int, WorkerResult]:
    """The result of every worker (``got``: :func:`_result` of each outcome), or WorkerFailed with
    the first reason."""
    reason = failure_reason(outcomes, aborted)
    if reason is not None:
        raise WorkerFailed(reason)
    results: dict[int, WorkerResult] = {}
    for o, res in zip(outcomes, got, strict=True):
        if res is None:
            raise WorkerFailed(f"worker {o.worker}: its result is not a worker result")
        if not res.duplicate:
            results[res.worker] = res
    missing = [k for k in range(workers) if k not in results]
    if missing:
        raise WorkerFailed(f"no result from worker(s) {missing} (every delivery was a duplicate)")
    epochs = {res.epochs for res in results.values()}
    if len(epochs) != 1:
        raise WorkerFailed(f"workers disagree on the epochs done: {sorted(epochs)}")
    return results


def _record_threads(ledger: Ledger, run_id: str, results: dict[int, WorkerResult]) -> None:
    """The thread counts each worker saw (its CPU budget as applied), as the run's metric
    ``worker_threads``: ``[{"worker": 0, "blas": 1, "openmp": 1, "torch": null}, …]``."""
    seen = [{"worker": k, **results[k].threads} for k in sorted(results)]
    with contextlib.suppress(Unavailable):  # a figure for the record, never fatal
        ledger.update_run(run_id, metrics={"worker_threads": seen})


def _aborter(store: TensorStore, prefix: str, workers: int) -> Callable[[CallOutcome], None]:
    """The executor's ``on_failure``: the first failed call aborts the attempt for its peers."""

    def on_failure(o: CallOutcome) -> None:
        if _echo(o):
            return  # a peer's abort echoed: the attempt is aborted already
        with contextlib.suppress(Exception):  # called from an executor thread: never raise there
            abort_attempt(store, prefix, f"worker {o.worker}: {o.error}", workers)

    return on_failure


@dataclass
class _Progress:
    """Where a round stands across its attempts: the checkpoint to start from and the per-epoch
    figures of the epochs before it (from in-round checkpoints)."""

    checkpoint: str
    epoch: int
    costs: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    extras: list[Extras] = field(default_factory=list)


def _advance(plan: RoundPlan, rnd: int, start: int, progress: _Progress, store: TensorStore) -> None:
    """Move ``progress`` to the round's newest complete in-round checkpoint, if it is newer: merge
    its shards, write them as a checkpoint object (the run's pointer does not move) and take over
    the per-epoch figures it holds. Any failure leaves ``progress`` as it was."""
    try:
        ck = round_checkpoints.read_latest(store, plan.run_id, rnd, plan.workers)
        if ck is None or ck.epochs <= progress.epoch or not start <= ck.start_epoch <= progress.epoch:
            return
        keep = ck.start_epoch - start
        if keep > len(progress.costs) or len(ck.costs) != ck.epochs - ck.start_epoch:
            return
        state = plan.strategy.merge(plan.req.config, ck.shards)
        objects = checkpoints.open_objects(plan.objects_url)
        key = checkpoints.write_state(objects, checkpoints.in_round_key(plan.run_id, rnd, ck.epochs), state)
    except (LambdanetError, KeyError, ValueError):
        return
    progress.checkpoint, progress.epoch = key, ck.epochs
    progress.extras = _pad(progress.extras[:keep], keep) + _pad(ck.extras, len(ck.costs))
    progress.costs = progress.costs[:keep] + ck.costs
    progress.seconds = progress.seconds[:keep] + ck.seconds


class LiveEpochs:
    """The epochs of a running round as the workers publish them (see the module docstring):
    a daemon thread reads the round's newest complete in-round checkpoint (its pointer, then worker
    0's JSON part) every ``poll_s`` with a store client of its own, and calls ``on_epochs`` with the
    epochs after the last ones it handed, contiguous and in order — each epoch once per round,
    across the round's attempts. :meth:`keep` adds the figures a retry took over (the epochs before
    the checkpoint it starts from), so a checkpoint the thread did not see leaves no gap.
    :meth:`stop` joins the thread: nothing is handed after it returns. ``on_epochs`` runs in the
    thread; what it raises is logged, never raised."""

    def __init__(self, store_url: str, run_id: str, rnd: int, start: int,
                 on_epochs: Callable[[list[EpochFigures]], None], poll_s: float = LIVE_POLL_S) -> None:
        self.store_url, self.run_id, self.rnd = store_url, run_id, rnd
        self.on_epochs = on_epochs
        self.poll_s = poll_s
        self.handed = start  # the epochs up to here are out (committed before the round, or handed)
        self._seen: tuple[int, int] | None = None  # (attempt, epochs) of the last checkpoint read
        self._known: dict[int, tuple[float, float, Extras]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"live-epochs {run_id} round {rnd}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def keep(self, start: int, costs: list[float], seconds: list[float], extras: list[Extras]) -> None:
        """Figures of epochs ``start + 1 …`` (a retry's kept epochs), handed at the next poll."""
        self._add(start, costs, seconds, extras)

    def _add(self, start: int, costs: list[float], seconds: list[float], extras: list[Extras]) -> None:
        with self._lock:
            for i, cost in enumerate(costs):
                epoch = start + i + 1
                if epoch > self.handed:
                    self._known[epoch] = (float(cost), float(seconds[i]) if i < len(seconds) else 0.0,
                                          dict(extras[i]) if i < len(extras) and isinstance(extras[i], dict) else {})

    def _run(self) -> None:
        store: TensorStore | None = None
        try:
            while not self._stop.wait(self.poll_s):
                try:
                    if store is None:
                        store = adapters.open_store(self.store_url)
                    self._read(store)
                    self._hand()
                except Exception as exc:  # live figures are nice to have: the commit writes them all
                    log.debug("live epochs of run %s round %d: %s", self.run_id, self.rnd, exc)
        finally:
            if store is not None:
                with contextlib.suppress(Exception):
                    store.close()

    def _read(self, store: TensorStore) -> None:
        """The newest complete in-round checkpoint's figures, when it is one not read yet."""
        try:
            attempt, epochs = (int(v) for v in store.get(round_checkpoints.latest_key(self.run_id, self.rnd)))
        except KeyError:
            return
        if (attempt, epochs) == self._seen or epochs <= self.handed:
            return
        raw = store.get_bytes(f"{round_checkpoints.prefix(self.run_id, self.rnd, attempt, epochs)}:w0:meta")
        if raw is None:  # replaced by a newer one meanwhile: read that at the next poll
            return
        info = json.loads(raw)
        self._seen = (attempt, epochs)
        self._add(int(info["start_epoch"]), list(info.get("costs") or []), list(info.get("seconds") or []),
                  list(info.get("extras") or []))

    def _hand(self) -> None:
        with self._lock:
            out: list[EpochFigures] = []
            epoch = self.handed + 1
            while epoch in self._known:
                out.append((epoch, *self._known.pop(epoch)))
                epoch += 1
            if out:
                self.handed = out[-1][0]
        if out:
            try:
                self.on_epochs(out)
            except Exception:
                log.exception("live epochs of run %s round %d: the receiver failed", self.run_id, self.rnd)


def _store_answers(store: TensorStore) -> bool:
    """One round trip: whether the tensor store answers (then a retry can start at once)."""
    try:
        store.get_bytes("ln:probe")
    except Unavailable:
        return False
    return True


def _pad(extras: list[Extras], n: int) -> list[Extras]:
    return extras[:n] + [{}] * (n - len(extras))


def run_round(plan: RoundPlan, rnd: int, checkpoint: str, start: int, end: int, *, executor: Executor,
              store: TensorStore, ledger: Ledger, acc: Accounting,
              on_retry: OnRetry | None = None,
              on_epochs: Callable[[list[EpochFigures]], None] | None = None) -> RoundResult:
    """Run round ``rnd`` (epochs ``start … end-1``) from ``checkpoint``; retries included (each
    from the newest in-round checkpoint). ``on_retry(round, attempt, reason, from_epoch)``;
    ``on_epochs(figures)``: the round's epochs while it runs, from a thread (:class:`LiveEpochs`),
    never after this returns."""
    live = LiveEpochs(plan.req.store_url, plan.run_id, rnd, start, on_epochs) if on_epochs is not None else None
    if live is not None:
        live.start()
    try:
        return _run_round(plan, rnd, checkpoint, start, end, executor=executor, store=store, ledger=ledger,
                          acc=acc, on_retry=on_retry, live=live)
    finally:
        if live is not None:
            live.stop()
        with contextlib.suppress(Unavailable):
            round_checkpoints.delete_round(store, plan.run_id, rnd)


def _run_round(plan: RoundPlan, rnd: int, checkpoint: str, start: int, end: int, *, executor: Executor,
               store: TensorStore, ledger: Ledger, acc: Accounting, on_retry: OnRetry | None,
               live: LiveEpochs | None = None) -> RoundResult:
    req = plan.req
    reason = ""
    progress = _Progress(checkpoint, start)
    retries: list[Retry] = []
    # a driver that stopped mid-round (a killed invocation, a crashed process) may have left an
    # in-round checkpoint of this very round: go on from there rather than from its first epoch
    _advance(plan, rnd, start, progress, store)
    if live is not None:
        live.keep(start, progress.costs, progress.seconds, progress.extras)
    if progress.epoch > start and on_retry is not None:
        on_retry(rnd, -1, "continued from an in-round checkpoint left by an earlier driver", progress.epoch)
    for i in range(req.max_retries + 1):
        if i > 0 and plan.before_retry is not None:
            plan.before_retry()  # outside the try: a replaced driver stops, it does not retry
        prefix: str | None = None
        attempt = i
        b0 = store.bytes_in + store.bytes_out
        try:
            # attempt ids are unique per run in the store (also across a resumed driver), so the
            # workers of an attempt whose driver died can never share keys with a new attempt
            attempt = store.incr(attempts_key(plan.run_id)) - 1
            prefix = attempt_prefix(plan.run_id, rnd, attempt)
            store.put(fence_key(plan.run_id), np.array([rnd, attempt], dtype=np.int64))
            # calls in the driver's own process (threads) have no heartbeat: a frozen process freezes
            # its driver too, and a hung thread's heartbeat thread would go on beating regardless
            beat = not executor.in_process
            specs = _specs(plan, rnd, attempt, progress.checkpoint, progress.epoch, end, i, beat)
            watch = (AttemptLiveness(store, prefix, plan.workers, req.start_deadline_s, req.liveness_deadline_s)
                     if beat else None)
            outcomes = executor.run(run_worker, [s.to_json() for s in specs], req.round_timeout_s,
                                    on_failure=_aborter(store, prefix, plan.workers), liveness=watch)
            got = [_result(o) for o in outcomes]
            for o, res in zip(outcomes, got, strict=True):
                acc.add_call(o.seconds)
                if res is not None:
                    acc.add_bytes(res.bytes_in + res.bytes_out)
            with contextlib.suppress(Unavailable):  # the timeline is nice to have, never fatal
                ledger.record_calls(plan.run_id, [
                    CallRow(plan.run_id, rnd, attempt, o.worker, o.started_at, o.ended_at, o.ok, o.error)
                    for o, res in zip(outcomes, got, strict=True) if not (res is not None and res.duplicate)
                ])
            aborted: str | None = None
            if any(not o.ok for o in outcomes):
                with contextlib.suppress(Unavailable):
                    aborted = abort_reason(store, prefix)
            results = _check(outcomes, got, plan.workers, aborted)
            _record_threads(ledger, plan.run_id, results)
            shards: list[State] = []
            for k in range(plan.workers):
                names = results[k].shard_keys
                arrays = store.get_many([out_key(prefix, k, n) for n in names]) if names else []
                shards.append(dict(zip(names, arrays, strict=True)))
            state = plan.strategy.merge(req.config, shards)
            first = results[0]
            stops = {res.stop_reason for res in results.values()}
            costs = first.costs
            extras = first.extras
            return RoundResult(
                costs=progress.costs + costs, seconds=progress.seconds + first.seconds,
                stop_reason="threshold" if "threshold" in stops else None, state=state,
                attempts=i + 1,
                sync_seconds=max(res.sync_seconds for res in results.values()),
                extras=_pad(progress.extras, len(progress.costs)) + _pad(extras, len(costs)) if progress.costs
                else extras,
                retries=retries,
            )
        except (EngineError, Unavailable, KeyError) as exc:
            reason = str(exc) if not isinstance(exc, KeyError) else f"missing store key {exc}"
            if i < req.max_retries:
                acc.retries += 1
                _advance(plan, rnd, start, progress, store)
                if live is not None:
                    live.keep(start, progress.costs, progress.seconds, progress.extras)
                retries.append(Retry(round=rnd, attempt=attempt, reason=reason, from_epoch=progress.epoch))
                if on_retry is not None:
                    on_retry(rnd, attempt, reason, progress.epoch)
                if not _store_answers(store):  # an outage: give it time; a failed worker needs none
                    time.sleep(min(plan.retry_backoff_s * 2**i, 10.0))
        finally:
            if prefix is not None:
                with contextlib.suppress(Unavailable):
                    store.delete_prefix(prefix + ":")
            acc.add_bytes(store.bytes_in + store.bytes_out - b0)
    attempts = req.max_retries + 1
    raise RoundFailed(f"round {rnd} failed {attempts} time(s): {reason}", reason, attempts)
