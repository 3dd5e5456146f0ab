"""The Ledger port: the durable record of runs, their epochs and their worker calls.

Usage::

    ledger = adapters.open_ledger("sqlite:///home/me/.lambdanet/ledger.db")
    ledger.create_run(RunRecord(run_id="r-…", status="running", kind="mlp", config={…}, data="…"))
    ledger.upsert_epochs("r-…", [EpochRow("r-…", 1, cost=0.69, learning_rate=0.0075, seconds=0.003)])
    ledger.update_run("r-…", status="completed", metrics={"test_accuracy": 0.8})
    ledger.get_run("r-…")                  # RunNotFound if unknown
    ledger.claim("s3://b/training_input/x.h5#v1", "r-…")   # True once per key (idempotency)

Epoch rows are upserts keyed by (run_id, epoch): writing the same epoch twice leaves one row.
``update_run`` merges ``metrics`` into the stored dict and overwrites the other fields given.
Writes are atomic per call; vendor errors become :class:`lambdanet.errors.LedgerUnavailable`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

RUN_STATUSES = ("pending", "running", "completed", "failed", "interrupted")


@dataclass
class RunRecord:
    run_id: str
    status: str  # one of RUN_STATUSES
    kind: str  # "mlp" | "cnn"
    config: dict[str, Any]  # the validated training config + engine settings (no secrets)
    data: str  # where the data came from (path or URL)
    model: str | None = None  # "name" before it finishes, "name:version" after
    created_at: float = 0.0
    started_at: float | None = None
    ended_at: float | None = None
    stop_reason: str | None = None  # "epoch_limit" | "threshold" | "interrupted" | "error"
    error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class EpochRow:
    run_id: str
    epoch: int  # 1-based
    cost: float
    learning_rate: float
    seconds: float  # wall seconds of this epoch's compute
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. {"test_accuracy": 0.7}


@dataclass
class CallRow:
    """One worker call of one round attempt (for the report's timeline)."""

    run_id: str
    round: int
    attempt: int
    worker: int
    started_at: float
    ended_at: float
    ok: bool
    error: str | None = None


@runtime_checkable
class Ledger(Protocol):
    url: str

    def create_run(self, run: RunRecord) -> None: ...

    def update_run(self, run_id: str, **fields: Any) -> None: ...

    def get_run(self, run_id: str) -> RunRecord: ...

    def list_runs(self, limit: int = 100) -> list[RunRecord]:
        """Newest first."""

    def upsert_epochs(self, run_id: str, rows: list[EpochRow]) -> None: ...

    def epochs(self, run_id: str) -> list[EpochRow]:
        """Ordered by epoch."""

    def record_calls(self, run_id: str, rows: list[CallRow]) -> None: ...

    def calls(self, run_id: str) -> list[CallRow]: ...

    def claim(self, key: str, run_id: str) -> bool:
        """Atomically record that ``key`` belongs to ``run_id``; False if it was claimed before."""

    def claimed_by(self, key: str) -> str | None: ...

    def close(self) -> None: ...
