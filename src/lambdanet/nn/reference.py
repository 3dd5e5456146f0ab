"""THE single-process reference trainer: what every distributed strategy must reproduce.

>>> result = train(config, X, Y)           # X (n_x, m), Y (1, m) or one-hot (C, m)
>>> result.costs[-1], result.stop_reason

One epoch = the mini-batches of :func:`lambdanet.nn.batches.minibatches` for ``(seed, epoch)``;
for each batch: forward, the batch cost (before the update), backward, one optimizer step. The
epoch cost is the mean of its batch costs. Training stops after ``config.epochs`` epochs
(``"epoch_limit"``) or as soon as an epoch cost is ``<= config.threshold`` when the threshold is
positive (``"threshold"``). Epochs are numbered from 0, as the course's iterations.

Resuming: ``train(config, X, Y, start_epoch=k, params=p, optimizer=o)`` with the params and
optimizer after epoch ``k - 1`` continues exactly as an uninterrupted run would (the batches
depend only on ``(seed, epoch)``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from lambdanet.config import MLPConfig
from lambdanet.nn import mlp
from lambdanet.nn.batches import minibatches
from lambdanet.nn.losses import cost as batch_cost
from lambdanet.nn.optimizers import Optimizer, make_optimizer


@dataclass
class TrainResult:
    """``costs`` holds the epoch costs of this call (epochs ``start_epoch … epochs_run - 1``);
    ``epochs_run`` counts all epochs done since epoch 0."""

    params: dict[str, np.ndarray]
    costs: list[float] = field(default_factory=list)
    epochs_run: int = 0
    stop_reason: str = "epoch_limit"  # "epoch_limit" | "threshold"


def gather_columns(X: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """X[:, idx], the fast way for the layout at hand (for a Fortran-ordered X — as
    ``to_matrix`` makes it — fancy indexing copies whole contiguous columns; ``take`` is far slower)."""
    return X[:, idx] if X.flags.f_contiguous else X.take(idx, axis=1)


def run_epoch(params: dict[str, np.ndarray], optimizer: Optimizer, X: np.ndarray, Y: np.ndarray,
              activations: list[str], batch_size: int, seed: int, epoch: int) -> float:
    """Train one epoch in place; returns the mean of the batch costs."""
    m = X.shape[1]
    output = activations[-1]
    batches = minibatches(m, batch_size, seed, epoch)
    total = 0.0
    for idx in batches:
        if len(batches) == 1:
            Xb, Yb = X, Y  # full batch in order: no copy
        else:
            Xb = gather_columns(X, idx)  # (n_x, mb)
            Yb = Y[:, idx]  # (n_L, mb)
        AL, caches = mlp.forward(params, Xb, activations)
        total += batch_cost(output, AL, Yb)
        grads = mlp.backward(params, caches, AL, Yb, activations)
        optimizer.step(params, grads)
    return total / len(batches)


def train(config: MLPConfig, X: np.ndarray, Y: np.ndarray, *, start_epoch: int = 0,
          params: dict[str, np.ndarray] | None = None, optimizer: Optimizer | None = None,
          on_epoch: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train ``config`` on ``X`` (n_x, m) / ``Y`` (n_L, m) from ``start_epoch`` to the end.

    ``params`` (updated in place) and ``optimizer`` default to a fresh init from the config's seed
    and a fresh optimizer. ``on_epoch(epoch, cost)`` is called after every epoch.
    """
    dtype = np.dtype(config.dtype)
    X = np.asarray(X, dtype=dtype)
    Y = np.asarray(Y, dtype=dtype)
    activations = config.activation_list
    if X.ndim != 2 or Y.ndim != 2 or X.shape[1] != Y.shape[1]:
        raise ValueError(f"X must be (n_x, m) and Y (n_L, m); got X {X.shape}, Y {Y.shape}")
    if Y.shape[0] != config.hidden_sizes[-1]:
        raise ValueError(f"Y has {Y.shape[0]} rows but the output layer has {config.hidden_sizes[-1]} "
                         f"neurons")
    if params is None:
        params = mlp.init_params(config.layer_dims(X.shape[0]), activations, config.init, config.seed,
                                 config.dtype)
    if optimizer is None:
        optimizer = make_optimizer(config)
    result = TrainResult(params=params, epochs_run=start_epoch)
    for epoch in range(start_epoch, config.epochs):
        c = run_epoch(params, optimizer, X, Y, activations, config.batch_size, config.seed, epoch)
        result.costs.append(c)
        result.epochs_run = epoch + 1
        if on_epoch is not None:
            on_epoch(epoch, c)
        if config.threshold > 0 and c <= config.threshold:
            result.stop_reason = "threshold"
            break
    return result


def accuracy(params: dict[str, np.ndarray], X: np.ndarray, labels: np.ndarray,
             activations: list[str]) -> float:
    """Fraction of columns of X whose predicted class equals ``labels`` (m,) — sigmoid: p > 0.5."""
    AL = mlp.predict_proba(params, np.asarray(X, dtype=params["W1"].dtype), activations)
    pred = (AL[0] > 0.5).astype(np.int64) if AL.shape[0] == 1 else AL.argmax(axis=0)
    return float(np.mean(pred == np.asarray(labels).reshape(-1)))
