"""Optimizers: plain gradient descent, momentum and Adam — elementwise, in place.

Each optimizer keeps its state per parameter key with the shape of the gradients it is given,
so a worker that owns a block of a parameter (the ``neuron`` strategy: some columns of ``W1``)
can step just that block and hold just its state. ``state_dict()`` returns plain arrays
(safetensors-ready): ``{"t": array([steps]), "v.W1": …}`` for momentum,
``{"t": …, "m.W1": …, "v.W1": …}`` for Adam.

Update rules (``g`` the gradient, ``t`` the number of steps taken, counting this one):

* gd:       ``p -= lr * g``
* momentum: ``v = beta * v + (1 - beta) * g``; ``p -= lr * v``
* adam:     ``m = b1 m + (1-b1) g``; ``v = b2 v + (1-b2) g²``;
  ``p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)``
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from lambdanet.config import MLPConfig

Arrays = dict[str, np.ndarray]


@runtime_checkable
class Optimizer(Protocol):
    def step(self, params: Arrays, grads: Arrays) -> None:
        """Update ``params`` in place over the keys of ``grads``."""

    def state_dict(self) -> Arrays: ...

    def load_state_dict(self, state: Arrays) -> None: ...


class _Base:
    """Step counter and slot storage shared by the three optimizers."""

    slots: tuple[str, ...] = ()

    def __init__(self, learning_rate: float) -> None:
        self.lr = float(learning_rate)
        self.t = 0
        self.state: dict[str, Arrays] = {s: {} for s in self.slots}

    def _slot(self, slot: str, key: str, like: np.ndarray) -> np.ndarray:
        table = self.state[slot]
        arr = table.get(key)
        if arr is None or arr.shape != like.shape:
            if arr is not None:
                raise ValueError(f"optimizer state {slot}.{key} has shape {arr.shape} but the gradient "
                                 f"has shape {like.shape}")
            arr = table[key] = np.zeros_like(like)
        return arr

    def state_dict(self) -> Arrays:
        out: Arrays = {"t": np.array([self.t], dtype=np.int64)}
        for slot, table in self.state.items():
            for key, arr in table.items():
                out[f"{slot}.{key}"] = arr.copy()
        return out

    def load_state_dict(self, state: Arrays) -> None:
        tables: dict[str, Arrays] = {s: {} for s in self.slots}
        t = 0
        for name, arr in state.items():
            if name == "t":
                t = int(np.asarray(arr).reshape(-1)[0])
                continue
            slot, _, key = name.partition(".")
            if slot not in tables or not key:
                raise ValueError(f"optimizer state: unexpected entry {name!r} for "
                                 f"{type(self).__name__} (expected t{''.join(', ' + s + '.*' for s in self.slots)})")
            tables[slot][key] = np.array(arr, copy=True)
        self.t = t
        self.state = tables


class GradientDescent(_Base):
    """``p -= lr * g``."""

    def step(self, params: Arrays, grads: Arrays) -> None:
        self.t += 1
        lr = self.lr
        for key, g in grads.items():
            params[key] -= lr * g


class Momentum(_Base):
    """Exponentially averaged gradients (the course's form: ``v = beta v + (1-beta) g``)."""

    slots = ("v",)

    def __init__(self, learning_rate: float, beta: float = 0.9) -> None:
        super().__init__(learning_rate)
        self.beta = float(beta)

    def step(self, params: Arrays, grads: Arrays) -> None:
        self.t += 1
        lr, beta = self.lr, self.beta
        for key, g in grads.items():
            v = self._slot("v", key, g)
            v *= beta
            v += (1 - beta) * g
            params[key] -= lr * v


class Adam(_Base):
    """Adam with bias correction; ``t`` counts the steps taken."""

    slots = ("m", "v")

    def __init__(self, learning_rate: float, beta1: float = 0.9, beta2: float = 0.999,
                 epsilon: float = 1e-8) -> None:
        super().__init__(learning_rate)
        self.beta1, self.beta2, self.epsilon = float(beta1), float(beta2), float(epsilon)

    def step(self, params: Arrays, grads: Arrays) -> None:
        self.t += 1
        b1, b2, eps, lr = self.beta1, self.beta2, self.epsilon, self.lr
        c1 = 1 - b1**self.t
        c2 = 1 - b2**self.t
        for key, g in grads.items():
            m = self._slot("m", key, g)
            v = self._slot("v", key, g)
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * (g * g)
            params[key] -= lr * (m / c1) / (np.sqrt(v / c2) + eps)


def make_optimizer(config: MLPConfig) -> Optimizer:
    """The optimizer named by ``config.optimizer`` (gd | momentum | adam) with its settings."""
    name = config.optimizer
    if name == "gd":
        return GradientDescent(config.learning_rate)
    if name == "momentum":
        return Momentum(config.learning_rate, config.beta)
    if name == "adam":
        return Adam(config.learning_rate, config.beta1, config.beta2, config.epsilon)
    raise ValueError(f"unknown optimizer {name!r} (known: gd, momentum, adam)")
