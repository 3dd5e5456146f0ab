"""One typed view of a ledger run for the readers of runs — the report and the live dashboard —
so neither reaches into the other's internals or re-reads ``config["engine"]`` as a dict.

Usage::

    view = RunView.of(ledger.get_run(run_id))
    view.engine.workers, view.engine.cpu_budget.threads, view.training["epochs"]
    setting(run, "workers")            # metrics, then the engine settings, then the config
    epochs_done(run, epochs)           # the last epoch row, else what the metrics say
    clean_json(payload)                # NaN -> None, numpy -> Python, URLs redacted

Nothing here raises for a half-written or old run: a run whose engine settings cannot be read
(written by an older version, or damaged) reads as the defaults, with no field marked as set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel

from lambdanet import adapters
from lambdanet.engine.requests import EngineSettings
from lambdanet.errors import ConfigError
from lambdanet.ports.ledger import EpochRow, RunRecord


@dataclass(frozen=True)
class RunView:
    """A run as its readers see it: the record, its typed engine settings and its training config."""

    run: RunRecord
    engine: EngineSettings
    training: dict[str, Any]  # the model's training config (flat, or the one under "config")

    @classmethod
    def of(cls, run: RunRecord) -> RunView:
        try:
            engine = EngineSettings.of_run(run)
        except ConfigError:  # an unreadable row: defaults, none of them marked as recorded
            engine = EngineSettings()
        return cls(run=run, engine=engine, training=training_config(run))

    def recorded(self, key: str) -> Any:
        """The engine setting ``key`` when the run recorded it (JSON-able), else None."""
        if key not in self.engine.model_fields_set:
            return None
        value = getattr(self.engine, key)
        return value.model_dump(mode="json") if isinstance(value, BaseModel) else value

    def setting(self, key: str) -> Any:
        """An engine setting (workers, strategy, executor, …): metrics first, then the recorded
        engine settings, then the config (flat, or under ``"config"``: older rows)."""
        for value in (self.run.metrics.get(key), self.recorded(key), self.run.config.get(key),
                      self.training.get(key)):
            if value is not None:
                return value
        return None


def clean_json(value: Any) -> Any:
    """NaN/inf -> None and numpy scalars -> Python, recursively (JSON has no NaN); URLs redacted."""
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str) and "://" in value:
        return adapters.redact(value)
    return value


def training_config(run: RunRecord) -> dict[str, Any]:
    """The model's training config inside ``run.config`` (flat, or nested under ``"config"``)."""
    inner = run.config.get("config")
    return inner if isinstance(inner, dict) else run.config


def setting(run: RunRecord, key: str) -> Any:
    """``RunView.of(run).setting(key)``: an engine setting, from the metrics, the recorded engine
    settings or the config."""
    return RunView.of(run).setting(key)


def epochs_done(run: RunRecord, epochs: list[EpochRow] | None = None) -> int | None:
    """Epochs the run has done: the last epoch row, else what its metrics say."""
    if epochs:
        return epochs[-1].epoch
    for key in ("epochs_run", "epochs_done"):
        if isinstance(run.metrics.get(key), int):
            return int(run.metrics[key])
    return 0 if epochs is not None else None


def retry_lines(retry_log: Any) -> list[str]:
    """One line per failed attempt of a run (its metric ``retry_log``), with the reason the engine
    recorded — ``"round 1 attempt 0: worker 2: no heartbeat for 3 s (retried from epoch 140)"``;
    a driver that went on from an earlier driver's in-round checkpoint says so."""
    lines: list[str] = []
    for entry in retry_log if isinstance(retry_log, list) else []:
        if not isinstance(entry, dict):
            continue
        reason = " ".join(str(entry.get("reason") or "no reason recorded").split())
        where = f"round {entry.get('round')}"
        if isinstance(entry.get("attempt"), int) and entry["attempt"] >= 0:
            where += f" attempt {entry['attempt']}"
            tail = f" (retried from epoch {entry.get('from_epoch')})"
        else:
            tail = f" (from epoch {entry.get('from_epoch')})"
        lines.append(f"{where}: {reason}{tail}")
    return lines
