"""The Ledger port: the durable record of runs, their epochs and their worker calls.

Usage::

    ledger = adapters.open_ledger("sqlite:///home/me/.lambdanet/ledger.db")
    ledger.create_run(RunRecord(run_id="r-…", status="running", kind="mlp", config={…}, data="…"))
    ledger.upsert_epochs("r-…", [EpochRow("r-…", 1, cost=0.69, learning_rate=0.0075, seconds=0.003)])
    ledger.update_run("r-…", status="completed", metrics={"test_accuracy": 0.8})
    ledger.get_run("r-…")                  # RunNotFound if unknown
    ledger.claim("s3://b/training_input/x.h5#v1", "r-…")   # True once per key (idempotency)
    lease = ledger.acquire_lease("r-…", holder="exec-1/inv-7", execution="exec-1", ttl_s=60)
    ledger.renew_lease("r-…", lease, ttl_s=60)      # StaleDriver once another driver took over
    ledger.release_lease("r-…", lease)

Epoch rows are upserts keyed by (run_id, epoch): writing the same epoch twice leaves one row. A
driver writes a round's rows while the round runs (live progress, ``extra["provisional"] = True``)
and again when it commits the round, which replaces them; ``delete_epochs(run_id, after=N)`` drops
the rows past epoch N (a round given up: failed or interrupted).
``update_run`` merges ``metrics`` into the stored dict and overwrites the other fields given.
Writes are atomic per call; vendor errors become :class:`lambdanet.errors.LedgerUnavailable`.

**The run's lease** decides which driver drives a run (one conditional write per call). A driver
acquires it before its first round, renews it before it commits each round, and keeps it alive
from a thread every third of its short time to live (60 s by default, see
:mod:`lambdanet.engine.session`), so an expired lease means a driver that stopped. Acquiring
succeeds when there is no lease, when it has expired, when it is held by the same *execution*
(a replay of a durable execution, or a retried invocation, takes over from its own earlier
invocation) or when the caller names the current holder in ``steal_from`` (a local driver whose
process is gone); otherwise :class:`lambdanet.errors.LeaseHeld`. Every acquisition increments
``generation``; a renewal with an older generation raises :class:`lambdanet.errors.StaleDriver`,
so a zombie invocation that was replayed can never commit another round.
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


@dataclass(frozen=True)
class Lease:
    """Who drives a run: ``holder`` (one driver invocation or process), the ``execution`` it belongs
    to, the ``generation`` of this acquisition, and when it lapses unless renewed."""

    run_id: str
    holder: str
    execution: str
    generation: int
    expires_at: float


def lease_refused(current: Lease | None, holder: str, execution: str, now: float,
                  steal_from: str | None) -> str | None:
    """Why ``holder`` may not take the run's lease from ``current`` (None: it may). The one rule
    every ledger applies inside its conditional write."""
    if (current is None or current.expires_at <= now or current.execution == execution
            or current.holder == holder or (steal_from is not None and current.holder == steal_from)):
        return None
    left = current.expires_at - now
    return (f"run {current.run_id} is driven by {current.holder} (lease for {left:.0f} s more); "
            f"wait for it to end, or resume the run after that")


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

    def delete_epochs(self, run_id: str, after: int) -> int:
        """Drop the rows of epochs > ``after``; returns how many there were."""

    def record_calls(self, run_id: str, rows: list[CallRow]) -> None: ...

    def calls(self, run_id: str) -> list[CallRow]: ...

    def claim(self, key: str, run_id: str) -> bool:
        """Atomically record that ``key`` belongs to ``run_id``; False if it was claimed before."""

    def claimed_by(self, key: str) -> str | None: ...

    def acquire_lease(self, run_id: str, holder: str, execution: str, ttl_s: float,
                      steal_from: str | None = None) -> Lease:
        """Take the run's lease (see the module docstring) or raise LeaseHeld."""

    def renew_lease(self, run_id: str, lease: Lease, ttl_s: float) -> Lease:
        """Extend ``lease``; StaleDriver if the run's lease is no longer this one."""

    def release_lease(self, run_id: str, lease: Lease) -> None:
        """Drop the lease if it is still this one (a finished or failed driver); else nothing."""

    def get_lease(self, run_id: str) -> Lease | None: ...

    def close(self) -> None: ...
