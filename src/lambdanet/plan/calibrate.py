"""Calibration of ``lambdanet plan``: what the model needs measured on this machine, and cached.

>>> work, dataset = describe("datasets.h5", config)           # Workload: P, N, B, epochs…
>>> measured = calibrate(work, config, dataset, shape, "memory://")    # Measured, cached

- **compute**: a few real training epochs / batches of the config through lambdanet's own
  trainers (:func:`lambdanet.nn.reference.run_epoch` for an MLP, :func:`lambdanet.torchnet.train.
  train_epochs` for a CNN) on the run's data, on one thread (Lambda's figure, scaled by its vCPUs)
  and at the threads each of K workers gets here (the engine's CPU budget, :func:`lambdanet.
  cpu_budget.round_budget`); and the scoring of a sample (forward only);
- **the engine** (``--target local``): two short real runs of K workers through the engine's
  Driver with the executor and store given (E1 and E2 epochs; a CNN on a two-batch subset): the
  slope is one epoch as the engine runs it — compute and syncs interleaved, the cores, memory bus
  and interpreter shared — and the intercept the run's fixed cost;
- **store**: K threads run the run's sync through the engine's :class:`~lambdanet.engine.
  collectives.Collective` against the store URL given — a one-number all-reduce (the latency of
  one collective step) and one sync of the run's payload (from which a bandwidth follows);
- **executor**: the start of one round of K no-op calls (``process``: one worker process's
  start and imports; ``lithops``: a round of Lithops' ``ping``; ``local``: threads, nothing).

Figures are cached in ``$LAMBDANET_HOME/plan/calibration.json``, each keyed by what it depends
on (config, data file, CPU model and count, threads; store scheme, K and payload; executor and
K), so a second ``plan`` of the same config is instant.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lambdanet import adapters
from lambdanet.config import CNNConfig, MLPConfig, TrainConfig
from lambdanet.cpu_budget import CpuBudget, available_cores, process_limits, round_budget, thread_limits
from lambdanet.data.dataset import Dataset
from lambdanet.data.readers import load_dataset, to_matrix, to_targets
from lambdanet.engine.strategies import get_strategy
from lambdanet.plan.model import Measured, RunShape, Workload, counts, finish_samples, sync_payload, sync_shape
from lambdanet.settings import Settings

CACHE_VERSION = 7
TARGET_SECONDS = 0.6  # how long each compute measurement runs (after a warm-up)


def cpu_model() -> str:
    """This CPU's model name (``/proc/cpuinfo``), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _data_bytes(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size if path.exists() else 0


def describe(data: str, config: TrainConfig, strategy: str, workers: int,
             epochs_per_round: int | None = None) -> tuple[Workload, Dataset]:
    """The workload of ``config`` on ``data`` (read with the engine's reader, checked by the
    strategy as a run would be) and the data set itself."""
    dataset = load_dataset(data, config)
    strat = get_strategy(config.kind, strategy)
    strat.validate(config, workers, dataset)
    per_round = epochs_per_round or strat.default_epochs_per_round(config)
    n_test = 0 if dataset.y_test is None else len(dataset.y_test)
    if isinstance(config, MLPConfig):
        dims = config.layer_dims(int(np.prod(dataset.input_shape)))
        params = sum(dims[i - 1] * dims[i] + dims[i] for i in range(1, len(dims)))
        return Workload(kind="mlp", model="mlp " + "-".join(map(str, dims)), params=params,
                        train_samples=len(dataset.y_train), test_samples=n_test, batch_size=config.batch_size,
                        epochs=config.epochs, epochs_per_round=per_round, first_width=dims[1],
                        param_bytes=np.dtype(config.dtype).itemsize, data_bytes=_data_bytes(Path(data))), dataset
    from lambdanet.torchnet.models import build_model, count_parameters

    n = len(dataset.y_train) if config.limit_train is None else min(config.limit_train, len(dataset.y_train))
    if config.limit_test is not None:
        n_test = min(n_test, config.limit_test)
    params = count_parameters(build_model(config.model, n_classes=dataset.n_classes))
    return Workload(kind="cnn", model=config.model, params=params, train_samples=n, test_samples=n_test,
                    batch_size=config.batch_size, epochs=config.epochs, epochs_per_round=per_round,
                    data_bytes=_data_bytes(Path(data))), dataset


# ---- the cache ---------------------------------------------------------------------------------
def _cache_path() -> Path:
    return Settings.from_env().home / "plan" / "calibration.json"


def _key(**parts: Any) -> str:
    text = json.dumps({"v": CACHE_VERSION, "cpu": cpu_model(), "cores": available_cores(), **parts},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def cached(key: str, measure: Callable[[], dict[str, float]]) -> dict[str, float]:
    """The figures stored under ``key``, else ``measure()``'s (then stored). A cache that cannot
    be read or written is measured around, never an error."""
    path = _cache_path()
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(table, dict):
            table = {}
    except (OSError, ValueError):
        table = {}
    if isinstance(table.get(key), dict):
        return {k: float(v) for k, v in table[key].items()}
    figures = measure()
    table[key] = figures
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(table, indent=1, sort_keys=True), encoding="utf-8")
        tmp.replace(path)
    except OSError:
        pass
    return figures


# ---- compute ----------------------------------------------------------------------------------
def _timed_loop(step: Callable[[], int]) -> float:
    """Seconds per sample of ``step`` (which returns the samples it trained): one warm-up call,
    then calls until TARGET_SECONDS have passed (at least 3); the median call counts, so a moment
    when another program took the cores does not set the figure."""
    step()
    rates: list[float] = []
    t_end = time.perf_counter() + TARGET_SECONDS
    while len(rates) < 3 or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        samples = step()
        rates.append((time.perf_counter() - t0) / max(1, samples))
    return float(np.median(rates))


def _mlp_compute(config: MLPConfig, dataset: Dataset) -> dict[str, float]:
    from lambdanet.nn import mlp, reference
    from lambdanet.nn.optimizers import make_optimizer

    X = to_matrix(dataset.x_train, config.dtype)  # (n_x, m)
    Y = to_targets(dataset.y_train, dataset.n_classes, config.activation_list[-1], config.dtype)
    m = int(X.shape[1])
    acts = config.activation_list
    params = mlp.init_params(config.layer_dims(X.shape[0]), acts, config.init, config.seed, config.dtype)
    opt = make_optimizer(config)
    epoch = iter(range(10**9))

    def train() -> int:
        reference.run_epoch(params, opt, X, Y, acts, config.batch_size, config.seed, next(epoch))
        return m

    def score() -> int:
        mlp.predict_proba(params, X, acts)
        return m

    return {"sample_seconds": _timed_loop(train), "eval_sample_seconds": _timed_loop(score)}


def _cnn_compute(config: CNNConfig, dataset: Dataset, threads: int) -> dict[str, float]:
    import torch

    from lambdanet.torchnet.models import build_model
    from lambdanet.torchnet.train import configure_torch, evaluate, make_optimizer, train_epochs, training_layout

    configure_torch(threads)
    model = training_layout(build_model(config.model, n_classes=dataset.n_classes, seed=config.seed), config)
    opt = make_optimizer(model, config)
    n = min(len(dataset.y_train), 2 * config.batch_size)  # two batches a call
    x, y = dataset.x_train[:n], dataset.y_train[:n].astype(np.int64)
    one = config.model_copy(update={"epochs": 1, "threshold": 0.0, "lr_schedule": "constant"})

    def train() -> int:
        train_epochs(model, opt, x, y, one, 1)
        return n

    def score() -> int:
        with torch.no_grad():
            evaluate(model, x, y, tta=config.tta, precision=config.precision)
        return n

    return {"sample_seconds": _timed_loop(train), "eval_sample_seconds": _timed_loop(score)}


def measure_compute(config: TrainConfig, dataset: Dataset, threads: int) -> dict[str, float]:
    """Seconds per training sample and per scored sample of one worker alone on ``threads``
    threads (BLAS, OpenMP, torch held there by the engine's own limits)."""
    budget = CpuBudget(threads=threads, source="request", workers=1, cores=available_cores())
    with process_limits(budget), thread_limits(budget):
        if isinstance(config, MLPConfig):
            return _mlp_compute(config, dataset)
        return _cnn_compute(config, dataset, threads)


def measure_data_load(data: str, config: TrainConfig) -> float:
    t0 = time.perf_counter()
    load_dataset(data, config)
    return time.perf_counter() - t0


# ---- the engine itself ------------------------------------------------------------------------
def _engine_run(data: str, config: TrainConfig, shape: RunShape, store_url: str, executor_url: str,
                epochs_per_round: int | None = None) -> tuple[float, list[float]]:
    """The wall seconds of a real ``lambdanet train`` of ``config`` (the engine's Driver, in a
    throw-away home; its notifications swallowed) and its epochs' seconds as its ledger has them
    (each epoch's training, syncs and test pass, timed inside the workers)."""
    import contextlib
    import io
    import tempfile

    from lambdanet.engine.driver import Driver
    from lambdanet.engine.requests import TrainRequest
    from lambdanet.services import Services

    with tempfile.TemporaryDirectory(prefix="lambdanet-plan-") as tmp:
        home = Path(tmp)
        settings = Settings(home=home, ledger_url=f"sqlite:///{home / 'ledger.db'}", objects_url=str(home / "objects"),
                            notifier_url="console://", store_url=store_url, executor=executor_url)
        services = Services.open(settings)
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                result = Driver(services).train(TrainRequest(
                    data=data, config=config, model_name="plan-calibration", workers=shape.workers,
                    strategy=shape.strategy, store_url=store_url, executor=executor_url,
                    epochs_per_round=epochs_per_round))
            epochs = [row.seconds for row in services.ledger.epochs(result.run_id)]
        finally:
            services.close()
    return float(result.wall_seconds), epochs


def measure_engine(data: str, config: TrainConfig, work: Workload, shape: RunShape, store_url: str,
                   executor_url: str, guess_s: float) -> dict[str, float]:
    """Short real runs of K workers through the engine: ``epoch_s`` is the seconds of one epoch of
    ``samples`` (per worker) as the engine runs it (compute and syncs interleaved, the cores and the
    interpreter shared), ``fixed_s`` the run's fixed cost, ``round_s`` what a further round costs
    (a CNN), ``scored`` the samples the driver scored at the end. ``guess_s``: a first figure of one
    epoch, to size the runs.

    MLP: E1 and E2 epochs of the whole data set (E2 sized to ~1.5 s more work): the slope and the
    intercept. CNN: 2 epochs of 4 batches in one round, then in two rounds. The second epoch of the
    first run, as its ledger times it inside the workers, is a warm epoch (a fresh process's first
    batches are slower: the first epoch is not); the second run's extra time is a round's own cost
    (a worker process's start, torch import, data load and warm-up; the round's checkpoint)."""
    extra: dict[str, Any] = {"threshold": 0.0, "report_every": 10**6}
    if isinstance(config, CNNConfig):
        n = min(work.train_samples, 4 * config.batch_size)
        test = min(max(1, work.test_samples), config.batch_size)
        cfg = config.model_copy(update={**extra, "epochs": 2, "limit_train": n, "limit_test": test})
        one_round, epochs = _engine_run(data, cfg, shape, store_url, executor_url)
        two_rounds, _ = _engine_run(data, cfg, shape, store_url, executor_url, 1)
        round_s = max(0.0, two_rounds - one_round)
        return {"epoch_s": epochs[-1], "fixed_s": one_round - sum(epochs),  # the driver, a round, the scoring
                "samples": float(math.ceil(n / shape.workers)), "round_s": round_s,
                "scored": float(finish_samples(work.model_copy(update={"train_samples": n}))),
                "test_in_epoch": 1.0}
    samples = work.train_samples
    per_worker = math.ceil(samples / shape.workers)
    e1 = 2
    e2 = e1 + max(1, min(500, int(1.5 / max(guess_s, 1e-6))))
    walls = []
    for epochs_run in (e1, e2):
        walls.append(_engine_run(data, config.model_copy(update={**extra, "epochs": epochs_run}), shape, store_url,
                                 executor_url)[0])
    slope = (walls[1] - walls[0]) / (e2 - e1)
    return {"epoch_s": slope, "fixed_s": walls[0] - e1 * slope, "samples": float(per_worker), "round_s": 0.0,
            "scored": float(finish_samples(work)), "test_in_epoch": 0.0}


# ---- the store --------------------------------------------------------------------------------
def _sync_seconds(store_url: str, workers: int, elements: int, itemsize: int, reps: int, sharded: bool) -> float:
    """Seconds of one all-reduce of ``elements`` numbers among ``workers`` threads on the store."""
    import secrets

    from lambdanet.engine.collectives import Collective, block_bounds

    store = adapters.open_store(store_url)
    prefix = f"ln:plan-{secrets.token_hex(6)}:0:0"
    dtype = np.float16 if itemsize == 2 else np.float64 if itemsize == 8 else np.float32
    times = [0.0] * workers
    errors: list[BaseException] = []

    def run(rank: int) -> None:
        try:
            comm = Collective(store, prefix, rank, workers, timeout_s=60)
            flat = np.ones(elements, dtype)
            bounds = block_bounds(elements, workers)
            comm.barrier()
            t0 = time.perf_counter()
            for _ in range(reps):
                if sharded:
                    comm.all_gather(comm.reduce_scatter(flat, bounds, hold=True), hold=True)
                else:
                    comm.all_reduce(flat)
            times[rank] = time.perf_counter() - t0
        except BaseException as exc:  # reported below, in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(workers)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        store.delete_prefix(prefix)
        close = getattr(store, "close", None)
        if close is not None:
            close()
    if errors:
        raise errors[0]
    return max(times) / reps


def measure_store(store_url: str, work: Workload, shape: RunShape) -> dict[str, float]:
    """Latency of one collective step and the bandwidth of the run's sync, K threads on the store."""
    K = shape.workers
    if K == 1:
        return {"store_latency_s": 0.0, "store_bytes_s": 1e9}
    latency = _sync_seconds(store_url, K, 1, 8, 100, sharded=False)  # one step, a tiny payload
    per_sync, steps = sync_payload(work, shape)
    elements, itemsize, _ = sync_shape(work, shape)
    once = _sync_seconds(store_url, K, elements, itemsize, 1, sharded=steps == 2)
    reps = max(2, min(50, int(TARGET_SECONDS / max(once, 1e-6))))
    seconds = _sync_seconds(store_url, K, elements, itemsize, reps, sharded=steps == 2)
    moving = max(seconds - steps * latency, 1e-9)
    return {"store_latency_s": latency, "store_bytes_s": max(1.0, per_sync / K / moving)}


# ---- the executor -----------------------------------------------------------------------------
def measure_round_start(executor: str, workers: int) -> float:
    """Seconds to start one round of K calls: 0 for threads; a worker process's start and imports
    (x ceil(K / cores)) for ``process``; a round of Lithops' no-op ``ping`` for ``lithops``."""
    if executor == "local":
        return 0.0
    if executor == "process":
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import lambdanet.engine.worker"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return (time.perf_counter() - t0) * math.ceil(workers / available_cores())
    from lambdanet.executors.lithops import ping

    ex = adapters.open_executor(executor if "://" in executor else "lithops://localhost")
    try:
        ex.run(ping, [{"worker": i} for i in range(workers)], timeout_s=120)  # the first job warms up
        t0 = time.perf_counter()
        ex.run(ping, [{"worker": i} for i in range(workers)], timeout_s=120)
        return time.perf_counter() - t0
    finally:
        ex.close()


# ---- all of it --------------------------------------------------------------------------------
def calibrate(data: str, config: TrainConfig, dataset: Dataset, work: Workload, shape: RunShape,
              store_url: str, executor_url: str = "local", progress: Callable[[str], None] | None = None) -> Measured:
    """Every measured figure of the plan of ``work`` run as ``shape`` (cached). On this machine the
    per-sample compute and the driver's fixed cost come from two short real runs through the
    engine (:func:`measure_engine`): the epoch's time less its syncs as measured alone is the
    compute, the intercept less the round start, data loads and final scoring the driver's own."""
    say = progress or (lambda _line: None)
    scheme = executor_url.split(":", 1)[0]
    # here: the engine's share per worker, of the cores free now, as a round measures it at its start
    # (Lithops' localhost calls get the process executor's); on Lambda one thread, which the vCPUs scale
    local = shape.target == "local"
    budget_scheme = "process" if scheme == "lithops" else scheme
    threads = (round_budget(budget_scheme, shape.workers).threads or available_cores()) if local else 1
    config_key = json.dumps(config.model_dump(mode="json"), sort_keys=True)
    path = Path(data)
    data_key = [str(path.resolve()), _data_bytes(path), path.stat().st_mtime if path.exists() else 0]

    def compute(n: int) -> dict[str, float]:
        say(f"calibrating: a few training steps on {n} thread(s)")
        return measure_compute(config, dataset, n)

    at_1 = cached(_key(what="compute", config=config_key, data=data_key, threads=1), lambda: compute(1))
    load = cached(_key(what="data", data=data_key, config=config_key),
                  lambda: {"data_load_seconds": measure_data_load(data, config)})
    if not local:
        return Measured(cpu=cpu_model(), cores=available_cores(), threads=1, sample_seconds=at_1["sample_seconds"],
                        sample_seconds_1=at_1["sample_seconds"], eval_sample_seconds=at_1["eval_sample_seconds"],
                        data_load_seconds=load["data_load_seconds"])
    at_t = at_1 if threads == 1 else cached(_key(what="compute", config=config_key, data=data_key, threads=threads),
                                            lambda: compute(threads))
    store_scheme = store_url.split(":", 1)[0]
    sync_key = [shape.workers, shape.strategy, shape.compress, work.params, work.first_width, work.batch_size]

    def store() -> dict[str, float]:
        say(f"calibrating: {shape.workers} workers' syncs on {store_scheme}://")
        return measure_store(store_url, work, shape)

    sync = cached(_key(what="store", store=store_scheme, sync=sync_key), store)
    start = cached(_key(what="executor", executor=scheme, workers=shape.workers),
                   lambda: {"round_start_s": measure_round_start(executor_url, shape.workers)})

    def engine() -> dict[str, float]:
        say(f"calibrating: two short runs of {shape.workers} worker(s) through the engine ({scheme})")
        guess = math.ceil(work.train_samples / shape.workers) * at_t["sample_seconds"]
        return measure_engine(data, config, work, shape, store_url, executor_url, guess)

    run = cached(_key(what="engine", config=config_key, data=data_key, threads=threads,
                      shape=shape.model_dump(mode="json"), store=store_scheme), engine)
    # one calibration epoch (a CNN: the samples the two 1-epoch runs differ by) less its syncs as
    # measured alone; what an epoch costs whatever its size cancels out in a CNN's difference
    k = shape.workers
    cal = work.model_copy(update={"epochs": 1, "train_samples": min(work.train_samples, int(run["samples"]) * k)})
    per_sync, steps = sync_payload(cal, shape)
    _, syncs = counts(cal, shape)
    sync_s = (syncs * (steps * sync["store_latency_s"] + per_sync / k / sync["store_bytes_s"])
              if k > 1 else 0.0)
    cnn = isinstance(config, CNNConfig)
    test_pass = math.ceil(min(work.test_samples, config.batch_size) / k) * at_t["eval_sample_seconds"] if cnn else 0.0
    sample = (run["epoch_s"] - sync_s - run["test_in_epoch"] * test_pass) / run["samples"]
    if sample <= 0:  # noise larger than the epoch: the compute measured alone
        sample = at_t["sample_seconds"]
    per_round_loads = 0 if scheme == "local" else math.ceil(k / available_cores())
    loads = 1 + per_round_loads
    round_start = start["round_start_s"]
    if cnn:  # a CNN round's own cost through the engine (worker start, torch, warm-up, the round's checkpoint)
        round_start = max(round_start, run["round_s"] - per_round_loads * load["data_load_seconds"])
    # the driver's final scoring of the calibration run, on every core (as model.predict has it)
    finish = run["scored"] * at_t["eval_sample_seconds"] * threads / available_cores()
    driver = max(0.0, run["fixed_s"] - round_start - loads * load["data_load_seconds"] - finish)
    return Measured(cpu=cpu_model(), cores=available_cores(), threads=threads, together=k, sample_seconds=sample,
                    sample_seconds_1=at_1["sample_seconds"], eval_sample_seconds=at_t["eval_sample_seconds"],
                    data_load_seconds=load["data_load_seconds"], driver_s=driver, **sync,
                    **{**start, "round_start_s": round_start})
