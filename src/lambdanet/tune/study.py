"""The study loop of ``lambdanet tune``: Optuna asks, lambdanet runs train, rounds are the rungs.

Usage::

    req = TuneRequest(study="lr-search", data="datasets.h5", base=base_dict, space=space_json,
                      trials=32, parallel=2, executor="process", store_url="redis://…", pruner="median")
    result = Tuner(services, req, on_event=print).run()          # StudyResult; .to_json()
    Tuner.resume(services, "lr-search", storage="file").run()    # after Ctrl-C or a killed driver

**The split.** The data set is read once, here; its training set is split with a seeded
permutation into ``train.npz`` and ``validation.npz`` (``validation_fraction``) under
``$LAMBDANET_HOME/studies/<study>/``. Trial runs are started on ``train.npz``, which has no test
arrays, so a trial never reads the test set; the validation metric is computed here after every
round from the run's state (:func:`lambdanet.tune.evaluate.evaluate`). The test set is read once,
at the end, to score the best trial.

**A trial** is one lambdanet run (``Driver.start`` then ``Driver.open_session``): its ledger row
carries ``metrics.study`` and ``metrics.trial`` (and ``params``, the validation curve, ``outcome``);
its rounds run on the chosen executor with the engine's retries and checkpoints, and its cost
is accounted as for any run. After each round the trial reports the validation cost (or
accuracy) to Optuna at ``step = epochs done``; when the pruner says so, the run ends at that
round boundary as ``completed`` with ``stop_reason = "pruned"`` and the reason in its metrics.
A trial whose cost turns non-finite is recorded ``failed`` ("diverged …") and told to Optuna as
FAIL; the study goes on. A trial whose round fails after its retries is FAIL as well.

**Parallel trials.** ``parallel`` threads each drive one trial at a time (each trial has its own
K workers on the executor). The study lives in Optuna's journal storage over JSON logs only
(:mod:`lambdanet.tune.journal`): a file under ``LAMBDANET_HOME`` or a Redis list.

**Resume.** The study's settings are the study's user attributes (JSON). Every trial's run id is
written to the trial before its run is created, and its outcome to the run before it is told to
Optuna, so a driver killed anywhere leaves a state the next one finishes: a RUNNING trial is
continued (its run resumed from the last checkpoint, or its recorded outcome told), new trials are
asked only while the study has fewer than ``trials`` — none is counted twice.

**At the end** the best trial's model version (registered by its run) gets the alias ``staging``
— never ``production`` — and the summary goes to the study (``summary`` attribute) and to the
object store (``studies/<study>/summary.json``) for ``lambdanet report --study``.
"""

from __future__ import annotations

import contextlib
import json
import math
import statistics
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from lambdanet.config import TrainConfig, parse_config
from lambdanet.data.dataset import Dataset
from lambdanet.engine import checkpoints
from lambdanet.engine.driver import Driver
from lambdanet.engine.requests import TrainRequest, new_run_id, safe_url
from lambdanet.engine.strategies import load_strategy, strategy_path
from lambdanet.errors import (
    ConfigError,
    DataError,
    Interrupted,
    LambdanetError,
    LeaseHeld,
    RunFailed,
    RunNotFound,
    StaleDriver,
    Unavailable,
    UserInputError,
)
from lambdanet.services import Services
from lambdanet.tensors import json_safe
from lambdanet.tune.evaluate import Score, evaluate
from lambdanet.tune.journal import check_study_name, journal_exists, open_journal
from lambdanet.tune.space import Space, parse_space

PRUNERS = ("median", "asha", "none")
OBJECTIVES = ("cost", "accuracy")
ATTR = "lambdanet"  # the study's user attribute holding its settings
DEFAULT_RUNGS = 10  # default epochs_per_round = ceil(epochs / DEFAULT_RUNGS)

Event = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class TuneRequest:
    study: str
    data: str
    base: dict[str, Any]  # parameters.json (or a CNN config) as a dict
    space: dict[str, Any]  # space.json as given
    trials: int
    parallel: int = 1
    workers: int = 1
    strategy: str | None = None  # None: neuron for MLPs, data for CNNs
    executor: str = "local"
    store_url: str = "memory://"
    storage: str = "file"  # "file" (under LAMBDANET_HOME) | redis://…
    pruner: str = "median"
    objective: str = "cost"  # "cost" (minimised) | "accuracy" (maximised), on the validation split
    validation_fraction: float = 0.2
    seed: int = 0  # the sampler's and the split's seed
    epochs_per_round: int | None = None  # None: ceil(epochs / 10), at most 1000
    max_retries: int = 3
    model_name: str = "model"
    startup_trials: int = 4  # trials that finish before the pruner prunes anything

    def check(self) -> Space:
        """Every option and the space, before anything is written; returns the parsed space."""
        check_study_name(self.study)
        if self.trials < 1:
            raise ConfigError(f"--trials must be at least 1, got {self.trials}")
        if self.parallel < 1:
            raise ConfigError(f"--parallel must be at least 1, got {self.parallel}")
        if self.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {self.workers}")
        if self.pruner not in PRUNERS:
            raise ConfigError(f"--pruner: unknown pruner '{self.pruner}' (allowed: {', '.join(PRUNERS)})")
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"--objective: unknown objective '{self.objective}' (allowed: {', '.join(OBJECTIVES)})")
        if not 0 < self.validation_fraction < 1:
            raise ConfigError(f"--validation-fraction must be between 0 and 1, got {self.validation_fraction:g}")
        if self.epochs_per_round is not None and self.epochs_per_round < 1:
            raise ConfigError(f"--epochs-per-round must be at least 1, got {self.epochs_per_round}")
        if self.strategy not in (None, "neuron", "data"):
            raise ConfigError(f"--strategy: unknown strategy '{self.strategy}' (allowed: neuron, data)")
        if self.store_url.startswith("memory:") and self.executor != "local":
            raise ConfigError(f"memory:// lives in one process; use --store redis://… with the {self.executor} "
                              f"executor (or --executor local)")
        return parse_space(self.space, self.base)

    @property
    def base_config(self) -> TrainConfig:
        return parse_config(self.base, source="base config")

    @property
    def strategy_name(self) -> str:
        return self.strategy or ("data" if self.base_config.kind == "cnn" else "neuron")

    @property
    def round_epochs(self) -> int:
        if self.epochs_per_round is not None:
            return self.epochs_per_round
        return max(1, min(1000, math.ceil(int(self.base["epochs"]) / DEFAULT_RUNGS)))

    def to_attrs(self) -> dict[str, Any]:
        """The settings kept with the study (no secrets: URLs with a password are redacted)."""
        return {**asdict(self), "store_url": safe_url(self.store_url), "storage": safe_url(self.storage)}

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any], **overrides: Any) -> TuneRequest:
        known = {k: v for k, v in attrs.items() if k in cls.__dataclass_fields__}
        return cls(**{**known, **{k: v for k, v in overrides.items() if v is not None}})


@dataclass
class StudyResult:
    study: str
    status: str
    trials: int
    completed: int
    pruned: int
    failed: int
    best_trial: int | None
    best_run: str | None
    model: str | None  # name:version of the best trial, aliased staging
    best_params: dict[str, Any]
    best_config: dict[str, Any]
    objective: str
    best_value: float | None
    validation_cost: float | None
    validation_accuracy: float | None
    test_accuracy: float | None
    wall_seconds: float
    worker_seconds: float
    estimated_cost_usd: float
    storage: str
    trial_runs: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return json_safe(asdict(self))


def summary_key(study: str) -> str:
    return f"studies/{study}/summary.json"


def study_folder(services: Services, study: str) -> Path:
    return services.settings.home / "studies" / study


# ---- the split ---------------------------------------------------------------------------------
def _save_npz(path: Path, x: np.ndarray, y: np.ndarray, classes: list[str]) -> None:
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez(tmp, x=x, y=y, classes=np.array(classes, dtype=str))
    tmp.replace(path)


def write_split(dataset: Dataset, fraction: float, seed: int, folder: Path) -> tuple[Path, Path]:
    """``train.npz`` (what trial runs train on: no test arrays) and ``validation.npz``."""
    m = len(dataset.y_train)
    n_val = round(m * fraction)
    if n_val < 1 or n_val >= m:
        raise DataError(f"{dataset.source}: --validation-fraction {fraction:g} of {m} training samples leaves "
                        f"{n_val} for validation and {m - n_val} for training; both need at least one")
    perm = np.random.default_rng(seed).permutation(m)
    valid, train = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    folder.mkdir(parents=True, exist_ok=True)
    train_path, valid_path = folder / "train.npz", folder / "validation.npz"
    _save_npz(train_path, dataset.x_train[train], dataset.y_train[train], dataset.classes)
    _save_npz(valid_path, dataset.x_train[valid], dataset.y_train[valid], dataset.classes)
    return train_path, valid_path


# ---- optuna parts ------------------------------------------------------------------------------
def make_pruner(name: str, round_epochs: int, startup_trials: int) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=0)
    if name == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=round_epochs, reduction_factor=3)
    return optuna.pruners.NopPruner()


def make_sampler(seed: int) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def _finite(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


class _Stop(Exception):
    """The study is stopping (Ctrl-C, or another trial hit a fatal error)."""


# ---- the tuner ---------------------------------------------------------------------------------
class Tuner:
    """Runs (or resumes) one study; see the module docstring."""

    def __init__(self, services: Services, request: TuneRequest, *, on_event: Event | None = None,
                 resume: bool = False) -> None:
        self.services = services
        self.req = request
        self.space = request.check()
        self.on_event = on_event
        self.resuming = resume
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._fatal: BaseException | None = None
        self._active: dict[int, Any] = {}  # trial number -> its RunSession while it runs
        self.study: optuna.Study | None = None

    @classmethod
    def resume(cls, services: Services, study: str, *, storage: str = "file", on_event: Event | None = None,
               **overrides: Any) -> Tuner:
        """A tuner for an existing study, with the settings it was started with (``overrides``,
        e.g. ``parallel`` or a ``store_url`` holding a password, replace them)."""
        check_study_name(study)
        backend = open_journal(storage, study, services.settings.home, create=False)
        storage_obj = optuna.storages.JournalStorage(backend)
        try:
            loaded = optuna.load_study(study_name=study, storage=storage_obj)
        except KeyError:
            raise ConfigError(f"no study '{study}' in the study storage {safe_url(storage)}") from None
        attrs = loaded.user_attrs.get(ATTR)
        if not isinstance(attrs, dict):
            raise ConfigError(f"study '{study}' was not created by lambdanet tune (no settings); cannot resume it")
        if "***" in str(attrs.get("store_url", "")) and overrides.get("store_url") is None:
            raise ConfigError(f"study '{study}' used a store with a password ({attrs['store_url']}); pass the full "
                              f"URL with --store to resume it")
        request = TuneRequest.from_attrs(attrs, storage=storage, **overrides)
        return cls(services, request, on_event=on_event, resume=True)

    # ---- events --------------------------------------------------------------------------------
    def _event(self, kind: str, **fields: Any) -> None:
        if self.on_event is not None:
            with contextlib.suppress(Exception):
                self.on_event({"event": kind, "study": self.req.study, **json_safe(fields)})

    # ---- the study -----------------------------------------------------------------------------
    def _open_study(self) -> optuna.Study:
        req, home = self.req, self.services.settings.home
        if not self.resuming and journal_exists(req.storage, req.study, home):
            raise UserInputError(f"study '{req.study}' already exists in {safe_url(req.storage)}; continue it with "
                                 f"`lambdanet tune --study {req.study} --resume` or choose another --study")
        backend = open_journal(req.storage, req.study, home)
        storage = optuna.storages.JournalStorage(backend)
        direction = optuna.study.StudyDirection.MINIMIZE if req.objective == "cost" else \
            optuna.study.StudyDirection.MAXIMIZE
        study = optuna.create_study(study_name=req.study, storage=storage, direction=direction,
                                    sampler=make_sampler(req.seed),
                                    pruner=make_pruner(req.pruner, req.round_epochs, req.startup_trials),
                                    load_if_exists=True)
        if not isinstance(study.user_attrs.get(ATTR), dict):
            study.set_user_attr(ATTR, req.to_attrs())
        return study

    def _prepare_data(self) -> None:
        folder = study_folder(self.services, self.req.study)
        self.train_path, self.valid_path = folder / "train.npz", folder / "validation.npz"
        from lambdanet.data.readers import load_dataset

        if not (self.train_path.exists() and self.valid_path.exists()):
            full = load_dataset(self.req.data)  # the only read of the data before the end
            self.train_path, self.valid_path = write_split(full, self.req.validation_fraction, self.req.seed, folder)
            del full
        train = load_dataset(self.train_path)
        valid = load_dataset(self.valid_path)
        self.x_valid, self.y_valid, self.n_classes = valid.x_train, valid.y_train, valid.n_classes
        # the base config and the engine settings against the data, before any trial
        load_strategy(strategy_path(self.req.base_config.kind, self.req.strategy_name)).validate(
            self.req.base_config, self.req.workers, train)

    def run(self) -> StudyResult:
        t0 = time.time()
        req = self.req
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # lambdanet reports the trials itself
        self._prepare_data()
        self.study = study = self._open_study()
        self._resumable = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
        done = len(study.get_trials(deepcopy=False)) - len(self._resumable)
        self._event("study_started", trials=req.trials, parallel=req.parallel, executor=req.executor,
                    storage=safe_url(req.storage), resumed=self.resuming, finished_before=done,
                    continuing=[t.number for t in self._resumable], epochs_per_round=req.round_epochs)
        threads = [threading.Thread(target=self._slot, name=f"tune-{req.study}-{i}", daemon=True)
                   for i in range(req.parallel)]
        for t in threads:
            t.start()
        try:
            while any(t.is_alive() for t in threads):
                for t in threads:
                    t.join(0.2)
        except KeyboardInterrupt:
            self._interrupt(threads)
            raise Interrupted(f"study {req.study} interrupted; continue it with `lambdanet tune --study "
                              f"{req.study} --resume`") from None
        if self._fatal is not None:
            raise self._fatal
        return self._finalize(time.time() - t0)

    def _interrupt(self, threads: list[threading.Thread]) -> None:
        """Ctrl-C: trials stop at their next round boundary (waiting up to 10 s); a run still in a
        round is marked interrupted; the trials stay RUNNING in the study for --resume."""
        self._stop.set()
        deadline = time.monotonic() + 10.0
        with contextlib.suppress(KeyboardInterrupt):
            for t in threads:
                t.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            for session in list(self._active.values()):
                session.mark_interrupted()

    def _slot(self) -> None:
        while not self._stop.is_set():
            try:
                trial = self._next_trial()
                if trial is None:
                    return
                self._run_trial(trial)
            except _Stop:
                return
            except BaseException as exc:  # handed to the main thread
                with self._lock:
                    if self._fatal is None:
                        self._fatal = exc
                self._stop.set()
                return

    def _next_trial(self) -> optuna.Trial | None:
        assert self.study is not None
        with self._lock:
            if self._stop.is_set():
                return None
            if self._resumable:
                frozen = self._resumable.pop(0)
                return optuna.trial.Trial(self.study, frozen._trial_id)
            if len(self.study.get_trials(deepcopy=False)) >= self.req.trials:
                return None
            return self.study.ask(dict(self.space.distributions))

    # ---- one trial -----------------------------------------------------------------------------
    def _metrics_base(self, trial: optuna.Trial) -> dict[str, Any]:
        return {"study": self.req.study, "trial": trial.number, "params": dict(trial.params),
                "objective": self.req.objective}

    def _tell(self, trial: optuna.Trial, state: TrialState, value: float | None = None) -> None:
        assert self.study is not None
        if state == TrialState.COMPLETE:
            self.study.tell(trial, value)
        else:
            self.study.tell(trial, state=state)

    def _run_trial(self, trial: optuna.Trial) -> None:
        req, ledger = self.req, self.services.ledger
        number = trial.number
        run_id = trial.user_attrs.get("run_id")
        if not isinstance(run_id, str):
            run_id = new_run_id()
            trial.set_user_attr("run_id", run_id)  # before the run exists: a resume finds it
        try:
            config = self.space.config_for(req.base, dict(trial.params), source=f"trial {number} config")
        except ConfigError as exc:
            trial.set_user_attr("fail_reason", str(exc))
            self._tell(trial, TrialState.FAIL)
            self._event("trial_failed", trial=number, reason=str(exc), params=dict(trial.params))
            return
        rec = None
        with contextlib.suppress(RunNotFound):
            rec = ledger.get_run(run_id)
        if rec is None:
            request = TrainRequest(
                data=str(self.train_path), config=config, model_name=req.model_name, workers=req.workers,
                strategy=req.strategy_name, store_url=req.store_url, executor=req.executor,
                epochs_per_round=req.round_epochs, max_retries=req.max_retries)
            try:
                Driver(self.services).start(request, run_id)
            except (ConfigError, DataError) as exc:  # this trial's config does not fit the data
                trial.set_user_attr("fail_reason", str(exc))
                self._tell(trial, TrialState.FAIL)
                self._event("trial_failed", trial=number, reason=str(exc), params=dict(trial.params))
                return
            ledger.update_run(run_id, metrics=self._metrics_base(trial))
            self._event("trial_started", trial=number, run_id=run_id, params=dict(trial.params))
        else:
            ledger.update_run(run_id, metrics=self._metrics_base(trial))
            outcome = rec.metrics.get("outcome")
            if outcome is not None:  # decided by a driver that died before telling Optuna
                self._tell_recorded(trial, rec.metrics)
                return
            self._event("trial_continued", trial=number, run_id=run_id, params=dict(trial.params))
        self._drive(trial, run_id, config, rec.metrics if rec is not None else {})

    def _tell_recorded(self, trial: optuna.Trial, metrics: dict[str, Any]) -> None:
        outcome = metrics.get("outcome")
        if outcome == "completed":
            self._tell(trial, TrialState.COMPLETE, float(metrics["objective_value"]))
        elif outcome == "pruned":
            self._tell(trial, TrialState.PRUNED)
        else:
            trial.set_user_attr("fail_reason", str(metrics.get("fail_reason", "failed")))
            self._tell(trial, TrialState.FAIL)
        self._event(f"trial_{outcome}", trial=trial.number, recorded=True)

    def _drive(self, trial: optuna.Trial, run_id: str, config: TrainConfig, metrics: dict[str, Any]) -> None:
        req, ledger, number = self.req, self.services.ledger, trial.number
        curve: list[list[float | None]] = [list(p) for p in metrics.get("validation", [])]
        try:
            session = Driver(self.services).open_session(run_id)
        except LeaseHeld as exc:  # another live driver has it: leave the trial to that driver
            self._event("trial_skipped", trial=number, run_id=run_id, reason=str(exc))
            return
        with self._lock:
            self._active[number] = session
        try:
            while True:
                if self._stop.is_set():
                    raise _Stop
                step = session.next_round()
                score = evaluate(config, session.state(), self.x_valid, self.y_valid, self.n_classes)
                curve = [p for p in curve if p[0] != step.epochs_done]
                curve.append([step.epochs_done, _finite(score.cost), score.accuracy])
                ledger.update_run(run_id, metrics={"validation": curve, "validation_cost": _finite(score.cost),
                                                   "validation_accuracy": score.accuracy})
                if not score.finite or (step.last_cost is not None and not math.isfinite(step.last_cost)):
                    self._diverged(trial, session, run_id, step.epochs_done, step.last_cost, score)
                    return
                value = score.value(req.objective)
                trial.report(value, step.epochs_done)
                self._event("trial_round", trial=number, run_id=run_id, round=step.round, epoch=step.epochs_done,
                            epochs=step.epochs, validation_cost=score.cost, validation_accuracy=score.accuracy)
                if step.finished:
                    break
                if trial.should_prune():
                    self._pruned(trial, session, run_id, step.round, step.epochs_done, value)
                    return
            result = session.finish()
            ledger.update_run(run_id, metrics={"outcome": "completed", "objective_value": value})
            self._tell(trial, TrialState.COMPLETE, value)
            self._event("trial_completed", trial=number, run_id=run_id, value=value, epochs=step.epochs_done,
                        validation_cost=score.cost, validation_accuracy=score.accuracy, model=result.model,
                        worker_seconds=result.worker_seconds)
        except _Stop:
            session.mark_interrupted()
            raise
        except KeyboardInterrupt:  # pragma: no cover - signals reach the main thread
            session.mark_interrupted()
            raise
        except RunFailed as exc:  # the engine retried its rounds; recorded failed by the session
            self._failed(trial, run_id, str(exc))
        except StaleDriver:
            self._event("trial_skipped", trial=number, run_id=run_id, reason="another driver took the run over")
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
                self._active.pop(number, None)
            session.close()

    def _failed(self, trial: optuna.Trial, run_id: str, reason: str) -> None:
        self.services.ledger.update_run(run_id, metrics={"outcome": "failed", "fail_reason": reason})
        trial.set_user_attr("fail_reason", reason)
        self._tell(trial, TrialState.FAIL)
        self._event("trial_failed", trial=trial.number, run_id=run_id, reason=reason)

    def _diverged(self, trial: optuna.Trial, session: Any, run_id: str, epoch: int, train_cost: float | None,
                  score: Score) -> None:
        reason = (f"diverged: training cost {train_cost} and validation cost {score.cost} at epoch {epoch} "
                  f"(learning rate too high?); trial recorded as failed, the study goes on")
        self.services.ledger.update_run(run_id, status="failed", stop_reason="error", error=reason,
                                        ended_at=time.time(), metrics={"outcome": "failed", "fail_reason": reason,
                                                                       "epochs_done": epoch})
        trial.set_user_attr("fail_reason", reason)
        self._tell(trial, TrialState.FAIL)
        self._event("trial_failed", trial=trial.number, run_id=run_id, reason=reason)

    def _pruned(self, trial: optuna.Trial, session: Any, run_id: str, rnd: int, epoch: int, value: float) -> None:
        assert self.study is not None
        others = [t.intermediate_values[epoch] for t in self.study.get_trials(deepcopy=False)
                  if t.number != trial.number and epoch in t.intermediate_values
                  and t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        median = statistics.median(others) if others else None
        what = f"validation {self.req.objective} {value:.6g} at epoch {epoch} (round {rnd})"
        if median is not None:
            what += f"; median of the {len(others)} finished trials at that epoch {median:.6g}"
        reason = f"pruned by the {self.req.pruner} pruner: {what}"
        self.services.ledger.update_run(
            run_id, status="completed", stop_reason="pruned", ended_at=time.time(),
            metrics={"outcome": "pruned", "prune_reason": reason, "pruned_at_epoch": epoch, "pruned_at_round": rnd,
                     "epochs_done": epoch})
        trial.set_user_attr("prune_reason", reason)
        self._tell(trial, TrialState.PRUNED)
        self._event("trial_pruned", trial=trial.number, run_id=run_id, epoch=epoch, reason=reason)

    # ---- the end -------------------------------------------------------------------------------
    def _trial_runs(self, trials: list[FrozenTrial]) -> list[dict[str, Any]]:
        out = []
        for t in trials:
            run_id = t.user_attrs.get("run_id")
            metrics: dict[str, Any] = {}
            status = None
            if isinstance(run_id, str):
                with contextlib.suppress(RunNotFound):
                    rec = self.services.ledger.get_run(run_id)
                    metrics, status = rec.metrics, rec.status
            out.append({"trial": t.number, "state": t.state.name, "run_id": run_id, "run_status": status,
                        "params": t.params, "value": t.value, "epochs_done": metrics.get("epochs_done"),
                        "validation_cost": metrics.get("validation_cost"),
                        "validation_accuracy": metrics.get("validation_accuracy"),
                        "worker_seconds": metrics.get("worker_seconds", 0.0),
                        "estimated_cost_usd": metrics.get("estimated_cost_usd", 0.0),
                        "reason": t.user_attrs.get("prune_reason") or t.user_attrs.get("fail_reason")})
        return out

    def _finalize(self, wall_seconds: float) -> StudyResult:
        assert self.study is not None
        req, services, study = self.req, self.services, self.study
        trials = study.get_trials(deepcopy=False)
        runs = self._trial_runs(trials)
        counts = {s: sum(1 for t in trials if t.state == s) for s in
                  (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
        base = StudyResult(
            study=req.study, status="completed", trials=len(trials), completed=counts[TrialState.COMPLETE],
            pruned=counts[TrialState.PRUNED], failed=counts[TrialState.FAIL], best_trial=None, best_run=None,
            model=None, best_params={}, best_config={}, objective=req.objective, best_value=None,
            validation_cost=None, validation_accuracy=None, test_accuracy=None, wall_seconds=round(wall_seconds, 3),
            worker_seconds=round(sum(float(r["worker_seconds"] or 0) for r in runs), 3),
            estimated_cost_usd=round(sum(float(r["estimated_cost_usd"] or 0) for r in runs), 8),
            storage=safe_url(req.storage), trial_runs=runs)
        if counts[TrialState.COMPLETE] == 0:
            self._save_summary(replace(base, status="no_completed_trial"))
            raise RunFailed(f"study {req.study}: no trial completed ({base.pruned} pruned, {base.failed} failed of "
                            f"{base.trials}); see `lambdanet report --study {req.study}`")
        best = study.best_trial
        run_id = str(best.user_attrs["run_id"])
        rec = services.ledger.get_run(run_id)
        config = self.space.config_for(req.base, dict(best.params))
        model = rec.model or ""
        name, _, version = model.partition(":")
        if version.isdigit():
            services.registry.set_alias(name, "staging", int(version))  # never production: a human promotes
        test_score = self._test_score(config, run_id)
        if test_score is not None:
            services.ledger.update_run(run_id, metrics={"test_accuracy": test_score.accuracy,
                                                        "test_cost": _finite(test_score.cost),
                                                        "best_of_study": req.study})
        result = replace(
            base, best_trial=best.number, best_run=run_id, model=model or None, best_params=dict(best.params),
            best_config=config.model_dump(), best_value=best.value,
            validation_cost=rec.metrics.get("validation_cost"),
            validation_accuracy=rec.metrics.get("validation_accuracy"),
            test_accuracy=None if test_score is None else test_score.accuracy)
        self._save_summary(result)
        self._event("study_completed", best_trial=best.number, model=model, test_accuracy=result.test_accuracy)
        return result

    def _test_score(self, config: TrainConfig, run_id: str) -> Score | None:
        """The test set, read now for the first time, scored with the best trial's final state."""
        from lambdanet.data.readers import load_dataset

        full = load_dataset(self.req.data)
        if full.x_test is None or full.y_test is None:
            return None
        pointer = checkpoints.read_pointer(self.services.objects, run_id)
        assert pointer is not None
        state = checkpoints.read_state(self.services.objects, pointer["file"])
        return evaluate(config, state, full.x_test, full.y_test, full.n_classes)

    def _save_summary(self, result: StudyResult) -> None:
        assert self.study is not None
        payload = {**result.to_json(), "settings": self.req.to_attrs(), "finished_at": time.time()}
        self.services.objects.put(summary_key(self.req.study),
                                  json.dumps(payload, sort_keys=True, indent=1).encode())
        self.study.set_user_attr("summary", {k: v for k, v in payload.items() if k != "trial_runs"})
