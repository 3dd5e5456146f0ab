"""What the numpy MLP strategies (``neuron``, ``data``) share: data matrices, the initial state,
the state's key names, and the end-of-run model (weights, metadata, accuracies).

State keys: ``param.W1`` … ``param.bL`` and the optimizer's ``opt.t``, ``opt.m.W1``, ``opt.v.W1``…
(see :mod:`lambdanet.nn.optimizers`); every array but ``opt.t`` has the rows of its parameter.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from lambdanet.config import MLPConfig
from lambdanet.data.dataset import Dataset
from lambdanet.data.readers import to_matrix, to_targets
from lambdanet.engine.strategies.base import FinishedModel, RoundContext, State
from lambdanet.errors import ConfigError
from lambdanet.nn import mlp
from lambdanet.nn.optimizers import Optimizer, make_optimizer
from lambdanet.nn.reference import accuracy

DEFAULT_EPOCHS_PER_ROUND = 1000


def round_config(ctx: RoundContext) -> MLPConfig:
    """The round's config, narrowed to the MLP kind these strategies train."""
    if not isinstance(ctx.config, MLPConfig):
        raise ConfigError(f"this strategy trains an MLP config, got {type(ctx.config).__name__}")
    return ctx.config


def check_config(config: Any, dataset: Dataset) -> MLPConfig:
    """The MLP config, checked against the data (output layer vs classes)."""
    if not isinstance(config, MLPConfig):
        raise ConfigError(f"this strategy trains an MLP config, got {type(config).__name__}")
    out, n_out = config.activation_list[-1], config.hidden_sizes[-1]
    if out == "softmax" and n_out != dataset.n_classes:
        raise ConfigError(f"neurons.layer{config.layers}: a softmax output needs one neuron per class "
                          f"({dataset.n_classes}: {', '.join(dataset.classes)}), got {n_out}")
    if out == "sigmoid" and dataset.n_classes != 2:
        raise ConfigError(f"activations.layer{config.layers}: a sigmoid output needs 2 classes but the data "
                          f"has {dataset.n_classes}; use softmax with {dataset.n_classes} neurons")
    return config


def matrices(ctx_or_cache: RoundContext | dict[str, Any], config: MLPConfig,
             dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """X (n_x, m), Y (n_L, m) of the training set in the config's dtype, cached per process."""
    cache = ctx_or_cache.cache if isinstance(ctx_or_cache, RoundContext) else ctx_or_cache
    key = f"mlp-xy:{config.dtype}:{config.activation_list[-1]}"
    if key not in cache:
        X = to_matrix(dataset.x_train, config.dtype)  # (n_x, m)
        Y = to_targets(dataset.y_train, dataset.n_classes, config.activation_list[-1], config.dtype)
        cache[key] = (X, Y)
    return cache[key]  # type: ignore[no-any-return]


def initial_state(config: MLPConfig, dataset: Dataset) -> State:
    n_x = int(np.prod(dataset.x_train.shape[1:]))
    params = mlp.init_params(config.layer_dims(n_x), config.activation_list, config.init, config.seed,
                             config.dtype)
    state = {f"param.{k}": v for k, v in params.items()}
    state.update({f"opt.{k}": v for k, v in make_optimizer(config).state_dict().items()})
    return state


def split_state(state: State) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """params (writable copies) and optimizer state of a (possibly sharded) state dict."""
    params = {k[6:]: np.array(v, copy=True) for k, v in state.items() if k.startswith("param.")}
    opt = {k[4:]: v for k, v in state.items() if k.startswith("opt.")}
    return params, opt


def join_state(params: dict[str, np.ndarray], optimizer: Optimizer) -> State:
    state = {f"param.{k}": v for k, v in params.items()}
    state.update({f"opt.{k}": v for k, v in optimizer.state_dict().items()})
    return state


def param_of(key: str) -> str | None:
    """``param.W1`` -> ``W1``; ``opt.m.W1`` -> ``W1``; ``opt.t`` -> None (replicated)."""
    if key.startswith("param."):
        return key[6:]
    if key.startswith("opt.") and "." in key[4:]:
        return key[4:].split(".", 1)[1]
    return None


def finish(config: MLPConfig, state: State, dataset: Dataset) -> FinishedModel:
    params = {k[6:]: np.ascontiguousarray(v) for k, v in state.items() if k.startswith("param.")}
    acts = config.activation_list
    X = to_matrix(dataset.x_train, config.dtype)
    train_acc = accuracy(params, X, dataset.y_train, acts)
    test_acc = None
    if dataset.x_test is not None and dataset.y_test is not None and len(dataset.y_test):
        test_acc = accuracy(params, to_matrix(dataset.x_test, config.dtype), dataset.y_test, acts)
    n_x = int(np.prod(dataset.x_train.shape[1:]))
    metadata = {
        "kind": "mlp",
        "classes": list(dataset.classes),
        "input_shape": [int(s) for s in dataset.input_shape],
        "dtype": config.dtype,
        "preprocessing": {"resize": "bilinear", "scale": 255.0, "mean": None, "std": None},
        "architecture": {"layer_dims": config.layer_dims(n_x), "activations": acts},
        "config": config.model_dump(),
    }
    return FinishedModel(params, metadata, train_acc, test_acc)


def close_epoch(ctx: RoundContext, cfg: MLPConfig, epoch: int, cost: float, t0: float,
                costs: list[float], seconds: list[float],
                snapshot: Callable[[], State] | None = None) -> tuple[str | None, bool]:
    """Record an epoch's cost and time; return (stop reason, whether the round goes on):
    early stop at ``threshold`` (as nn.reference), or an epoch boundary once the round's
    seconds budget is spent. When the round goes on and an in-round checkpoint is due (the
    same collective decision), write ``snapshot()`` — this worker's shard — as its part."""
    costs.append(cost)
    seconds.append(time.perf_counter() - t0)
    done = len(costs)
    ctx.epoch_done(done)
    if cfg.threshold > 0 and cost <= cfg.threshold:
        return "threshold", False
    if epoch + 1 >= ctx.end_epoch:
        return None, False
    over, due = ctx.decide(done)
    if over:
        return None, False
    if due and snapshot is not None:
        ctx.save_checkpoint(done, snapshot(), costs, seconds)
    return None, True


class MLPStrategy:
    """What the MLP strategies share: config check, initial state, round length, final model.
    Subclasses add ``name``, ``run_round`` and ``merge``."""

    kind = "mlp"

    def validate(self, config: MLPConfig, workers: int, dataset: Dataset) -> None:
        check_config(config, dataset)

    def initial_state(self, config: MLPConfig, dataset: Dataset) -> State:
        return initial_state(config, dataset)

    def default_epochs_per_round(self, config: MLPConfig) -> int:
        return min(int(config.epochs), DEFAULT_EPOCHS_PER_ROUND)

    def finish(self, config: MLPConfig, state: State, dataset: Dataset) -> FinishedModel:
        return finish(config, state, dataset)
