"""What a run is asked to do and what it gives back: :class:`TrainRequest`, :class:`RunResult`,
the progress sink, and the engine settings a run records (:class:`EngineSettings`, written and
read here only).

Usage::

    req = TrainRequest(data="datasets.h5", config=config, workers=2, store_url="redis://…")
    record = engine_settings(req, target, memory_mb)           # stored as config["engine"] (JSON)
    settings = EngineSettings.of_run(ledger.get_run(run_id))   # read back, typed
    settings.cpu_budget.threads                                 # threads per worker the run had
    req2 = request_from_record(ledger.get_run(run_id))         # the same request, for resume
"""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lambdanet import adapters
from lambdanet.config import CNNConfig, MLPConfig, parse_config
from lambdanet.errors import ConfigError
from lambdanet.executors.cpu_budget import CpuBudget, plan_budget
from lambdanet.ports.ledger import RunRecord

DEFAULT_ROUND_SECONDS = 300.0
DEFAULT_MAX_RETRIES = 3
DEFAULT_COLLECTIVE_TIMEOUT_S = 60.0
DEFAULT_CHECKPOINT_SECONDS = 1.0  # in-round checkpoints: a fault redoes at most about this much work
DEFAULT_START_DEADLINE_S = 120.0  # a worker call that has not started by then (a cold start) has failed
DEFAULT_LIVENESS_DEADLINE_S = 3.0  # a started worker whose heartbeat lapses this long has failed (hung)


@dataclass(frozen=True)
class TrainRequest:
    data: str  # path/URL of the data set
    config: MLPConfig | CNNConfig
    model_name: str = "itsacat"
    workers: int = 1
    strategy: str = "neuron"  # "neuron" | "data" (CNN: "data")
    store_url: str = "memory://"
    executor: str = "local"  # "local" | "process" | "lithops"
    epochs_per_round: int | None = None  # None: the strategy's default (min(epochs, 1000) for MLPs)
    round_seconds: float = DEFAULT_ROUND_SECONDS  # seconds budget per round, below any function limit
    max_retries: int = DEFAULT_MAX_RETRIES
    collective_timeout_s: float = DEFAULT_COLLECTIVE_TIMEOUT_S
    checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS  # in-round checkpoints bound a fault's loss
    lambda_memory_mb: int | None = None  # for the cost estimate; None: $LAMBDANET_LAMBDA_MEMORY_MB or 2048
    cpu_threads: int | None = None  # threads per worker; None: the executor's share, cores // workers, at least 1
    start_deadline_s: float = DEFAULT_START_DEADLINE_S  # see lambdanet.engine.liveness
    liveness_deadline_s: float = DEFAULT_LIVENESS_DEADLINE_S


class ProgressSink(Protocol):
    """Where a driver reports a run's progress: ``start`` once, then ``update`` for every epoch
    in order, each once — while a round runs from a thread of the driver (live progress, about a
    second behind the workers), the rest when the round commits — then ``finish``."""

    def start(self, total_epochs: int, done_epochs: int) -> None: ...

    def update(self, epoch: int, cost: float) -> None:
        """``epoch`` is 1-based (the number of epochs done); called from one thread at a time."""

    def finish(self) -> None: ...


@dataclass
class RunResult:
    run_id: str
    status: str
    epochs_run: int
    final_cost: float | None
    train_accuracy: float | None
    test_accuracy: float | None
    wall_seconds: float
    model: str | None
    workers: int
    strategy: str
    rounds: int
    retries: int
    store_bytes: int
    worker_calls: int
    worker_seconds: float
    estimated_cost_usd: float
    stop_reason: str | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def new_run_id() -> str:
    return time.strftime("r-%Y%m%d-%H%M%S-", time.gmtime()) + secrets.token_hex(3)


def safe_url(url: str) -> str:
    """``url`` with its secrets redacted, or exactly ``url`` when it has none (so that a stored
    ``memory://`` or ``redis://host:6379/0`` can be reopened on resume)."""
    redacted = adapters.redact(url)
    return redacted if "***" in redacted else url


class EngineSettings(BaseModel):
    """The engine settings a run records as ``config["engine"]`` (no secrets). Rows written
    before a field existed read back with its default (``cpu_budget``: source "none")."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    workers: int = Field(default=1, ge=1)
    strategy: str = "neuron"
    strategy_target: str | None = None  # "module:Class" the workers load
    store_url: str = "memory://"  # redacted when it has a password
    executor: str = "local"
    epochs_per_round: int | None = None
    round_seconds: float = DEFAULT_ROUND_SECONDS
    max_retries: int = DEFAULT_MAX_RETRIES
    collective_timeout_s: float = DEFAULT_COLLECTIVE_TIMEOUT_S
    checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS
    lambda_memory_mb: int | None = None
    model_name: str | None = None
    cpu_threads: int | None = None  # the request's override (None: the executor's share)
    start_deadline_s: float = Field(default=DEFAULT_START_DEADLINE_S, gt=0)
    liveness_deadline_s: float = Field(default=DEFAULT_LIVENESS_DEADLINE_S, gt=0)
    cpu_budget: CpuBudget = Field(default_factory=CpuBudget)  # what the executor applies per worker

    @classmethod
    def from_config(cls, config: dict[str, Any], *, source: str) -> EngineSettings:
        """The settings under ``config["engine"]`` (defaults when absent); ConfigError when malformed."""
        raw = config.get("engine")
        try:
            return cls.model_validate(raw if isinstance(raw, dict) else {})
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise ConfigError(f"{source}: engine setting {where}: {err['msg']}") from None

    @classmethod
    def of_run(cls, rec: RunRecord) -> EngineSettings:
        return cls.from_config(rec.config, source=f"run {rec.run_id} config")

    def to_record(self) -> dict[str, Any]:
        """The JSON stored as ``config["engine"]``."""
        return self.model_dump(mode="json")


def engine_settings(req: TrainRequest, target: str, memory_mb: int) -> dict[str, Any]:
    """The run's engine settings as recorded in ``config["engine"]`` (JSON, no secrets), with the
    CPU budget its executor applies per worker (the same policy the executor runs)."""
    if req.cpu_threads is not None and req.cpu_threads < 1:
        raise ConfigError(f"cpu_threads must be at least 1 (threads per worker), got {req.cpu_threads}")
    return EngineSettings(
        workers=req.workers, strategy=req.strategy, strategy_target=target, store_url=safe_url(req.store_url),
        executor=req.executor, epochs_per_round=req.epochs_per_round, round_seconds=req.round_seconds,
        max_retries=req.max_retries, collective_timeout_s=req.collective_timeout_s,
        checkpoint_seconds=req.checkpoint_seconds, lambda_memory_mb=memory_mb, model_name=req.model_name,
        cpu_threads=req.cpu_threads, start_deadline_s=req.start_deadline_s,
        liveness_deadline_s=req.liveness_deadline_s,
        cpu_budget=plan_budget(adapters.scheme_of(req.executor), req.workers, req.cpu_threads),
    ).to_record()


def request_from_record(rec: RunRecord, *, store_url: str | None = None, executor: str | None = None) -> TrainRequest:
    """The request a run was started with, from its ledger record (``store_url``/``executor``
    override the recorded ones; a recorded store URL with a redacted password needs ``store_url``)."""
    cfg = dict(rec.config)
    engine = EngineSettings.of_run(rec)
    cfg.pop("engine", None)
    config = parse_config(cfg, source=f"run {rec.run_id} config")
    url = store_url or engine.store_url
    if "***" in url:
        raise ConfigError(f"run {rec.run_id} used a store with a password ({url}); pass the full URL "
                          f"with --store to resume it")
    return TrainRequest(
        data=rec.data, config=config,
        model_name=engine.model_name or (rec.model or "model").split(":")[0],
        workers=engine.workers, strategy=engine.strategy, store_url=url,
        executor=executor or engine.executor, epochs_per_round=engine.epochs_per_round,
        round_seconds=engine.round_seconds, max_retries=engine.max_retries,
        collective_timeout_s=engine.collective_timeout_s, checkpoint_seconds=engine.checkpoint_seconds,
        lambda_memory_mb=engine.lambda_memory_mb, cpu_threads=engine.cpu_threads,
        start_deadline_s=engine.start_deadline_s, liveness_deadline_s=engine.liveness_deadline_s,
    )
