"""The engine's ``data`` strategy for CNN configs (``kind == "cnn"``): torch data parallelism.

Registered in :data:`lambdanet.engine.strategies.STRATEGIES` as
``("cnn", "data") -> "lambdanet.torchnet.strategy:TorchDataStrategy"``. Worker k of K keeps the
whole model and optimizer, trains on its slice of every mini-batch and all-reduces ONE flat
buffer per step through ``ctx.comm`` (see :func:`lambdanet.torchnet.train.train_epochs`); every
worker takes the identical Adam/SGD step, so worker 0's state is the run's state.

State (the checkpoint, safetensors-ready): ``model.<state_dict key>`` (weights and batch-norm
buffers), ``optim.<param index>.<key>`` (Adam ``step``/``exp_avg``/``exp_avg_sq``) and, once an
epoch has run with a test set, ``eval.test_accuracy`` / ``eval.test_loss`` (float64 (1,)): the
test pass the last epoch made on exactly these weights, so :meth:`TorchDataStrategy.finish`
reuses it instead of scoring the test set again. Per-epoch train loss, train/test accuracy and
test loss go to :attr:`RoundReport.extras`.

The run's train accuracy (``finish``) is the final model scored on the training set when it has
at most :data:`FINISH_TRAIN_SAMPLES` images, else on a fixed shuffled sample of that many (the
CIFAR-10 files are sorted by class); ``model.json``'s ``evaluation`` says which.

Local SGD / compression (``sync_every`` > 1 or ``compress``, K > 1; see
:mod:`lambdanet.torchnet.train`): the workers hold one model at every epoch's end but each its own
optimizer state, so worker k > 0 also hands back ``local.{k}.optim.*`` and, compressed, every
worker its error-feedback residuals ``ef.{k}`` / ``ef.block.{k}``; :meth:`TorchDataStrategy.merge`
keeps them all, and worker k resumes from its own (worker 0's optimizer state where a checkpoint
has none for it).

Device: ``ctx.device`` if the engine's RoundContext has one, else ``config.device`` (set by
``lambdanet train --device``), else ``cpu``; ``cuda`` on a machine without CUDA is
a one-line :class:`ConfigError` (raised by ``validate`` before the run starts).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import torch

from lambdanet.config import CNNConfig
from lambdanet.cpu_budget import user_thread_env
from lambdanet.data.dataset import Dataset
from lambdanet.engine.strategies.base import FinishedModel, RoundContext, RoundReport, State
from lambdanet.errors import ConfigError, DataError
from lambdanet.torchnet.checkpoint import load_state_arrays, state_arrays
from lambdanet.torchnet.data import class_names, subset, to_tensor
from lambdanet.torchnet.export import model_metadata, registry_weights
from lambdanet.torchnet.lookahead import Lookahead
from lambdanet.torchnet.models import MIN_SIDE, DataInitialised, build_model
from lambdanet.torchnet.train import (
    EpochStats,
    LocalSync,
    configure_torch,
    evaluate,
    local_sgd,
    make_optimizer,
    resolve_device,
    train_epochs,
    training_layout,
    usable_cores,
)

DEFAULT_EPOCHS_PER_ROUND = 1  # a CNN epoch is long enough to checkpoint after every one
# train accuracy at the end is measured on at most this many images: a forward pass over all of
# CIFAR-10's costs about a third of an epoch; 2,000 give the figure to about ±1 % (one standard
# error at 60 % accuracy) for a small share of one
FINISH_TRAIN_SAMPLES = 2_000
INIT_SAMPLES = 5_000  # training images a DataInitialised model is set from (airbench94's 5,000)
TEST_ACCURACY, TEST_LOSS = "eval.test_accuracy", "eval.test_loss"


def worker_threads(ctx: RoundContext) -> int:
    """torch threads for this worker: the user's thread variables win (torch read them at import),
    then the request's ``cpu_threads``, else the worker's share of the cores (as the executors'
    CPU budget gives BLAS)."""
    if user_thread_env(os.environ):
        return torch.get_num_threads()
    return ctx.cpu_threads or max(1, usable_cores() // ctx.size)


def _check(config: Any) -> CNNConfig:
    if not isinstance(config, CNNConfig):
        raise ConfigError(f"the torch data strategy trains a CNN config, got {type(config).__name__}")
    return config


def arrays(cache: dict[Any, Any], cfg: CNNConfig, dataset: Dataset) -> tuple[np.ndarray, ...]:
    """(x_train, y_train, x_test, y_test) after ``limit_train``/``limit_test``, cached per process."""
    key = ("cnn-arrays", cfg.limit_train, cfg.limit_test, cfg.seed)
    if key not in cache:
        x, y = dataset.x_train, dataset.y_train
        if cfg.limit_train is not None and cfg.limit_train < len(y):
            i = subset(len(y), cfg.limit_train, cfg.seed)
            x, y = x[i], y[i]
        xt = dataset.x_test if dataset.x_test is not None else x[:0]
        yt = dataset.y_test if dataset.y_test is not None else y[:0]
        if cfg.limit_test is not None and cfg.limit_test < len(yt):
            i = subset(len(yt), cfg.limit_test, cfg.seed + 1)
            xt, yt = xt[i], yt[i]
        cache[key] = (x, y.astype(np.int64), xt, yt.astype(np.int64))
    return cache[key]  # type: ignore[no-any-return]


def _shard(model: torch.nn.Module, opt: torch.optim.Optimizer, last: EpochStats | None,
           look: Lookahead | None, tta: str) -> State:
    """The state after an epoch: weights, optimizer, the lookahead average (``lookahead.*``) and
    that epoch's test pass (see the module doc)."""
    shard = state_arrays(model, opt)
    if look is not None:
        shard.update(look.state_arrays())
    # only a test pass under the config's tta (the run's last epoch) stands for the finished model
    if last is not None and last.test_accuracy is not None and last.test_loss is not None and last.tta == tta:
        shard[TEST_ACCURACY] = np.array([last.test_accuracy], np.float64)
        shard[TEST_LOSS] = np.array([last.test_loss], np.float64)
    return shard


def _own_state(state: State, rank: int) -> State:
    """``state`` with worker ``rank``'s own optimizer state (``local.{rank}.optim.*``) in place of
    worker 0's, when the checkpoint has one."""
    mine = f"local.{rank}."
    own = {key[len(mine):]: v for key, v in state.items() if key.startswith(f"{mine}optim.")}
    if rank == 0 or not own:
        return state
    return {**{key: v for key, v in state.items() if not key.startswith("optim.")}, **own}


def _local_sync(state: State, rank: int) -> LocalSync:
    """The error-feedback residuals of worker ``rank`` saved in ``state`` (None where absent)."""
    res, block = state.get(f"ef.{rank}"), state.get(f"ef.block.{rank}")
    return LocalSync(None if res is None else np.array(res, np.float32),
                     None if block is None else np.array(block, np.float32))


def _worker_shard(cfg: CNNConfig, rank: int, size: int, model: torch.nn.Module, opt: torch.optim.Optimizer,
                  last: EpochStats | None, sync: LocalSync, look: Lookahead | None) -> State:
    """What worker ``rank`` hands back: worker 0 the whole state; under local SGD the others their
    own optimizer state, and every worker its residuals."""
    shard = _shard(model, opt, last, look, cfg.tta) if rank == 0 else {}
    if size > 1 and local_sgd(cfg):
        if rank > 0:
            shard.update({f"local.{rank}.{key}": v for key, v in state_arrays(model, opt).items()
                          if key.startswith("optim.")})
        if sync.residual is not None and sync.block_residual is not None:
            shard[f"ef.{rank}"] = sync.residual.copy()
            shard[f"ef.block.{rank}"] = sync.block_residual.copy()
    return shard


def _model(cfg: CNNConfig, dataset: Dataset, state: State | None, dev: torch.device,
           with_optimizer: bool) -> tuple[torch.nn.Module, torch.optim.Optimizer | None]:
    model = training_layout(build_model(cfg.model, n_classes=dataset.n_classes, seed=cfg.seed).to(dev), cfg)
    opt = make_optimizer(model, cfg) if with_optimizer else None
    if state is not None:
        load_state_arrays(state, model, opt)
    return model, opt


class TorchDataStrategy:
    """Data-parallel training of a PyTorch CNN: each worker a slice of every mini-batch."""

    name = "data"
    kind = "cnn"

    def validate(self, config: CNNConfig, workers: int, dataset: Dataset) -> None:
        _check(config)
        shape = tuple(dataset.x_train.shape[1:])
        side = MIN_SIDE[config.model]
        if len(shape) != 3 or shape[2] != 3 or min(shape[:2]) < side:
            raise DataError(f"{dataset.source}: the {config.model} model takes RGB images of at least "
                            f"{side}x{side} (m, H, W, 3); this data set has samples of shape {shape} "
                            f"(set image_size in the config to resize them)")
        if config.cutout >= min(shape[:2]):
            raise ConfigError(f"{dataset.source}: cutout: {config.cutout} must be smaller than the images' side "
                              f"{min(shape[:2])} "
                              f"(airbench96 uses 12 on 32x32 images; 0 turns it off)")
        if dataset.n_classes < 2:
            raise DataError(f"{dataset.source}: a classifier needs at least 2 classes, found {dataset.n_classes}")
        top = int(dataset.y_train.max()) if len(dataset.y_train) else 0
        if top >= dataset.n_classes:
            raise DataError(f"{dataset.source}: label {top} is outside the {dataset.n_classes} classes")
        resolve_device(_check(config).device)

    def default_epochs_per_round(self, config: CNNConfig) -> int:
        return min(int(config.epochs), DEFAULT_EPOCHS_PER_ROUND)

    def initial_state(self, config: CNNConfig, dataset: Dataset) -> State:
        """The seeded initial weights; a :class:`DataInitialised` model is also set from a seeded
        sample of :data:`INIT_SAMPLES` training images (once per run: workers load the result)."""
        cfg = _check(config)
        model, _ = _model(cfg, dataset, None, torch.device("cpu"), with_optimizer=False)
        if isinstance(model, DataInitialised):
            x = arrays({}, cfg, dataset)[0]
            model.initialise_from(to_tensor(x[subset(len(x), INIT_SAMPLES, cfg.seed + 3)]))
        return state_arrays(model, None)  # the optimizer state starts empty

    def run_round(self, ctx: RoundContext) -> RoundReport:
        cfg = _check(ctx.config)
        dev = resolve_device(cfg.device)
        configure_torch(threads=worker_threads(ctx), device=dev)
        x, y, xt, yt = arrays(ctx.cache, cfg, ctx.dataset)
        model, opt = _model(cfg, ctx.dataset, _own_state(ctx.state, ctx.rank), dev, with_optimizer=True)
        assert opt is not None
        sync = _local_sync(ctx.state, ctx.rank)
        look = Lookahead.from_state(ctx.state, model) if cfg.lookahead else None
        extras: list[dict[str, Any]] = []
        costs: list[float] = []
        seconds: list[float] = []
        epochs = ctx.end_epoch - ctx.start_epoch
        last: list[EpochStats] = []

        def on_epoch(stats: EpochStats) -> None:
            last[:] = [stats]
            extras.append({"train_accuracy": stats.train_accuracy, "test_accuracy": stats.test_accuracy,
                           "test_loss": stats.test_loss, "tta": stats.tta, "images": stats.images,
                           "device": dev.type})
            costs.append(stats.loss)
            seconds.append(stats.seconds)
            done = len(extras)
            ctx.epoch_done(done)
            # in-round checkpoint: a collective decision after every epoch (CNN epochs are long); the
            # state is complete here (BN buffers averaged, the step taken); never after the last epoch
            if done < epochs and not (cfg.threshold > 0 and stats.loss <= cfg.threshold) and ctx.decide(done, 1)[1]:
                ctx.save_checkpoint(done, _worker_shard(cfg, ctx.rank, ctx.size, model, opt, stats, sync, look), costs,
                                    seconds, extras)

        out = train_epochs(
            model, opt, x, y, cfg, ctx.end_epoch - ctx.start_epoch,
            ctx.comm if ctx.size > 1 else None,
            start_epoch=ctx.start_epoch, device=dev, test=(xt, yt) if len(yt) else None,
            should_stop=lambda: time.monotonic() - ctx.started >= ctx.budget_s, on_epoch=on_epoch, sync=sync,
            lookahead=look,
        )
        shard = _worker_shard(cfg, ctx.rank, ctx.size, model, opt, last[0] if last else None, sync, look)
        return RoundReport(
            costs=[e.loss for e in out.epochs],
            seconds=[e.seconds for e in out.epochs],
            stop_reason="threshold" if out.stop_reason == "threshold" else None,
            shard=shard,
            extras=extras,
        )

    def merge(self, config: CNNConfig, shards: list[State]) -> State:
        """Worker 0's state (every worker holds the same model), plus what the others hand back
        under local SGD (their optimizer state and residuals, under their own keys)."""
        return {key: v for shard in shards for key, v in shard.items()}

    def finish(self, config: CNNConfig, state: State, dataset: Dataset) -> FinishedModel:
        """Train accuracy on (a sample of) the training set; test accuracy from the last epoch's
        test pass stored in ``state`` (scored again only for a state that has none)."""
        cfg = _check(config)
        dev = resolve_device(cfg.device)
        model, _ = _model(cfg, dataset, state, dev, with_optimizer=False)
        x, y, xt, yt = arrays({}, cfg, dataset)
        sampled = len(y) > FINISH_TRAIN_SAMPLES
        if sampled:  # a shuffled sample: the files are sorted by class
            i = subset(len(y), FINISH_TRAIN_SAMPLES, cfg.seed + 2)
            x, y = x[i], y[i]
        train_acc = evaluate(model, x, y, dev, tta=cfg.tta, precision=cfg.precision)
        reused = TEST_ACCURACY in state
        test_acc: float | None = None
        if reused:
            test_acc = float(np.asarray(state[TEST_ACCURACY]).reshape(-1)[0])
        elif len(yt):
            test_acc = evaluate(model, xt, yt, dev, tta=cfg.tta, precision=cfg.precision)
        metadata = model_metadata(cfg, class_names(dataset.classes, dataset.n_classes),
                                  input_shape=tuple(dataset.x_train.shape[1:]))
        metadata.pop("metrics")
        metadata.pop("run_id")
        metadata["evaluation"] = {
            "train_accuracy_method": "shuffled_sample" if sampled else "all_training_images",
            "train_accuracy_images": len(y),
            "test_accuracy_method": "last_epoch_test_pass" if reused else "scored_at_finish",
            "test_accuracy_images": len(yt),
        }
        return FinishedModel(registry_weights(model), metadata, train_acc, test_acc)
