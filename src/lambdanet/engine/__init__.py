"""The serverless engine: a run is trained in rounds of K worker calls that share nothing but a
tensor store.

Modules:

* :mod:`~lambdanet.engine.driver` — :class:`Driver` (``train(TrainRequest)``, ``resume(run_id)``);
* :mod:`~lambdanet.engine.requests` — every engine setting written once with its default and its
  check (``WorkerSettings`` < ``RunSettings`` < :class:`TrainRequest` = settings + data + config,
  and ``EngineSettings``, what a run records), :class:`RunResult`, :class:`ProgressSink`;
* :mod:`~lambdanet.engine.messages` — what crosses a boundary, as frozen pydantic models (JSON,
  no pickle): ``WorkerSpec``, ``WorkerResult``, ``Fault``, ``Retry``, ``CheckpointPointer``,
  ``RoundStep``;
* :mod:`~lambdanet.engine.session` — one run driven round by round under the run's lease
  (``RunSession.next_round() -> RoundStep``), what ``lambdanet train`` loops over and the durable
  Lambda driver runs one step per round;
* :mod:`~lambdanet.engine.rounds` — one round: fence, K calls, merge of the shards, retries;
* :mod:`~lambdanet.engine.worker` — ``run_worker(spec) -> result`` (a WorkerSpec and a
  WorkerResult as JSON), what every executor runs;
* :mod:`~lambdanet.engine.collectives` — barrier / all_gather / all_reduce / reduce_scatter /
  broadcast over any TensorStore (worker-order sums, deadlines, per-step key cleanup);
* :mod:`~lambdanet.engine.liveness` — worker heartbeats and the start / liveness deadlines;
* :mod:`~lambdanet.engine.strategies` — the strategy registry and the ``neuron`` / ``data``
  strategies for the numpy MLP;
* :mod:`~lambdanet.engine.checkpoints` — the run's data reference ``runs/<id>/data.json`` to a
  content-addressed snapshot ``datasets/<sha256>.npz``, safetensors checkpoints and
  their pointer; :mod:`~lambdanet.engine.round_checkpoints` — in-round checkpoints in the store;
* :mod:`~lambdanet.engine.retention` — ``lambdanet runs delete`` / ``gc``: the objects of
  finished runs and the snapshots no run uses;
* :mod:`~lambdanet.engine.accounting` — worker calls, worker-seconds, store bytes, Lambda cost.

Plugging in a strategy (e.g. the PyTorch data-parallel CNN)
---------------------------------------------------------
A strategy is a class with ``name``, ``kind`` and six methods (see
:class:`lambdanet.engine.strategies.base.Strategy`)::

    class TorchDataStrategy:
        name, kind = "data", "cnn"
        def validate(self, config, workers, dataset) -> None            # ConfigError if impossible
        def initial_state(self, config, dataset) -> dict[str, np.ndarray]   # params + optimizer
        def run_round(self, ctx: RoundContext) -> RoundReport           # worker side
        def merge(self, config, shards: list[dict]) -> dict             # driver side
        def finish(self, config, state, dataset) -> FinishedModel       # weights, metadata, accuracies
        def default_epochs_per_round(self, config) -> int

It is found by ``(config.kind, strategy name)`` in
:data:`lambdanet.engine.strategies.STRATEGIES` — ``("cnn", "data")`` is already mapped to
``"lambdanet.torchnet.strategy:TorchDataStrategy"`` — or added with
``register_strategy(kind, name, "module:Class")``. In ``run_round`` the worker gets
``ctx.state`` (the full state of the last checkpoint, read-only), ``ctx.dataset`` (uint8 images,
int64 labels), ``ctx.cache`` (a per-process dict to keep derived data between rounds),
``ctx.start_epoch … ctx.end_epoch`` and ``ctx.comm``; a data-parallel step is::

    flat = np.concatenate([grads[n].ravel() for n in names])  # one flat buffer, FIXED name order
    flat = ctx.comm.all_reduce(flat)                       # summed in worker order, same bits everywhere

(Never rely on the order of ``ctx.state``'s keys: a safetensors load lists them in a different
order in each process, so two workers would lay out the buffer differently.)
After each epoch it calls ``ctx.epoch_done(n)`` and stops when ``ctx.out_of_time(n)`` says so
(a collective decision) or when the (all-reduced, hence identical) cost reaches the threshold.
It returns ``RoundReport(costs, seconds, stop_reason, shard, extras)`` (``extras``: optional
JSON dicts, one per epoch, merged into the ledger's ``EpochRow.extra``); for a data-parallel strategy
worker 0's shard is the whole state and the others return ``{}``. Checkpoints, rounds, retries,
the ledger, notifications, the registry and accounting are the engine's job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lambdanet.engine.driver import Driver, ProgressSink, RunResult, TrainRequest

__all__ = ["Driver", "ProgressSink", "RunResult", "TrainRequest"]


def __getattr__(name: str) -> Any:
    """Lazy exports: a worker process imports ``lambdanet.engine.worker`` without the driver."""
    if name in __all__:
        from lambdanet.engine import driver

        return getattr(driver, name)
    raise AttributeError(f"module 'lambdanet.engine' has no attribute {name!r}")
