"""One trial of a study, driven round by round: a lambdanet run whose validation score is told to
Optuna after every round, which may prune it there.

Usage::

    runner = TrialRunner(services, req, space, study, split, stop=threading.Event(), on_event=print)
    runner.run(trial)          # an asked (or RUNNING, on resume) optuna.Trial; tells Optuna its outcome

**A trial** is one lambdanet run (``Driver.start`` then ``Driver.open_session``): its ledger row
carries ``metrics.study`` and ``metrics.trial`` (and ``params``, the validation curve, ``outcome``);
its rounds run on the chosen executor with the engine's retries and checkpoints, and its cost is
accounted as for any run. Its workers get ``cpu_threads`` threads each (the machine's cores shared
by the P trials at once). After each round the trial reports the validation value at ``step =
epochs done``; when the pruner says so, the run ends at that round boundary as ``completed`` with
``stop_reason = "pruned"`` and the reason in its metrics. A trial whose cost turns non-finite is
recorded ``failed`` ("diverged …") and told to Optuna as FAIL; the study goes on. A trial whose
round fails after its retries is FAIL as well.

**Resume.** The trial's run id is written to the trial before its run is created, and its outcome
to the run before it is told to Optuna, so a driver killed anywhere leaves a state the next one
finishes: the run is resumed from its last checkpoint, or its recorded outcome is told.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import TrialState as Told  # what Optuna was told: COMPLETE, PRUNED, FAIL
from pydantic import JsonValue

from lambdanet.config import TrainConfig
from lambdanet.engine.driver import Driver
from lambdanet.engine.requests import TrainRequest, new_run_id
from lambdanet.engine.session import RunSession
from lambdanet.errors import (
    ConfigError,
    DataError,
    LambdanetError,
    LeaseHeld,
    RunFailed,
    RunNotFound,
    StaleDriver,
    Unavailable,
)
from lambdanet.services import Services
from lambdanet.tensors import json_safe
from lambdanet.tune.evaluate import Score, evaluate
from lambdanet.tune.optuna_study import prune_reason
from lambdanet.tune.request import TrialState, TuneRequest
from lambdanet.tune.space import Space
from lambdanet.tune.split import ValidationSplit

Event = Callable[[dict[str, Any]], None]

LEASE_WAIT_S = 10.0  # how long a resumed study waits for a dying trial driver's lease


class StudyStopping(Exception):
    """The study is stopping (Ctrl-C, or another trial hit a fatal error): the trial stops at its
    next round boundary and stays RUNNING in the study for ``--resume``."""


def finite(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


class TrialRunner:
    """Drives trials of one study, one at a time per calling thread (see the module docstring)."""

    def __init__(self, services: Services, req: TuneRequest, space: Space, study: optuna.Study,
                 split: ValidationSplit, *, stop: threading.Event, on_event: Event | None = None) -> None:
        self.services, self.req, self.space, self.study, self.split = services, req, space, study, split
        self.stop = stop
        self.on_event = on_event
        self._lock = threading.Lock()
        self.active: dict[int, RunSession] = {}  # trial number -> its session while it runs

    def event(self, kind: str, **fields: Any) -> None:
        self.forward({"event": kind, "study": self.req.study, **json_safe(fields)})

    def forward(self, message: dict[str, Any]) -> None:
        """An event to the caller's sink (also the events a trial-driver process reports)."""
        if self.on_event is not None:
            with contextlib.suppress(Exception):  # a broken sink never stops a trial
                self.on_event(message)

    def mark_active_interrupted(self) -> None:
        """Ctrl-C after the grace period: the runs still in a round are marked interrupted."""
        with self._lock:
            for session in list(self.active.values()):
                session.mark_interrupted()

    # ---- one trial -----------------------------------------------------------------------------
    def run(self, trial: optuna.Trial) -> None:
        req, ledger = self.req, self.services.ledger
        number = trial.number
        run_id = trial.user_attrs.get("run_id")
        if not isinstance(run_id, str):
            run_id = new_run_id()
            trial.set_user_attr("run_id", run_id)  # before the run exists: a resume finds it
        try:
            config = self.space.config_for(req.base, dict(trial.params), source=f"trial {number} config")
        except ConfigError as exc:
            self._fail_before_run(trial, str(exc))
            return
        rec = None
        with contextlib.suppress(RunNotFound):
            rec = ledger.get_run(run_id)
        if rec is None:
            request = TrainRequest(
                data=str(self.split.train_path), config=config, model_name=req.model_name, workers=req.workers,
                strategy=req.strategy_name, store_url=req.store_url, executor=req.executor,
                epochs_per_round=req.round_epochs, max_retries=req.max_retries, cpu_threads=req.cpu_threads)
            try:
                Driver(self.services).start(request, run_id)
            except (ConfigError, DataError) as exc:  # this trial's config does not fit the data
                self._fail_before_run(trial, str(exc))
                return
            ledger.update_run(run_id, metrics=self._metrics_base(trial))
            self.event("trial_started", trial=number, run_id=run_id, params=dict(trial.params))
        else:
            ledger.update_run(run_id, metrics=self._metrics_base(trial))
            recorded = TrialState.of_metrics(rec.metrics)
            if recorded.outcome is not None:  # decided by a driver that died before telling Optuna
                self._tell_recorded(trial, recorded)
                return
            self.event("trial_continued", trial=number, run_id=run_id, params=dict(trial.params))
        self._drive(trial, run_id, config, TrialState.of_metrics(rec.metrics) if rec is not None else TrialState())

    def _metrics_base(self, trial: optuna.Trial) -> dict[str, JsonValue]:
        return TrialState(study=self.req.study, trial=trial.number, params=dict(trial.params),
                          objective=self.req.objective).metrics()

    def _tell(self, trial: optuna.Trial, state: Told, value: float | None = None) -> None:
        if state == Told.COMPLETE:
            self.study.tell(trial, value)
        else:
            self.study.tell(trial, state=state)

    def _fail_before_run(self, trial: optuna.Trial, reason: str) -> None:
        trial.set_user_attr("fail_reason", reason)
        self._tell(trial, Told.FAIL)
        self.event("trial_failed", trial=trial.number, reason=reason, params=dict(trial.params))

    def _tell_recorded(self, trial: optuna.Trial, recorded: TrialState) -> None:
        outcome = recorded.outcome
        if outcome == "completed" and recorded.objective_value is not None:
            self._tell(trial, Told.COMPLETE, recorded.objective_value)
        elif outcome == "pruned":
            self._tell(trial, Told.PRUNED)
        else:
            trial.set_user_attr("fail_reason", recorded.fail_reason or "failed")
            self._tell(trial, Told.FAIL)
        self.event(f"trial_{outcome}", trial=trial.number, recorded=True)

    def _drive(self, trial: optuna.Trial, run_id: str, config: TrainConfig, recorded: TrialState) -> None:
        req, ledger, number, split = self.req, self.services.ledger, trial.number, self.split
        curve = list(recorded.validation)
        # a trial-driver process of a killed tune driver exits as soon as it sees that (end of its
        # input); give it a moment before leaving the trial to "another live driver"
        deadline = time.monotonic() + LEASE_WAIT_S
        while True:
            try:
                session = Driver(self.services).open_session(run_id)
                break
            except LeaseHeld as exc:
                if time.monotonic() >= deadline:  # another live driver has it: leave the trial to it
                    self.event("trial_skipped", trial=number, run_id=run_id, reason=str(exc))
                    return
                time.sleep(0.2)
        with self._lock:
            self.active[number] = session
        try:
            while True:
                if self.stop.is_set():
                    raise StudyStopping
                step = session.next_round()
                score = evaluate(config, session.state(), split.x_valid, split.y_valid, split.n_classes)
                curve = [p for p in curve if p[0] != step.epochs_done]
                curve.append((step.epochs_done, finite(score.cost), score.accuracy))
                ledger.update_run(run_id, metrics=TrialState(
                    validation=curve, validation_cost=finite(score.cost), validation_accuracy=score.accuracy,
                    validation_balanced_accuracy=score.balanced_accuracy).metrics())
                if not score.finite or (step.last_cost is not None and not math.isfinite(step.last_cost)):
                    self._diverged(trial, run_id, step.epochs_done, step.last_cost, score)
                    return
                value = score.value(req.objective)
                trial.report(value, step.epochs_done)
                self.event("trial_round", trial=number, run_id=run_id, round=step.round, epoch=step.epochs_done,
                           epochs=step.epochs, validation_cost=score.cost, validation_accuracy=score.accuracy)
                if step.finished:
                    break
                if trial.should_prune():
                    self._pruned(trial, run_id, step.round, step.epochs_done, value)
                    return
            result = session.finish()
            ledger.update_run(run_id, metrics=TrialState(outcome="completed", objective_value=value).metrics())
            self._tell(trial, Told.COMPLETE, value)
            self.event("trial_completed", trial=number, run_id=run_id, value=value, epochs=step.epochs_done,
                       validation_cost=score.cost, validation_accuracy=score.accuracy, model=result.model,
                       worker_seconds=result.worker_seconds)
        except (StudyStopping, KeyboardInterrupt):  # KeyboardInterrupt: a signal in a trial-driver process
            session.mark_interrupted()
            raise
        except RunFailed as exc:  # the engine retried its rounds; recorded failed by the session
            self._failed(trial, run_id, str(exc))
        except StaleDriver:
            self.event("trial_skipped", trial=number, run_id=run_id, reason="another driver took the run over")
        except Unavailable:  # a service is down: stop the study, keep the trial for --resume
            session.mark_interrupted()
            raise
        except LambdanetError as exc:
            session.mark_failed(f"{type(exc).__name__}: {exc}")
            self._failed(trial, run_id, f"{type(exc).__name__}: {exc}")
        except BaseException as exc:
            session.mark_failed(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            with self._lock:
                self.active.pop(number, None)
            session.close()

    def _failed(self, trial: optuna.Trial, run_id: str, reason: str) -> None:
        self.services.ledger.update_run(run_id, metrics=TrialState(outcome="failed", fail_reason=reason).metrics())
        trial.set_user_attr("fail_reason", reason)
        self._tell(trial, Told.FAIL)
        self.event("trial_failed", trial=trial.number, run_id=run_id, reason=reason)

    def _diverged(self, trial: optuna.Trial, run_id: str, epoch: int, train_cost: float | None,
                  score: Score) -> None:
        reason = (f"diverged: training cost {train_cost} and validation cost {score.cost} at epoch {epoch} "
                  f"(learning rate too high?); trial recorded as failed, the study goes on")
        state = TrialState(outcome="failed", fail_reason=reason)
        self.services.ledger.update_run(run_id, status="failed", stop_reason="error", error=reason,
                                        ended_at=time.time(), metrics={**state.metrics(), "epochs_done": epoch})
        trial.set_user_attr("fail_reason", reason)
        self._tell(trial, Told.FAIL)
        self.event("trial_failed", trial=trial.number, run_id=run_id, reason=reason)

    def _pruned(self, trial: optuna.Trial, run_id: str, rnd: int, epoch: int, value: float) -> None:
        reason = prune_reason(self.study, trial.number, self.req, value, epoch, rnd)
        state = TrialState(outcome="pruned", prune_reason=reason, pruned_at_epoch=epoch, pruned_at_round=rnd)
        self.services.ledger.update_run(run_id, status="completed", stop_reason="pruned", ended_at=time.time(),
                                        metrics={**state.metrics(), "epochs_done": epoch})
        trial.set_user_attr("prune_reason", reason)
        self._tell(trial, Told.PRUNED)
        self.event("trial_pruned", trial=trial.number, run_id=run_id, epoch=epoch, reason=reason)
