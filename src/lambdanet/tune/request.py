"""What a study is asked to do and what it gives back: :class:`TuneRequest` (the study's settings,
kept with the study for ``--resume``), :class:`TrialState` (a trial's state, kept in its run's
metrics) and :class:`StudyResult` (its summary).

Usage::

    req = TuneRequest(study="lr-search", data="datasets.h5", base=base_dict, space=space_json, trials=32,
                      parallel=2, trial_driver="process")
    space = req.check()                         # every option and the space, before anything is written
    attrs = req.to_attrs()                      # the study's user attribute (URL passwords redacted)
    req2 = TuneRequest.from_attrs(attrs, parallel=4)
    ledger.update_run(run_id, metrics=TrialState(outcome="pruned", prune_reason=why).metrics())
    TrialState.of_metrics(ledger.get_run(run_id).metrics).outcome         # "pruned", typed

The engine's defaults (``max_retries``) are the engine's constants, written once in
:mod:`lambdanet.engine.requests`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from lambdanet.config import TrainConfig, parse_config
from lambdanet.cpu_budget import available_cores
from lambdanet.engine.requests import DEFAULT_MAX_RETRIES, safe_url
from lambdanet.engine.strategies import default_strategy, strategy_names
from lambdanet.errors import ConfigError
from lambdanet.journals import check_study_name
from lambdanet.tensors import json_safe
from lambdanet.tune.space import Space, parse_space

PRUNERS = ("median", "asha", "none")
OBJECTIVES = ("cost", "accuracy", "balanced_accuracy")
TRIAL_DRIVERS = ("thread", "process")
DEFAULT_RUNGS = 10  # default epochs_per_round = ceil(epochs / DEFAULT_RUNGS)
DEFAULT_STARTUP_TRIALS = 4
DEFAULT_WARMUP_ROUNDS = 0


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
    # on the validation split: "balanced_accuracy" (default: the mean of the classes' recalls, so a
    # majority-class predictor scores 1 / C) | "accuracy" (maximised, ties broken by cost) | "cost" (minimised)
    objective: str = "balanced_accuracy"
    validation_fraction: float = 0.2
    seed: int = 0  # the sampler's and the split's seed
    epochs_per_round: int | None = None  # None: ceil(epochs / 10), at most 1000
    max_retries: int = DEFAULT_MAX_RETRIES
    model_name: str = "model"
    startup_trials: int = DEFAULT_STARTUP_TRIALS  # trials that finish before the median pruner prunes
    warmup_rounds: int = DEFAULT_WARMUP_ROUNDS  # rounds of every trial the median pruner never prunes
    # "thread": P threads of this process drive the trials (the work is elsewhere: process/lithops);
    # "process": each of the P trials is driven by its own OS process (CPU-bound local trials: no GIL)
    trial_driver: str = "thread"

    def check(self) -> Space:
        """Every option and the space, before anything is written; returns the parsed space."""
        check_study_name(self.study)
        for name, value, low in (("--trials", self.trials, 1), ("--parallel", self.parallel, 1),
                                 ("--workers", self.workers, 1), ("--startup-trials", self.startup_trials, 0),
                                 ("--warmup-rounds", self.warmup_rounds, 0), ("--max-retries", self.max_retries, 0)):
            if value < low:
                raise ConfigError(f"{name} must be at least {low}, got {value}")
        for option, what, choice, allowed in (("--pruner", "pruner", self.pruner, PRUNERS),
                                              ("--objective", "objective", self.objective, OBJECTIVES),
                                              ("--trial-driver", "trial driver", self.trial_driver, TRIAL_DRIVERS)):
            if choice not in allowed:
                raise ConfigError(f"{option}: unknown {what} '{choice}' (allowed: {', '.join(allowed)})")
        if not 0 < self.validation_fraction < 1:
            raise ConfigError(f"--validation-fraction must be between 0 and 1, got {self.validation_fraction:g}")
        if self.epochs_per_round is not None and self.epochs_per_round < 1:
            raise ConfigError(f"--epochs-per-round must be at least 1, got {self.epochs_per_round}")
        if self.strategy is not None and self.strategy not in strategy_names():
            raise ConfigError(f"--strategy: unknown strategy '{self.strategy}' "
                              f"(allowed: {', '.join(strategy_names())})")
        if self.store_url.startswith("memory:") and self.executor != "local":
            raise ConfigError(f"memory:// lives in one process; use --store redis://… with the {self.executor} "
                              f"executor (or --executor local)")
        return parse_space(self.space, self.base)

    @property
    def base_config(self) -> TrainConfig:
        return parse_config(self.base, source="base config")

    @property
    def strategy_name(self) -> str:
        return self.strategy or default_strategy(self.base_config.kind)

    @property
    def round_epochs(self) -> int:
        if self.epochs_per_round is not None:
            return self.epochs_per_round
        return max(1, min(1000, math.ceil(int(self.base["epochs"]) / DEFAULT_RUNGS)))

    @property
    def cpu_threads(self) -> int:
        """Threads per worker: the machine's cores shared by the P trials running at once, K workers
        each (the trials of one tune driver share its machine whichever drives them)."""
        return max(1, available_cores() // (self.parallel * self.workers))

    def to_attrs(self) -> dict[str, Any]:
        """The settings kept with the study (no secrets: URLs with a password are redacted)."""
        return {**asdict(self), "store_url": safe_url(self.store_url), "storage": safe_url(self.storage)}

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any], **overrides: Any) -> TuneRequest:
        known = {k: v for k, v in attrs.items() if k in cls.__dataclass_fields__}
        return cls(**{**known, **{k: v for k, v in overrides.items() if v is not None}})


class TrialState(BaseModel):
    """A trial's state as its run's metrics hold it — the trial's durable record: who it is (study,
    trial number, params, objective), its validation score after each round and, once decided, its
    outcome, written before Optuna is told it (a resumed study tells a recorded outcome again
    instead of training the trial again). Every field is optional: :meth:`metrics` is a partial
    update of the run's metrics (the fields given), :meth:`of_metrics` reads them back (the run's
    other metrics ignored)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    study: str | None = None
    trial: int | None = None
    params: dict[str, JsonValue] = Field(default_factory=dict)
    objective: str | None = None
    # [epochs done, validation cost (None: not finite), validation accuracy] after each round
    validation: list[tuple[int, float | None, float]] = Field(default_factory=list)
    validation_cost: float | None = None
    validation_accuracy: float | None = None
    validation_balanced_accuracy: float | None = None
    outcome: Literal["completed", "pruned", "failed"] | None = None
    objective_value: float | None = None  # the value told to Optuna (completed)
    fail_reason: str | None = None
    prune_reason: str | None = None
    pruned_at_epoch: int | None = None
    pruned_at_round: int | None = None

    @classmethod
    def of_metrics(cls, metrics: Mapping[str, object]) -> TrialState:
        return cls.model_validate(metrics)

    def metrics(self) -> dict[str, JsonValue]:
        """The fields given to this object, as JSON for ``ledger.update_run(metrics=…)``."""
        return self.model_dump(mode="json", exclude_unset=True)


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
        out: dict[str, Any] = json_safe(asdict(self))
        return out


def summary_key(study: str) -> str:
    return f"studies/{study}/summary.json"


def study_folder(home: Path, study: str) -> Path:
    return home / "studies" / study
