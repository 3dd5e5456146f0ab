"""One run driven round by round under the run's lease — the control loop that ``lambdanet train``
runs in one process and that the durable Lambda driver runs as one durable step per round.

Usage::

    session = RunSession.open(services, run_id, DriverIdentity.local())   # takes the run's lease
    try:
        while not session.next_round().finished:   # a laptop loops; a durable function checkpoints
            pass                                    # each RoundStep (small JSON) between rounds
        result = session.finish()                   # accuracies, model version, run completed
    finally:
        session.close()                             # releases the lease (never a stale driver's)

``next_round`` renews the lease first (:class:`StaleDriver` when another driver took the run
over: this one stops and writes nothing more), reads the checkpoint pointer, runs ONE round with
its retries (:func:`lambdanet.engine.rounds.run_round`), then commits it: the epoch rows in one
ledger call, the notifications, the progress sink, a checkpoint and the metrics. It always
advances from the pointer, so a step re-run after a killed invocation trains the round after
whatever was really committed; training is deterministic per epoch (mini-batches are seeded by
the epoch), so the final weights do not depend on where rounds or invocations were cut.

**Live progress.** While a round runs, the epochs its workers have done reach the driver about
once a second (:class:`lambdanet.engine.rounds.LiveEpochs`, from the round's in-round
checkpoints); the session writes them to the ledger as provisional rows (``extra["provisional"]
= True``: ``lambdanet runs show`` and the dashboard see them), moves the progress sink and sends
the ``report_every`` notifications they reach. The commit stays the source of truth: it writes
the round's rows again (same (run, epoch) keys: replaced, never duplicated), and a round given up
(failed, interrupted) drops the rows past the committed epochs. Each epoch's notification is sent
once: the last epoch notified is kept in the run's metrics (``notified_epoch``), so neither a
retried attempt nor a resumed run sends it again.

**Who drives.** A :class:`DriverIdentity` names the holder (one process, or one invocation of a
durable execution) and its execution. Taking the lease over succeeds from an expired lease,
from an earlier invocation of the same execution (a replay) and from a local process that is
gone (same host, dead pid); any other live owner means :class:`LeaseHeld`. The new owner also
aborts the previous owner's in-flight round attempt, so its workers stop at their next collective.

**The lease is short and kept alive.** Its time to live is :data:`DEFAULT_LEASE_TTL_S` (60 s;
``LAMBDANET_LEASE_TTL_S`` sets another); while a session is open a daemon thread renews it every
third of that (:class:`_LeaseKeeper`), and :meth:`RunSession.close` stops the thread. So a driver
that stopped — killed, frozen, cut off from the ledger, on whatever host — is taken over at most
one TTL after its last renewal, and a live one never is. A renewal that finds the lease taken
marks the session stale: its next commit raises :class:`StaleDriver` (each commit also renews the
lease itself, a conditional write on the generation, so the fence never depends on the thread).
:func:`wait_for_lease` is what ``lambdanet resume`` does when the run's lease is held.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lambdanet import adapters
from lambdanet.engine import checkpoints
from lambdanet.engine.accounting import Accounting, default_memory_mb
from lambdanet.engine.collectives import abort_attempt
from lambdanet.engine.messages import CheckpointPointer, Fault, Retry, RoundStep
from lambdanet.engine.requests import EngineSettings, ProgressSink, RunResult, TrainRequest, request_from_record
from lambdanet.engine.rounds import EpochFigures, RoundPlan, run_round
from lambdanet.engine.strategies import load_strategy, strategy_path
from lambdanet.engine.strategies.base import State
from lambdanet.engine.worker import attempt_prefix, fence_key
from lambdanet.errors import (
    ConfigError,
    LambdanetError,
    LeaseHeld,
    RoundFailed,
    RunFailed,
    StaleDriver,
    UserInputError,
)
from lambdanet.ports.executor import Executor
from lambdanet.ports.ledger import EpochRow, Lease
from lambdanet.ports.tensorstore import TensorStore
from lambdanet.registry import TRIAL_KEY
from lambdanet.services import Services
from lambdanet.settings import Settings

log = logging.getLogger("lambdanet.engine.session")


@dataclass(frozen=True)
class DriverIdentity:
    """Who is driving: ``holder`` is unique per process / invocation; ``execution`` is shared by
    the invocations of one durable execution (a replay may take over from its own earlier one)."""

    holder: str
    execution: str

    @classmethod
    def local(cls) -> DriverIdentity:
        holder = f"local:{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        return cls(holder, holder)

    @classmethod
    def invocation(cls, execution: str) -> DriverIdentity:
        return cls(f"{execution}/{secrets.token_hex(4)}", execution)


def _dead_local_holder(holder: str) -> bool:
    """True when ``holder`` is a ``local:`` driver of this host whose process is gone."""
    parts = holder.split(":")
    if len(parts) != 4 or parts[0] != "local" or parts[1] != socket.gethostname():
        return False
    try:
        pid = int(parts[2])
    except ValueError:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _zombie(pid)  # exited, but not reaped (its parent died too, and PID 1 may never reap it)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rpartition(")")[2].split()[:1] == ["Z"]
    except OSError:  # no /proc (macOS) or gone meanwhile
        return False


DEFAULT_LEASE_TTL_S = 60.0  # a dead holder blocks its run at most this long after its last renewal


def lease_ttl() -> float:
    """The run's lease time to live: ``LAMBDANET_LEASE_TTL_S`` (1 to 3600 s), else 60 s. A live
    driver renews it every third of it, so it lapses only when its driver stopped."""
    ttl = Settings.from_env().lease_ttl_s
    return DEFAULT_LEASE_TTL_S if ttl is None else ttl


class _LeaseKeeper:
    """Renews a session's lease every third of its TTL from a daemon thread until stopped, or until
    a renewal finds the lease taken (the session is then stale). A ledger that cannot be reached is
    tried again at the next period: the lease lapses only if that lasts a whole TTL."""

    def __init__(self, renew: Callable[[], None], period_s: float, name: str) -> None:
        self._renew = renew
        self.period_s = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self._renew()
            except StaleDriver:
                log.warning("%s: the run's lease was taken over; this driver commits nothing more",
                            self._thread.name)
                return
            except LambdanetError as exc:  # the ledger is away: try again next period
                log.warning("%s: cannot renew the run's lease: %s", self._thread.name, exc)
            except Exception:  # never let the keeper die silently while the session goes on
                log.exception("%s: renewing the run's lease failed", self._thread.name)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=10.0)


def wait_for_lease(ledger: Any, run_id: str, say: Callable[[str], None], *, poll_s: float = 0.5) -> None:
    """Wait until ``run_id``'s lease can be taken: its holder released it, or stopped renewing it
    and it lapsed (at most the lease's time left). ``say`` gets one line first: whom it waits for
    and how long at most. Raises :class:`LeaseHeld` as soon as the holder is seen renewing the
    lease (it is alive: the run is being driven) or another driver takes it."""
    first = ledger.get_lease(run_id)
    now = time.time()
    if first is None or first.expires_at <= now:
        return
    left = first.expires_at - now
    say(f"run {run_id} is held by driver {first.holder}: waiting at most {math.ceil(left)} s for its "
        f"lease to lapse (it lapses unless that driver is alive and renews it)")
    while True:
        time.sleep(max(0.05, min(poll_s, first.expires_at - time.time())))
        current = ledger.get_lease(run_id)
        if current is None:  # released: the holder ended
            return
        if current.holder != first.holder or current.generation != first.generation:
            raise LeaseHeld(f"run {run_id} was taken over by driver {current.holder} while waiting; "
                            f"it drives the run now")
        if current.expires_at > first.expires_at:
            raise LeaseHeld(f"run {run_id} is driven by {current.holder}, which is alive (it renewed its "
                            f"lease); wait for it to end (`lambdanet runs show {run_id}`)")
        if current.expires_at <= time.time():
            return


def open_executor(name: str, store_url: str, given: Executor | None = None, *,
                  settings: Settings | None = None) -> Executor:
    """``given``, or the executor ``name`` opened with ``settings``' executor options (the Lithops config)."""
    if given is not None:
        ex = given
    else:
        ex = adapters.open_executor(name, **(settings or Settings.from_env()).executor_options())
    if adapters.scheme_of(store_url) == "memory" and not ex.in_process:
        raise ConfigError(f"memory:// lives in one process; use --store redis://… with the {ex.name} "
                          f"executor (or --executor local)")
    return ex


class RunSession:
    """Drives one run under its lease; see the module docstring."""

    def __init__(self, services: Services, run_id: str, req: TrainRequest, target: str, strategy: Any,
                 executor: Executor, lease: Lease, *, own_executor: bool, progress: ProgressSink | None = None,
                 faults: list[Fault] | None = None, retry_backoff_s: float = 0.5,
                 acc: Accounting | None = None, started_at: float | None = None,
                 lease_ttl_s: float | None = None) -> None:
        self.services, self.run_id, self.req = services, run_id, req
        self.target, self.strategy, self.executor = target, strategy, executor
        self.lease = lease
        self.own_executor = own_executor
        self.progress = progress
        self.acc = acc or Accounting(memory_mb=req.lambda_memory_mb or default_memory_mb())
        self.t0 = started_at or time.time()
        self.stale = False
        self.lease_ttl_s = lease_ttl_s if lease_ttl_s is not None else lease_ttl()
        self._lease_lock = threading.Lock()
        self._keeper: _LeaseKeeper | None = None
        self._store: TensorStore | None = None
        self._state: State | None = None  # the last round's merged state (saves a read at finish)
        self._progress_started = False
        self.notified_epoch = 0  # the last epoch whose "Training update!" was sent (metrics.notified_epoch)
        self._shown = 0  # the last epoch the progress sink was given
        self.plan = RoundPlan(run_id=run_id, req=req, strategy=strategy, strategy_target=target,
                              objects_url=services.objects.url, faults=list(faults or []),
                              retry_backoff_s=retry_backoff_s, before_retry=self._renew)

    # ---- opening -------------------------------------------------------------------------------
    @classmethod
    def open(cls, services: Services, run_id: str, identity: DriverIdentity, *, store_url: str | None = None,
             executor_name: str | None = None, executor: Executor | None = None,
             progress: ProgressSink | None = None, faults: list[Fault] | None = None,
             retry_backoff_s: float = 0.5, since_created: bool = False) -> RunSession:
        """Take the lease of ``run_id`` (created by :meth:`Driver.start`) and get ready to drive it.
        ``since_created``: report the wall time since the run started (a durable execution that
        spans invocations) rather than since this call."""
        ledger = services.ledger
        rec = ledger.get_run(run_id)
        if rec.status == "completed":
            raise UserInputError(f"run {run_id} already completed (model {rec.model}); nothing to resume")
        req = request_from_record(rec, store_url=store_url, executor=executor_name)
        target = EngineSettings.of_run(rec).strategy_target or strategy_path(req.config.kind, req.strategy)
        strategy = load_strategy(target)
        ex = open_executor(req.executor, req.store_url, executor, settings=services.settings)
        try:
            ttl = lease_ttl()
            lease, previous = cls._acquire(services, run_id, identity, ttl)
        except BaseException:  # LeaseHeld: another driver owns the run; release what was opened
            if executor is None:
                ex.close()
            raise
        acc = Accounting.from_metrics(rec.metrics, req.lambda_memory_mb or default_memory_mb())
        session = cls(services, run_id, req, target, strategy, ex, lease, own_executor=executor is None,
                      progress=progress, faults=faults, retry_backoff_s=retry_backoff_s, acc=acc,
                      started_at=(rec.started_at if since_created else None), lease_ttl_s=ttl)
        notified = rec.metrics.get("notified_epoch")
        session.notified_epoch = int(notified) if isinstance(notified, int | float) else 0
        try:
            session._keep_lease()
            session._prepare(previous)
        except BaseException:
            session.close(cleanup=False)
            raise
        return session

    def _keep_lease(self) -> None:
        """Renew the lease from a daemon thread every third of its TTL until :meth:`close`."""
        self._keeper = _LeaseKeeper(self._renew, self.lease_ttl_s / 3, f"lease-keeper {self.run_id}")
        self._keeper.start()

    @staticmethod
    def _acquire(services: Services, run_id: str, identity: DriverIdentity,
                 ttl: float) -> tuple[Lease, Lease | None]:
        """The lease, and the one it replaced (None when there was none or it was ours)."""
        ledger = services.ledger
        previous = ledger.get_lease(run_id)
        steal = previous.holder if previous is not None and _dead_local_holder(previous.holder) else None
        lease = ledger.acquire_lease(run_id, identity.holder, identity.execution, ttl, steal_from=steal)
        replaced = previous if previous is not None and previous.holder != identity.holder else None
        return lease, replaced

    def _prepare(self, previous: Lease | None) -> None:
        objects, run_id = self.services.objects, self.run_id
        if checkpoints.read_pointer(objects, run_id) is None:  # killed between create and the first checkpoint
            if not objects.exists(checkpoints.data_key(run_id)):
                raise RunFailed(f"run {run_id} has no data or checkpoint in {objects.url}; start a new run")
            dataset = checkpoints.read_data(objects, run_id)
            checkpoints.write_checkpoint(objects, run_id, 0, 0, self.strategy.initial_state(self.req.config, dataset))
        if previous is not None:  # a replaced driver's workers stop at their next collective
            self._abort_previous_attempt(previous)
        self.services.ledger.update_run(run_id, status="running", error=None, stop_reason=None, ended_at=None)

    def _abort_previous_attempt(self, previous: Lease) -> None:
        store = self.store
        with contextlib.suppress(KeyError, LambdanetError):
            fence = store.get(fence_key(self.run_id))
            prefix = attempt_prefix(self.run_id, int(fence[0]), int(fence[1]))
            abort_attempt(store, prefix, f"driver {previous.holder} was replaced by {self.lease.holder}",
                          self.req.workers)

    def state(self) -> State:
        """The run's full state after the last committed round (params and optimizer state), e.g.
        for a validation score between rounds."""
        if self._state is None:
            self._state = checkpoints.read_state(self.services.objects, self._pointer().file)
        return self._state

    def _pointer(self) -> CheckpointPointer:
        pointer = checkpoints.read_pointer(self.services.objects, self.run_id)
        if pointer is None:  # written before the run's row, and again by _prepare
            raise RunFailed(f"run {self.run_id} has no checkpoint in {self.services.objects.url}")
        return pointer

    @property
    def store(self) -> TensorStore:
        if self._store is None:
            self._store = adapters.open_store(self.req.store_url)
        return self._store

    # ---- the loop ------------------------------------------------------------------------------
    def _notify(self, subject: str, message: str, **fields: Any) -> None:
        with contextlib.suppress(LambdanetError):  # a lost notification never fails a run
            self.services.notifier.notify(subject, message, **fields)

    def _renew(self) -> None:
        """Extend the lease (the keeper thread, and every commit); StaleDriver once it was taken over."""
        with self._lease_lock:
            if self.stale:  # a renewal (maybe the keeper's) already found the lease taken
                raise StaleDriver(f"run {self.run_id}: this driver ({self.lease.holder}) lost its lease to "
                                  f"another one")
            try:
                self.lease = self.services.ledger.renew_lease(self.run_id, self.lease, self.lease_ttl_s)
            except StaleDriver:
                self.stale = True
                raise

    def next_round(self) -> RoundStep:
        """Run and commit the next round (see the module docstring); a finished run returns at once."""
        req, config, run_id = self.req, self.req.config, self.run_id
        ledger, objects = self.services.ledger, self.services.objects
        pointer = self._pointer()
        done, rnd = pointer.epochs_done, pointer.round
        if done >= config.epochs or pointer.stop_reason is not None:
            return RoundStep(round=rnd, epochs_done=done, epochs=config.epochs, finished=True, seconds=0.0,
                             stop_reason=pointer.stop_reason, last_cost=pointer.last_cost)
        self._renew()
        if self.progress is not None and not self._progress_started:
            self.progress.start(config.epochs, done)
            self._progress_started = True
            self._shown = done
        t0 = time.perf_counter()
        rnd += 1
        per_round = req.epochs_per_round or self.strategy.default_epochs_per_round(config)
        end = min(config.epochs, done + per_round)
        retry_log: list[Retry] = []

        def on_retry(r: int, attempt: int, reason: str, from_epoch: int) -> None:
            retry_log.append(Retry(round=r, attempt=attempt, reason=reason, from_epoch=from_epoch))
            if attempt < 0:  # not a retry: the round goes on where a stopped driver left it
                return
            self._notify("Training retry", f"Round {r} attempt {attempt} failed: {reason}; retrying from epoch "
                         f"{from_epoch}", run_id=run_id, event="retry", round=r)

        def on_epochs(figures: list[EpochFigures]) -> None:  # the round's epochs while it runs (a thread)
            self._live_epochs(rnd, figures)

        try:
            res = run_round(self.plan, rnd, pointer.file, done, end, executor=self.executor, store=self.store,
                            ledger=ledger, acc=self.acc, on_retry=on_retry, on_epochs=on_epochs)
        except RoundFailed as exc:
            self._fail(rnd, done, exc, retry_log)
        except BaseException:
            self._drop_live_rows(done)  # Ctrl-C, a lost store…: the round is given up here
            raise
        self._renew()  # a driver replaced while its round ran commits nothing
        acc = self.acc
        acc.rounds += 1
        acc.sync_seconds += res.sync_seconds
        extras = res.extras + [{}] * (len(res.costs) - len(res.extras))
        lr = float(getattr(config, "learning_rate", 0.0))
        rows = [EpochRow(run_id, done + i + 1, c, lr, s, {"round": rnd, **extras[i]})
                for i, (c, s) in enumerate(zip(res.costs, res.seconds, strict=True))]
        ledger.upsert_epochs(run_id, rows)  # one ledger call per round; replaces the round's live rows
        self._report(rows)
        done += len(rows)
        last_cost = rows[-1].cost if rows else pointer.last_cost
        self._state = res.state
        checkpoints.write_checkpoint(objects, run_id, rnd, done, res.state, stop_reason=res.stop_reason,
                                     last_cost=last_cost)
        ledger.update_run(run_id, metrics={**acc.to_metrics(), "epochs_done": done,
                                           "notified_epoch": self.notified_epoch, **self._retry_metrics(retry_log)})
        finished = done >= config.epochs or res.stop_reason is not None
        return RoundStep(round=rnd, epochs_done=done, epochs=config.epochs, finished=finished,
                         seconds=round(time.perf_counter() - t0, 4), stop_reason=res.stop_reason, last_cost=last_cost)

    def _report(self, rows: list[EpochRow]) -> bool:
        """The notifications (every ``report_every`` epochs) and progress of the epochs not reported
        yet; True when a notification was sent."""
        every = self.req.config.report_every
        sent = False
        for row in rows:
            if row.epoch % every == 0 and row.epoch > self.notified_epoch:
                self._notify("Training update!", f"Training update! Cost after epoch {row.epoch} = "
                             f"{row.cost:.6f}", run_id=self.run_id, event="progress", epoch=row.epoch, cost=row.cost)
                self.notified_epoch = row.epoch
                sent = True
            if self.progress is not None and row.epoch > self._shown:
                self.progress.update(row.epoch, row.cost)
                self._shown = row.epoch
        return sent

    def _live_epochs(self, rnd: int, figures: list[EpochFigures]) -> None:
        """The running round's newest epochs (from :class:`~lambdanet.engine.rounds.LiveEpochs`'
        thread): provisional ledger rows, the progress sink, the notifications they reach."""
        if self.stale:  # taken over: the new driver reports this run
            return
        lr = float(getattr(self.req.config, "learning_rate", 0.0))
        rows = [EpochRow(self.run_id, epoch, cost, lr, seconds, {"round": rnd, **extra, "provisional": True})
                for epoch, cost, seconds, extra in figures]
        ledger = self.services.ledger
        with contextlib.suppress(LambdanetError):  # the commit writes every row anyway
            ledger.upsert_epochs(self.run_id, rows)
        if self._report(rows):  # remembered at once: a driver that dies now must not send it again
            with contextlib.suppress(LambdanetError):
                ledger.update_run(self.run_id, metrics={"notified_epoch": self.notified_epoch})

    def _drop_live_rows(self, done: int) -> None:
        """A round given up: the provisional rows past the committed epochs go (a resumed run writes
        them again)."""
        if self.stale:
            return
        with contextlib.suppress(LambdanetError):
            self.services.ledger.delete_epochs(self.run_id, after=done)

    def _retry_metrics(self, retry_log: list[Retry]) -> dict[str, object]:
        if not retry_log:
            return {}
        old = self.services.ledger.get_run(self.run_id).metrics.get("retry_log") or []
        return {"retry_log": [*old, *(r.to_json() for r in retry_log)]}

    def _fail(self, rnd: int, done: int, exc: RoundFailed, retry_log: list[Retry]) -> None:
        reason = f"round {rnd} failed after {exc.attempts} attempt(s): {exc.reason}"
        self._drop_live_rows(done)
        self.services.ledger.update_run(self.run_id, status="failed", stop_reason="error", error=reason,
                                        ended_at=time.time(), metrics={**self.acc.to_metrics(), "epochs_done": done,
                                                                       "notified_epoch": self.notified_epoch,
                                                                       **self._retry_metrics(retry_log)})
        self._notify("Training Failed!", f"Training Failed! Run {self.run_id}: {reason}. Resume with "
                     f"`lambdanet resume {self.run_id}`", run_id=self.run_id, event="failed", error=reason)
        raise RunFailed(f"run {self.run_id} failed: {reason}; resume with `lambdanet resume {self.run_id}`") from exc

    def mark_interrupted(self) -> None:
        ledger = self.services.ledger
        with contextlib.suppress(LambdanetError):
            pointer = checkpoints.read_pointer(self.services.objects, self.run_id)
            done = pointer.epochs_done if pointer is not None else 0
            ledger.update_run(self.run_id, status="interrupted", stop_reason="interrupted", ended_at=time.time(),
                              metrics={**self.acc.to_metrics(), "epochs_done": done})

    def mark_failed(self, reason: str) -> None:
        with contextlib.suppress(LambdanetError):
            self.services.ledger.update_run(self.run_id, status="failed", stop_reason="error", error=reason,
                                            ended_at=time.time())

    # ---- the end -------------------------------------------------------------------------------
    def finish(self) -> RunResult:
        """Register the model, mark the run completed, notify; the run's lease is still held."""
        self._renew()
        services, config, run_id, req, acc = self.services, self.req.config, self.run_id, self.req, self.acc
        objects = services.objects
        pointer = self._pointer()
        state = self._state if self._state is not None else checkpoints.read_state(objects, pointer.file)
        dataset = checkpoints.read_data(objects, run_id)
        fin = self.strategy.finish(config, state, dataset)
        stop_reason = pointer.stop_reason or "epoch_limit"
        last_cost = pointer.last_cost
        done = pointer.epochs_done
        metrics = {"train_accuracy": fin.train_accuracy, "test_accuracy": fin.test_accuracy, "final_cost": last_cost}
        mv = self._registered() or services.registry.register(
            req.model_name, fin.weights, {**fin.metadata, "metrics": metrics, "run_id": run_id, **self._trial_mark()})
        model = f"{mv.name}:{mv.version}"
        services.ledger.update_run(run_id, status="completed", stop_reason=stop_reason, model=model,
                                   ended_at=time.time(), error=None,
                                   metrics={**metrics, **acc.to_metrics(), "epochs_done": done,
                                            "evaluation": _evaluation(fin.metadata)})
        if stop_reason == "threshold":
            msg = (f"Training stopped early at epoch {done}: cost {last_cost:.6f} <= threshold "
                   f"{config.threshold}. Final Cost = {last_cost:.6f}")
            self._notify("Training stopped early", msg, run_id=run_id, event="early_stop", cost=last_cost)
        cost_text = f"{last_cost:.6f}" if last_cost is not None else "n/a"
        self._notify("Training Completed Successfully!", f"Training Completed Successfully! Final Cost = "
                     f"{cost_text}", run_id=run_id, event="completed", cost=last_cost, model=model)
        return RunResult(
            run_id=run_id, status="completed", epochs_run=done, final_cost=last_cost,
            train_accuracy=fin.train_accuracy, test_accuracy=fin.test_accuracy,
            wall_seconds=round(time.time() - self.t0, 3), model=model, workers=req.workers, strategy=req.strategy,
            rounds=acc.rounds, retries=acc.retries, store_bytes=acc.store_bytes, worker_calls=acc.worker_calls,
            worker_seconds=round(acc.worker_seconds, 3), estimated_cost_usd=acc.estimated_cost_usd(),
            stop_reason=stop_reason,
        )

    def _trial_mark(self) -> dict[str, object]:
        """``{TRIAL_KEY: {"study", "trial"}}`` for a ``lambdanet tune`` trial's run (its metrics name
        the study): the registry never makes such a version a bare name's default."""
        run_metrics = self.services.ledger.get_run(self.run_id).metrics
        if run_metrics.get("study") is None:
            return {}
        return {TRIAL_KEY: {"study": str(run_metrics["study"]), "trial": run_metrics.get("trial")}}

    def _registered(self) -> Any:
        """The model version this run already registered (a finish step re-run after its invocation
        was killed must not register a second one), else None."""
        registry, name = self.services.registry, self.req.model_name
        with contextlib.suppress(LambdanetError):
            for version in sorted(registry.versions(name))[-3:]:
                if registry.metadata(name, version).get("run_id") == self.run_id:
                    return registry.load(f"{name}:{version}")
        return None

    def close(self, *, cleanup: bool = True) -> None:
        """Release what this session holds. A stale driver (taken over) touches nothing of the run;
        ``cleanup=False`` keeps the run's store keys (a durable invocation handing off mid-run)."""
        if self._keeper is not None:
            self._keeper.stop()
            self._keeper = None
        if self.progress is not None and self._progress_started:
            self.progress.finish()
            self._progress_started = False
        if not self.stale:
            if cleanup:
                with contextlib.suppress(LambdanetError):
                    self.store.delete_prefix(f"ln:{self.run_id}:")
            with contextlib.suppress(LambdanetError):
                self.services.ledger.release_lease(self.run_id, self.lease)
        if self._store is not None:
            with contextlib.suppress(LambdanetError):
                self._store.close()
            self._store = None
        if self.own_executor:
            with contextlib.suppress(Exception):
                self.executor.close()


__all__ = ["DriverIdentity", "LeaseHeld", "RoundStep", "RunSession"]


def _evaluation(metadata: Mapping[str, object]) -> dict[str, object]:
    """How the final accuracies were computed (the run's metrics say it, as model.json does): a
    strategy that samples the training set or reuses the last epoch's test pass says so in its
    metadata's ``evaluation``; otherwise both sets were scored whole at finish."""
    given = metadata.get("evaluation")
    if isinstance(given, dict):
        return dict(given)
    return {"train_accuracy_method": "all_training_images", "test_accuracy_method": "scored_at_finish"}
