"""The small interface every training strategy implements, and the context a worker gives it.

A strategy is how K workers share one model. The engine (driver, rounds, checkpoints,
collectives, retries, accounting) is the same for all of them; a strategy only answers:

* ``validate(config, workers, dataset)`` — refuse impossible combinations with a ConfigError;
* ``initial_state(config, dataset)`` — the full state before epoch 0 (params + optimizer),
  a flat ``dict[str, np.ndarray]`` (safetensors-ready);
* ``run_round(ctx)`` — *worker side*: train epochs ``ctx.start_epoch … ctx.end_epoch - 1``
  from ``ctx.state``, synchronising through ``ctx.comm``; return the costs and this worker's
  shard of the new state;
* ``merge(config, shards)`` — *driver side*: the K shards (worker order) -> the full state;
* ``finish(config, state, dataset)`` — *driver side*: weights, model metadata and accuracies
  for the registry;
* ``default_epochs_per_round(config)``.

Rules a ``run_round`` follows: every worker calls the same collectives in the same order;
after each epoch it calls ``ctx.epoch_done(epochs_done)`` (fault injection in tests) and stops
when the round's budget is spent (``ctx.decide(epochs_done)``, a collective decision, the same on
every worker) or when the epoch cost is ``<= threshold`` (threshold > 0) — the cost must be
identical on every worker, so every worker stops at the same epoch.

In-round checkpoints: the same ``ctx.decide`` says when ``checkpoint_seconds`` seconds have passed
since the last checkpoint — one tiny all-reduce of ``[over_time, checkpoint_due]`` every
``TIME_CHECK_EVERY`` epochs (K = 1 decides locally, every epoch), so every worker checkpoints at
the same epoch; then each calls ``ctx.save_checkpoint(epochs_done, shard, costs, seconds)`` with
the shard its round report would return (see :mod:`lambdanet.engine.round_checkpoints`).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from lambdanet.config import CNNConfig, MLPConfig, TrainConfig
from lambdanet.data.dataset import Dataset
from lambdanet.engine.collectives import Collective
from lambdanet.engine.messages import Extras, Fault
from lambdanet.errors import WorkerFailed
from lambdanet.nn.reference import gather_columns

State = dict[str, np.ndarray]

TIME_CHECK_EVERY = 8  # epochs between collective "out of time?" decisions when K > 1


@dataclass
class RoundReport:
    """What one worker returns from a round."""

    costs: list[float]  # one per epoch done, in order
    seconds: list[float]  # wall seconds of each epoch
    stop_reason: str | None  # "threshold" when the cost reached it, else None
    shard: State  # this worker's part of the new state (merged by the driver)
    extras: list[Extras] = field(default_factory=list)  # per epoch, JSON -> EpochRow.extra


@dataclass
class FinishedModel:
    """What the driver registers at the end of a run."""

    weights: State
    metadata: dict[str, Any]  # kind, input_shape, dtype, preprocessing, architecture
    train_accuracy: float | None
    test_accuracy: float | None


@dataclass
class RoundContext:
    """Everything a worker's strategy needs for one round."""

    config: TrainConfig  # the strategy narrows it to its kind
    dataset: Dataset
    state: State  # the full state from the last checkpoint
    comm: Collective
    start_epoch: int  # 0-based, inclusive
    end_epoch: int  # exclusive
    budget_s: float  # seconds this round may take (stop early at an epoch boundary)
    cache: dict[str, Any] = field(default_factory=dict)  # per process and run (derived data), str keys
    fault: Fault | None = None  # test-only fault injection (LAMBDANET_FAULTS=1)
    started: float = field(default_factory=time.monotonic)
    checkpoint_seconds: float = 0.0  # in-round checkpoints every this many seconds (the run's setting); 0: none
    # writes one in-round checkpoint: (absolute epochs done, shard, info) — set by the worker
    checkpointer: Callable[[int, State, Extras], None] | None = None
    last_checkpoint: float = field(default_factory=time.monotonic)
    checkpoints: int = 0  # in-round checkpoints written by this worker
    checkpoint_write_seconds: float = 0.0  # time spent writing them
    cpu_threads: int | None = None  # threads per worker the run's request named (None: the executor's share)

    @property
    def rank(self) -> int:
        return self.comm.rank

    @property
    def size(self) -> int:
        return self.comm.size

    def out_of_time(self, epochs_done: int) -> bool:
        """True when the round's seconds budget is spent — on every worker at the same epoch."""
        return self.decide(epochs_done)[0]

    def decide(self, epochs_done: int, every: int = TIME_CHECK_EVERY) -> tuple[bool, bool]:
        """(out of time, in-round checkpoint due) — the same on every worker: with K > 1 one tiny
        all-reduce every ``every`` epochs (else ``(False, False)``), with K = 1 local."""
        now = time.monotonic()
        over = now - self.started >= self.budget_s
        due = (self.checkpointer is not None and self.checkpoint_seconds > 0
               and now - self.last_checkpoint >= self.checkpoint_seconds)
        if self.comm.size == 1:
            return over, due
        if epochs_done % every:
            return False, False
        votes = self.comm.all_reduce(np.array([1.0 if over else 0.0, 1.0 if due else 0.0]))
        return bool(votes[0] > 0), bool(votes[1] > 0)

    def save_checkpoint(self, epochs_done: int, shard: State, costs: list[float], seconds: list[float],
                        extras: list[Extras] | None = None) -> None:
        """Write this worker's part of the in-round checkpoint after ``epochs_done`` epochs of the
        round (worker 0 adds the per-epoch costs, seconds and extras so far)."""
        if self.checkpointer is None:
            return
        t0 = time.monotonic()
        info: Extras = {}
        if self.rank == 0:
            info = {"start_epoch": self.start_epoch, "epochs": self.start_epoch + epochs_done,
                    "costs": [float(c) for c in costs], "seconds": [float(s) for s in seconds],
                    "extras": list(extras or [])}
        self.checkpointer(self.start_epoch + epochs_done, shard, info)
        self.last_checkpoint = time.monotonic()
        self.checkpoints += 1
        self.checkpoint_write_seconds += self.last_checkpoint - t0

    def epoch_done(self, epochs_done: int) -> None:
        """Hook after every epoch: honours a test fault (kill / stop / raise / hang) for this worker.
        ``stop`` is a real ``SIGSTOP`` of the worker's own process (never resumed: a frozen or hung
        function); only for workers in their own process (``process`` / ``lithops`` executors)."""
        f = self.fault
        if f is None or f.after_epochs != epochs_done:
            return
        action = f.action
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action == "stop":
            os.kill(os.getpid(), signal.SIGSTOP)
        elif action == "raise":
            raise WorkerFailed(f"injected fault in worker {self.rank} after {epochs_done} epochs")
        elif action == "hang":
            time.sleep(f.seconds if f.seconds is not None else 5.0)


# the config kind a strategy trains: contravariant, since a strategy only takes configs in
ConfigT = TypeVar("ConfigT", MLPConfig, CNNConfig, contravariant=True)


@runtime_checkable
class Strategy(Protocol[ConfigT]):
    name: str  # "neuron", "data", …
    kind: str  # "mlp", "cnn"

    def validate(self, config: ConfigT, workers: int, dataset: Dataset) -> None: ...

    def initial_state(self, config: ConfigT, dataset: Dataset) -> State: ...

    def run_round(self, ctx: RoundContext) -> RoundReport: ...

    def merge(self, config: ConfigT, shards: list[State]) -> State: ...

    def finish(self, config: ConfigT, state: State, dataset: Dataset) -> FinishedModel: ...

    def default_epochs_per_round(self, config: ConfigT) -> int: ...


def row_block(n: int, size: int, rank: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of ``n`` owned by ``rank`` of ``size``: contiguous, sizes differ by at
    most one, larger blocks first (as ``np.array_split``); empty when ``size > n`` for the last."""
    q, r = divmod(n, size)
    start = rank * q + min(rank, r)
    return start, start + q + (1 if rank < r else 0)


def columns(A: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``A[:, idx]`` — a view when ``idx`` is a contiguous ascending range (no copy)."""
    n = len(idx)
    if n == 0:
        return A[:, :0]
    a = int(idx[0])
    if int(idx[-1]) - a + 1 == n and (n < 3 or bool(np.all(np.diff(idx) == 1))):
        return A[:, a:a + n]
    return gather_columns(A, idx)  # the fast gather for A's memory layout
