"""What crosses a boundary of the engine, as frozen pydantic models: JSON in, JSON out, no pickle.

Usage::

    spec = WorkerSpec(**settings.fields_of(WorkerSettings), run_id=…, round=3, attempt=0, worker=1, …)
    executor.run(run_worker, [spec.to_json(), …], timeout)       # the executor port carries JSON
    spec = WorkerSpec.from_json(raw)                              # the worker's side: checked once
    result = WorkerResult.from_json(outcome.result)               # the driver's side of the answer
    pointer = CheckpointPointer.from_json(raw)                    # runs/<id>/checkpoint.json
    step = session.next_round()                                   # a RoundStep (the durable step's result)

The messages:

* :class:`WorkerSpec` — what one worker call gets: the run's worker settings
  (:class:`~lambdanet.engine.requests.WorkerSettings`, every field written there once) plus the
  call's own (run, round, attempt, rank, checkpoint, epochs, test fault);
* :class:`WorkerResult` — what it gives back (``duplicate``: a second delivery that did nothing);
* :class:`Fault` — a test fault for the calls it matches (honoured with ``LAMBDANET_FAULTS=1``);
* :class:`Retry` — a failed attempt of a round (the run's ``retry_log``);
* :class:`CheckpointPointer` — the run's pointer to its newest checkpoint file;
* :class:`RoundStep` — what one committed round leaves behind.

A message read back ignores the fields it does not know (a newer writer's); the worker spec
refuses them (the driver and its workers are one release), and a bad value in it is one
:class:`~lambdanet.errors.ConfigError` line.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from lambdanet.engine.requests import Config, WorkerSettings

Extras = dict[str, JsonValue]  # one epoch's extra figures (EpochRow.extra), JSON


class Message(BaseModel):
    """Frozen; read back with the fields it knows."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    def to_json(self) -> dict[str, JsonValue]:
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, data: object) -> Self:
        return cls.model_validate(data)


class Fault(Message):
    """A test fault for the worker calls it matches (round, attempt = the try of the round, 0 first,
    and worker; None or "*": any). ``kill`` / ``stop`` (SIGSTOP) / ``raise`` / ``hang`` (``seconds``,
    default 5) fire after ``after_epochs`` epochs; ``late`` starts the call ``seconds`` late (default
    7: a cold start); ``once``: in one attempt of the run only, whatever its driver."""

    action: Literal["kill", "stop", "raise", "hang", "late"]
    round: int | Literal["*"] | None = None
    attempt: int | Literal["*"] | None = None
    worker: int = 0
    after_epochs: int = 1
    seconds: float | None = None
    once: bool = False

    def matches(self, rnd: int, attempt: int, worker: int) -> bool:
        return (self.round in (None, "*", rnd) and self.attempt in (None, "*", attempt)
                and self.worker == worker)


class WorkerSpec(WorkerSettings):
    """What one worker call gets (see :mod:`lambdanet.engine.worker`)."""

    run_id: str
    round: int
    attempt: int  # the attempt id (unique per run in the store), not the try of the round
    worker: int  # this call's rank, 0 … workers - 1
    strategy: str  # "module:Class" of the strategy
    config: Config
    objects_url: str
    checkpoint: str  # the state file to start from
    start_epoch: int
    end_epoch: int
    heartbeat: bool = False  # calls in the driver's own process have none (see engine.liveness)
    fault: Fault | None = None


class WorkerResult(Message):
    """What one worker call gives back."""

    worker: int
    duplicate: bool = False  # a second delivery of the spec: it did nothing
    epochs: int = 0  # epochs done in this call
    costs: list[float] = Field(default_factory=list)  # per epoch
    seconds: list[float] = Field(default_factory=list)
    stop_reason: str | None = None
    extras: list[Extras] = Field(default_factory=list)
    shard_keys: list[str] = Field(default_factory=list)  # its shard's arrays, under out_key(prefix, worker, name)
    sync_seconds: float = 0.0  # time inside collectives
    checkpoints: int = 0  # in-round checkpoints written
    checkpoint_write_seconds: float = 0.0  # time spent writing them
    collectives: int = 0
    setup_seconds: float = 0.0
    train_seconds: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0
    pid: int = 0
    threads: dict[str, int | None] = Field(default_factory=dict)  # BLAS / OpenMP / torch threads it ran with


class Retry(Message):
    """A failed attempt of a round, and the epoch its retry began from (the run's ``retry_log``;
    ``attempt`` -1: not a retry, the round went on from an in-round checkpoint a stopped driver left)."""

    round: int
    attempt: int
    reason: str
    from_epoch: int


class CheckpointPointer(Message):
    """``runs/<id>/checkpoint.json``: the run's newest checkpoint, written after its file."""

    round: int
    epochs_done: int
    file: str
    stop_reason: str | None = None
    last_cost: float | None = None


class RoundStep(Message):
    """What one committed round leaves behind (the durable round step's checkpointed result;
    ``handoff``: the next round does not fit in this invocation)."""

    round: int
    epochs_done: int
    epochs: int
    finished: bool
    seconds: float
    stop_reason: str | None = None
    last_cost: float | None = None
    handoff: bool = False
