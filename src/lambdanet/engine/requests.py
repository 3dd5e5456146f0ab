"""What a run is asked to do and what it gives back: the engine settings (:class:`RunSettings`,
every setting written once here with its default and its check), the request
(:class:`TrainRequest` = settings + data + config + model name), the settings a run records
(:class:`EngineSettings`), :class:`RunResult` and the progress sink.

Usage::

    settings = RunSettings(workers=2, store_url="redis://…", checkpoint_seconds=0.5)  # ConfigError if bad
    req = TrainRequest(data="datasets.h5", config=config, workers=2, store_url="redis://…")
    req = TrainRequest.of(settings, data="datasets.h5", config=config, model_name="cats")  # the same
    record = engine_settings(req, target, memory_mb, budget)   # stored as config["engine"] (JSON)
    settings = EngineSettings.of_run(ledger.get_run(run_id))   # read back, typed
    settings.cpu_budget.threads                                 # threads per worker the run had
    req2 = request_from_record(ledger.get_run(run_id))         # the same request, for resume

The settings are layered, each layer a subclass that adds fields, so no field is ever listed
twice: :class:`WorkerSettings` (what every worker call of the run gets, see
:class:`lambdanet.engine.messages.WorkerSpec`) < :class:`RunSettings` (the driver's too) <
:class:`TrainRequest` and :class:`EngineSettings`. A bad value is one :class:`ConfigError` line
naming the option (``--round-seconds must be a positive number of seconds, got 0``), raised when
the object is made — the only place a setting is checked.
"""

from __future__ import annotations

import math
import secrets
import time
from typing import Annotated, Any, Protocol, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    ModelWrapValidatorHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from lambdanet import adapters
from lambdanet.config import CNNConfig, MLPConfig, TrainConfig, format_validation_error, parse_config
from lambdanet.cpu_budget import CpuBudget
from lambdanet.errors import ConfigError
from lambdanet.ports.ledger import RunRecord

DEFAULT_ROUND_SECONDS = 300.0
DEFAULT_MAX_RETRIES = 3
DEFAULT_COLLECTIVE_TIMEOUT_S = 60.0
DEFAULT_CHECKPOINT_SECONDS = 1.0  # in-round checkpoints: a fault redoes at most about this much work
DEFAULT_START_DEADLINE_S = 120.0  # a worker call that has not started by then (a cold start) has failed
DEFAULT_LIVENESS_DEADLINE_S = 3.0  # a started worker whose heartbeat lapses this long has failed (hung)
STARTUP_GRACE_S = 120.0  # process start, imports, data load — on top of a round's budget
MAX_START_DEADLINE_S = 3600.0
MAX_LIVENESS_DEADLINE_S = 600.0


def _at_least(name: str, low: int) -> AfterValidator:
    """An integer setting (None allowed where the field allows it) of at least ``low``."""

    def check(value: int | None) -> int | None:
        if value is not None and value < low:
            raise ValueError(f"{name} must be at least {low}, got {value}")
        return value

    return AfterValidator(check)


def _seconds(name: str, most: float = math.inf) -> AfterValidator:
    """A positive, finite number of seconds (at most ``most``)."""

    def check(value: float) -> float:
        if not 0 < value < math.inf or value > most:  # NaN fails the first test
            limit = "" if most == math.inf else f" of at most {most:g}"
            raise ValueError(f"{name} must be a positive number of seconds{limit}, got {value:g}")
        return value

    return AfterValidator(check)


def _config(value: object) -> object:
    """A config given as JSON (a dict) is parsed as :func:`lambdanet.config.parse_config` does."""
    return parse_config(value, source="config") if isinstance(value, dict) else value


Config = Annotated[MLPConfig | CNNConfig, BeforeValidator(_config)]


class _Settings(BaseModel):
    """Frozen; unknown fields are refused; a bad value is one ConfigError line."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="wrap")
    @classmethod
    def _one_line(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:  # pydantic's signature
        try:
            return handler(data)
        except ValidationError as exc:
            raise ConfigError(_problem(exc, cls)) from None

    def fields_of(self, layer: type[_Settings]) -> dict[str, object]:
        """The values of ``layer``'s fields (a base class of this one), to build another layer from."""
        return {name: getattr(self, name) for name in layer.model_fields}

    def replace(self, **changes: object) -> Self:
        """A copy with ``changes``, checked like a new one (``model_copy`` checks nothing)."""
        return type(self).model_validate({**dict(self), **changes})

    def to_json(self) -> dict[str, JsonValue]:
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, data: object) -> Self:
        return cls.model_validate(data)


def _problem(exc: ValidationError, model: type[BaseModel]) -> str:
    """The first problem of ``exc`` in one line: a setting's own message names its option."""
    err = exc.errors()[0]
    if err["type"] == "value_error":
        return str(err["msg"]).removeprefix("Value error, ")
    return format_validation_error(exc, "engine settings", model)


class WorkerSettings(_Settings):
    """The settings every worker call of a run gets (see :class:`~lambdanet.engine.messages.WorkerSpec`)."""

    workers: Annotated[int, _at_least("--workers", 1)] = 1
    store_url: str = "memory://"  # with its password in a request; redacted when recorded
    round_seconds: Annotated[float, _seconds("--round-seconds")] = DEFAULT_ROUND_SECONDS  # a round's budget
    collective_timeout_s: Annotated[float, _seconds("collective_timeout_s")] = DEFAULT_COLLECTIVE_TIMEOUT_S
    # workers checkpoint inside a round this often, so a fault loses at most about this much work
    checkpoint_seconds: Annotated[float, _seconds("--checkpoint-seconds")] = DEFAULT_CHECKPOINT_SECONDS
    # threads per worker; None: the executor's share, cores // workers, at least 1 (lambdanet.cpu_budget)
    cpu_threads: Annotated[int | None, _at_least("--cpu-threads", 1)] = None
    # a call that has not started by then has failed; a started one whose heartbeat lapses this long
    # has failed (hung) — see lambdanet.engine.liveness
    start_deadline_s: Annotated[float, _seconds("--start-deadline", MAX_START_DEADLINE_S)] = DEFAULT_START_DEADLINE_S
    liveness_deadline_s: Annotated[float, _seconds("--liveness-deadline", MAX_LIVENESS_DEADLINE_S)] = (
        DEFAULT_LIVENESS_DEADLINE_S)


class RunSettings(WorkerSettings):
    """Every engine setting of a run, with its default and its check (the only one)."""

    strategy: str = "neuron"  # "neuron" | "data" (CNN: "data"); the registry checks it
    executor: str = "local"  # "local" | "process" | "lithops"
    epochs_per_round: Annotated[int | None, _at_least("--epochs-per-round", 1)] = None  # None: the strategy's
    max_retries: Annotated[int, _at_least("--max-retries", 0)] = DEFAULT_MAX_RETRIES  # of a failed round
    lambda_memory_mb: Annotated[int | None, _at_least("lambda_memory_mb", 1)] = None  # None: the env's or 2048
    device: str | None = None  # cpu | cuda | cuda:N for a CNN config (None: the config's own "device")

    @property
    def round_timeout_s(self) -> float:
        """How long one attempt of a round may take, start-up included."""
        return self.round_seconds + 2 * self.collective_timeout_s + STARTUP_GRACE_S


class TrainRequest(RunSettings):
    """What a run is asked to do: the engine settings, the data, the config and the model's name."""

    data: str  # path/URL of the data set
    config: Config
    model_name: str = "itsacat"

    @classmethod
    def of(cls, settings: RunSettings, **rest: object) -> TrainRequest:
        """``settings`` plus ``data``, ``config`` and ``model_name``."""
        return cls.model_validate({**settings.fields_of(RunSettings), **rest})

    @field_validator("config")
    @classmethod
    def _device(cls, config: TrainConfig, info: ValidationInfo) -> TrainConfig:
        """``device`` replaces the CNN config's own (the config's check applies); an MLP runs on the CPU."""
        device = info.data.get("device")
        if device is None:
            return config
        if not isinstance(config, CNNConfig):
            if device == "cpu":
                return config
            raise ValueError("--device: the numpy MLP runs on the CPU only; --device is for CNN configs")
        try:
            return parse_config({**config.model_dump(), "device": device}, source="--device")
        except ConfigError:
            raise ValueError(f"--device: unknown device {device!r} (allowed: cpu, cuda, cuda:N)") from None


class EngineSettings(RunSettings):
    """The engine settings a run records as ``config["engine"]`` (no secrets). Rows written before
    a field existed read back with its default (``cpu_budget``: source "none"); unknown fields
    (a newer writer's) are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    strategy_target: str | None = None  # "module:Class" the workers load
    model_name: str | None = None
    cpu_budget: CpuBudget = Field(default_factory=CpuBudget)  # what the executor applies per worker

    @classmethod
    def from_config(cls, config: dict[str, JsonValue], *, source: str) -> EngineSettings:
        """The settings under ``config["engine"]`` (defaults when absent); ConfigError when malformed."""
        raw = config.get("engine")
        try:
            return cls.model_validate(raw if isinstance(raw, dict) else {})
        except ConfigError as exc:
            raise ConfigError(f"{source}: engine setting: {exc}") from None

    @classmethod
    def of_run(cls, rec: RunRecord) -> EngineSettings:
        return cls.from_config(rec.config, source=f"run {rec.run_id} config")

    def to_record(self) -> dict[str, JsonValue]:
        """The JSON stored as ``config["engine"]``."""
        return self.model_dump(mode="json")


class ProgressSink(Protocol):
    """Where a driver reports a run's progress: ``start`` once, then ``update`` for every epoch
    in order, each once — while a round runs from a thread of the driver (live progress, about a
    second behind the workers), the rest when the round commits — then ``finish``."""

    def start(self, total_epochs: int, done_epochs: int) -> None: ...

    def update(self, epoch: int, cost: float) -> None:
        """``epoch`` is 1-based (the number of epochs done); called from one thread at a time."""

    def finish(self) -> None: ...


class RunResult(BaseModel):
    """What a driven run gives back (``--json`` prints :meth:`to_json`)."""

    model_config = ConfigDict(frozen=True)

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

    def to_json(self) -> dict[str, JsonValue]:
        return self.model_dump(mode="json")


def new_run_id() -> str:
    return time.strftime("r-%Y%m%d-%H%M%S-", time.gmtime()) + secrets.token_hex(3)


def safe_url(url: str) -> str:
    """``url`` with its secrets redacted, or exactly ``url`` when it has none (so that a stored
    ``memory://`` or ``redis://host:6379/0`` can be reopened on resume)."""
    redacted = adapters.redact(url)
    return redacted if "***" in redacted else url


def engine_settings(req: TrainRequest, target: str, memory_mb: int, budget: CpuBudget) -> dict[str, JsonValue]:
    """The run's engine settings as recorded in ``config["engine"]`` (JSON, no secrets), with the
    CPU budget its executor applies per worker (``executor.planned_budget``)."""
    return EngineSettings.model_validate({
        **req.fields_of(RunSettings), "store_url": safe_url(req.store_url), "lambda_memory_mb": memory_mb,
        "strategy_target": target, "model_name": req.model_name,
        "cpu_budget": budget,
    }).to_record()


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
    return TrainRequest.of(engine.replace(store_url=url, executor=executor or engine.executor), data=rec.data,
                           config=config, model_name=engine.model_name or (rec.model or "model").split(":")[0])

