"""The cost model of ``lambdanet plan``: wall time, worker-seconds, bytes and dollars of a run
before it starts — plain arithmetic on three frozen inputs.

>>> work = Workload(kind="mlp", model="mlp 12288-16-8-1", params=196_769, train_samples=209,
...                 test_samples=50, batch_size=64, epochs=200, epochs_per_round=1000)
>>> shape = RunShape(workers=2, strategy="data", target="local")
>>> p = predict(work, shape, measured)          # measured: :mod:`lambdanet.plan.calibrate`
>>> p.wall_seconds, p.worker_seconds, p.bytes, p.usd

The model (every symbol is a field below):

- steps = epochs x ceil(N / B); syncs = ceil(steps / H) for ``data`` (H = ``sync_every``), one
  per step for ``neuron``; rounds = max(ceil(epochs / epochs_per_round), ceil(busy / round_seconds)).
- **bytes**: an all-reduce of n elements of w bytes among K workers is a reduce-scatter then an
  all-gather (the ``data`` MLP strategy always; any all-reduce of >= 16,384 x K elements): each
  worker writes n and reads 2(K-1)/K n, so (3K - 2) n w cross the store; a smaller all-reduce is
  one all-gather: K^2 n w. ``data`` syncs n = P parameters (w = 4 for float32, 2 with
  ``--compress fp16|bf16``); ``neuron`` all-reduces the first layer's pre-activations
  (n = neurons.layer1 x B) every step. K = 1 moves nothing.
- **compute** per worker = epochs x ceil(N / K) x c, c = measured seconds per training sample.
  On this machine c comes from two short real runs of the K workers through the engine (the epoch's
  time less its syncs as measured alone, per sample of a worker: ``together`` = K), so sharing the
  cores and the interpreter is in it; a figure measured with fewer workers together is scaled by
  K / together. On Lambda c = c_1 / vCPUs with c_1 measured on one thread and vCPUs = memory /
  1,769 MB, at most 6.
- **sync** = syncs x (steps_per_sync x latency + bytes_per_worker / bandwidth) plus one latency
  per small bookkeeping all-reduce (the round-time vote every 8 epochs; a CNN's two per epoch);
  latency and bandwidth are measured against the store here, and on Lambda are 1 ms and the
  slower of the function's network and the Redis node's share.
- **wall** = driver start + rounds x round start + data load + compute + sync + the driver's
  final scoring (an MLP's train and test sets; a CNN's at most 2,000 training images, its test
  accuracy being the last epoch's; here on every core, the per-sample figure scaled from a worker's
  threads); **worker-seconds** = K x the time a worker call runs; **usd** = worker GB-s x
  the arch's price + requests x $0.20/M (+ on Lambda: the durable driver's GB-s and operations and
  the Redis node's hours). On this machine ``usd`` is what the run's ``estimated_cost_usd`` says:
  the same calls priced as Lambda calls of ``memory_mb``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lambdanet.engine.collectives import REDUCE_SCATTER_MIN
from lambdanet.plan.prices import LAMBDA, MAX_MEMORY_MB, MIN_MEMORY_MB, Arch, LambdaFigures

Compress = Literal["none", "fp16", "bf16"]
Target = Literal["local", "lambda"]
CNN_FINISH_TRAIN_SAMPLES = 2_000  # torchnet.strategy.FINISH_TRAIN_SAMPLES (torch is not imported to plan)
VOTE_EVERY_EPOCHS = 8  # the round-time decision: a one-number all-reduce every 8 epochs (engine.strategies.base)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Workload(_Frozen):
    """What is trained: the model's size and the data's, from the config and the data set."""

    kind: Literal["mlp", "cnn"]
    model: str
    params: int = Field(ge=1)  # trainable parameters P
    train_samples: int = Field(ge=1)  # N
    test_samples: int = Field(default=0, ge=0)
    batch_size: int = Field(ge=1)  # B
    epochs: int = Field(ge=1)
    epochs_per_round: int = Field(ge=1)
    first_width: int = Field(default=1, ge=1)  # neurons of layer 1 (the neuron strategy's all-reduce)
    param_bytes: int = Field(default=4, ge=1)  # bytes per parameter (float32: 4, an MLP's float64: 8)
    data_bytes: int = Field(default=0, ge=0)  # the data file(s), fetched once per worker on Lambda


class RunShape(_Frozen):
    """How it is run: the flags of ``lambdanet plan``."""

    workers: int = Field(ge=1)
    strategy: Literal["data", "neuron"] = "data"
    sync_every: int = Field(default=1, ge=1)
    compress: Compress = "none"
    target: Target = "local"
    executor: Literal["local", "process", "lithops"] = "local"
    memory_mb: int = Field(default=2048, ge=MIN_MEMORY_MB, le=MAX_MEMORY_MB)
    arch: Arch = "x86_64"
    round_seconds: float = Field(default=300.0, gt=0)


class Measured(_Frozen):
    """What calibration measured on this machine (:mod:`lambdanet.plan.calibrate`)."""

    cpu: str
    cores: int = Field(ge=1)
    threads: int = Field(ge=1)  # threads per worker the compute figure was taken with
    together: int = Field(default=1, ge=1)  # workers measured side by side (their share of the data each)
    sample_seconds: float = Field(gt=0)  # one training sample at `threads`
    sample_seconds_1: float = Field(gt=0)  # one training sample on one thread
    eval_sample_seconds: float = Field(ge=0)  # one sample scored (forward only)
    data_load_seconds: float = Field(ge=0)  # reading the data set through lambdanet's readers
    store_latency_s: float = Field(default=0.0, ge=0)  # one collective step, a tiny payload
    store_bytes_s: float = Field(default=1e9, gt=0)  # per worker, in a collective step
    round_start_s: float = Field(default=0.0, ge=0)  # the executor's start of one round of K calls
    driver_s: float = Field(default=0.1, ge=0)  # the driver's own start and finish (ledger, registry)


class Prediction(_Frozen):
    """The plan's answer; ``lambdanet plan --json`` prints it."""

    target: Target
    wall_seconds: float
    worker_seconds: float
    bytes: int
    usd: float
    rounds: int
    steps: int
    syncs: int
    bytes_per_sync: int
    breakdown: dict[str, float]  # seconds: start, data, compute, sync, finish
    assumptions: dict[str, Any]
    uncertain: list[str]


def wire_bytes(work: Workload, compress: Compress) -> int:
    """Bytes per number on the wire: 2 with fp16/bf16 compression, the parameters' own otherwise."""
    return 2 if compress != "none" else work.param_bytes


def all_reduce_bytes(elements: int, workers: int, width: int, sharded: bool = False) -> tuple[int, int]:
    """(bytes through the store, collective steps) of one all-reduce (see the module docstring)."""
    if workers == 1 or elements == 0:
        return 0, 0
    if sharded or elements >= REDUCE_SCATTER_MIN * workers:
        return (3 * workers - 2) * elements * width, 2
    return workers * workers * elements * width, 1


def counts(work: Workload, shape: RunShape) -> tuple[int, int]:
    """(steps, syncs) of the run."""
    steps = work.epochs * math.ceil(work.train_samples / work.batch_size)
    syncs = math.ceil(steps / shape.sync_every) if shape.strategy == "data" else steps
    return steps, syncs


def sync_shape(work: Workload, shape: RunShape) -> tuple[int, int, bool]:
    """(elements, bytes per element, always reduce-scatter + all-gather) of one sync's all-reduce:
    ``data`` the parameters (the MLP's always sharded), ``neuron`` layer 1's pre-activations."""
    if shape.strategy == "neuron":
        return work.first_width * work.batch_size, work.param_bytes, False
    return work.params, wire_bytes(work, shape.compress), work.kind == "mlp"


def sync_payload(work: Workload, shape: RunShape) -> tuple[int, int]:
    """(bytes, collective steps) of one sync of the whole run (every worker's traffic together)."""
    elements, width, sharded = sync_shape(work, shape)
    return all_reduce_bytes(elements, shape.workers, width, sharded)


def finish_samples(work: Workload) -> int:
    """Samples the driver scores at the end: an MLP its whole train and test sets; a CNN at most
    :data:`~lambdanet.torchnet.strategy.FINISH_TRAIN_SAMPLES` training images (its test accuracy
    is the last epoch's test pass, not scored again)."""
    if work.kind == "cnn":
        return min(work.train_samples, CNN_FINISH_TRAIN_SAMPLES)
    return work.train_samples + work.test_samples


def _bookkeeping_steps(work: Workload) -> float:
    """Small all-reduces per epoch besides the syncs: the round-time vote (and a CNN's buffers and
    test tail)."""
    return 1 / VOTE_EVERY_EPOCHS + (2 if work.kind == "cnn" else 0)


def _rounds(work: Workload, shape: RunShape, busy: float) -> int:
    """Rounds: the strategy's epochs per round, and at most ``round_seconds`` of work each."""
    return max(math.ceil(work.epochs / work.epochs_per_round), math.ceil(busy / shape.round_seconds))


def predict(work: Workload, shape: RunShape, measured: Measured, figures: LambdaFigures = LAMBDA) -> Prediction:
    """The prediction for ``work`` run as ``shape`` (see the module docstring)."""
    K = shape.workers
    steps, syncs = counts(work, shape)
    per_sync, sync_steps = sync_payload(work, shape)
    total_bytes = syncs * per_sync
    mine = math.ceil(work.train_samples / K)  # samples per worker per epoch
    mine_test = math.ceil(work.test_samples / K) if work.kind == "cnn" else 0  # a CNN scores its test set per epoch
    small_steps = work.epochs * _bookkeeping_steps(work) if K > 1 else 0.0
    uncertain: list[str] = []
    if shape.strategy == "neuron":
        uncertain.append("neuron: a worker's compute taken as 1/K of the whole (its block of layer 1; the layers "
                         "above are replicated on every worker)")
    if shape.sync_every > 1:
        uncertain.append(f"sync_every {shape.sync_every}: a sync assumed to move the parameters only (no optimizer "
                         "state) and the steps between syncs to cost what a synchronised step computes")
    finish = finish_samples(work) * measured.eval_sample_seconds  # the driver's scoring (one worker's threads)
    if shape.target == "local":
        over = K / measured.together if measured.together > 1 else max(1.0, K * measured.threads / measured.cores)
        compute = work.epochs * (mine * measured.sample_seconds + mine_test * measured.eval_sample_seconds) * over
        per_worker = per_sync / K if K > 1 else 0.0
        sync = syncs * (sync_steps * measured.store_latency_s + per_worker / measured.store_bytes_s) \
            + small_steps * measured.store_latency_s
        rounds = _rounds(work, shape, compute + sync)
        start = measured.driver_s + rounds * measured.round_start_s
        loads = 1 if shape.executor == "local" else 1 + rounds * math.ceil(K / measured.cores)  # processes: each round
        data = measured.data_load_seconds * loads
        finish *= measured.threads / measured.cores  # the driver scores on every core, after the workers
        wall = start + data + compute + sync + finish
        worker_seconds = K * (compute + sync + rounds * measured.round_start_s
                              + (0 if shape.executor == "local" else rounds * measured.data_load_seconds))
        gb_s = worker_seconds * shape.memory_mb / 1024
        usd = gb_s * figures.gb_second_usd_x86 + K * rounds * figures.request_usd
        uncertain += [
            f"compute measured with one worker alone; {K} workers on {measured.cores} cores also share memory "
            "bandwidth and caches",
            "other programs' load during the run (the engine gives each round the cores free at its start)",
            "usd: this machine's calls priced as Lambda calls (the run's estimated_cost_usd), not a bill",
        ]
        if shape.executor == "lithops":
            uncertain.append("lithops here: a round's start (the job's upload, the runner's processes, polling) "
                             "is one no-op round's, measured once")
        assumptions: dict[str, Any] = {"measured": measured.model_dump(), "overlap_factor": over}
    else:
        vcpus = figures.vcpus(shape.memory_mb)
        sample = measured.sample_seconds_1 / vcpus
        compute = work.epochs * (mine * sample + mine_test * measured.eval_sample_seconds / vcpus)
        net = figures.network_bytes_s
        per_worker = per_sync / K if K > 1 else 0.0
        transfer = max(per_worker / net, per_sync / figures.store_node_bytes_s)
        sync = (syncs * (sync_steps * figures.store_step_latency_s + transfer)
                + small_steps * figures.store_step_latency_s)
        rounds = _rounds(work, shape, compute + sync)
        cold = figures.cold_start_s_torch if work.kind == "cnn" else figures.cold_start_s_numpy
        state = 3 * work.params * work.param_bytes / net  # weights + optimizer state, read back every round
        data = work.data_bytes / net + measured.data_load_seconds / min(1.0, vcpus)
        worker_wall = cold + data + rounds * state + compute + sync
        driver_vcpus = figures.vcpus(figures.driver_memory_mb)
        finish = finish / driver_vcpus
        start = measured.driver_s + rounds * figures.round_overhead_s
        wall = start + worker_wall + finish
        worker_seconds = K * worker_wall
        price = figures.gb_second_usd(shape.arch)
        invocations = K * rounds + 1 + math.ceil(wall / 900)  # workers + the driver's invocations (15 min each)
        usd = (worker_seconds * shape.memory_mb / 1024 * price
               + wall * figures.driver_memory_mb / 1024 * price
               + invocations * figures.request_usd
               + (figures.durable_ops_per_run + rounds * figures.durable_ops_per_round) * figures.durable_operation_usd
               + wall / 3600 * figures.store_node_usd_per_hour)
        slow = syncs * (sync_steps * figures.store_step_latency_s
                        + max(per_worker / figures.network_low_bytes_s, per_sync / figures.store_node_bytes_s))
        fast = syncs * (sync_steps * figures.store_step_latency_s
                        + max(per_worker / figures.network_high_bytes_s, per_sync / figures.store_node_bytes_s))
        data_compute = start + cold + data + rounds * state + compute + finish
        uncertain += [
            f"a Lambda vCPU taken as fast as one core of this CPU ({measured.cpu}); arm64 (Graviton) taken as fast "
            "as x86 — measure one round on Lambda before a large run",
            f"threads taken to scale linearly to {vcpus:.2f} vCPUs ({shape.memory_mb} MB / {figures.mb_per_vcpu} MB)",
            f"network 50-88 MB/s per function: wall {data_compute + fast:.1f}-{data_compute + slow:.1f} s",
            f"cold start {cold:g} s and Lithops' {figures.round_overhead_s:g} s per round are assumptions, not "
            "measurements",
            "the Redis node's bandwidth (5 Gbit/s burst, shared by all K workers) and 1 ms per collective step",
        ]
        assumptions = {"measured": measured.model_dump(), "lambda": figures.model_dump(), "vcpus": vcpus,
                       "driver_vcpus": driver_vcpus}
    assumptions.update({"steps_per_sync": sync_steps, "bytes_per_sync": per_sync,
                        "wire_bytes": wire_bytes(work, shape.compress)})
    return Prediction(
        target=shape.target, wall_seconds=round(wall, 3), worker_seconds=round(worker_seconds, 3),
        bytes=int(total_bytes), usd=round(usd, 8), rounds=rounds, steps=steps, syncs=syncs, bytes_per_sync=per_sync,
        breakdown={k: round(v, 4) for k, v in
                   {"start": start, "data": data, "compute": compute, "sync": sync, "finish": finish}.items()},
        assumptions=assumptions, uncertain=uncertain,
    )
