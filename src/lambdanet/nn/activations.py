"""Activation functions of the numpy network, forward and backward, vectorised.

Every function works in the dtype of its input (float32 stays float32): constants are Python
floats, which NumPy treats as "weak" scalars. ``sigmoid`` and ``softmax`` are numerically stable
(no overflow for any finite ``Z``).

>>> forward("relu", Z)              # A, same shape as Z
>>> backward("relu", dA, Z, A)      # dZ = dA * g'(Z)

``softmax`` is an output activation only: paired with categorical cross-entropy its ``dZ`` is
``AL - Y`` (see :mod:`lambdanet.nn.losses`), so :func:`backward` refuses it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

LEAKY_SLOPE = 0.01
NAMES = ("relu", "leaky_relu", "tanh", "sigmoid", "softmax")
HIDDEN = ("relu", "leaky_relu", "tanh", "sigmoid")
OUTPUT = ("sigmoid", "softmax")


def relu(Z: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.maximum(Z, 0)
    return out


def leaky_relu(Z: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.where(Z > 0, Z, Z * LEAKY_SLOPE)
    return out


def tanh(Z: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.tanh(Z)
    return out


def sigmoid(Z: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-Z) without overflow: e^-|Z| is always in (0, 1]."""
    E = np.exp(-np.abs(Z))
    out: np.ndarray = np.where(Z >= 0, 1 / (1 + E), E / (1 + E))
    return out


def softmax(Z: np.ndarray) -> np.ndarray:
    """Column-wise softmax of (C, m) scores; each column sums to 1."""
    E = np.exp(Z - Z.max(axis=0, keepdims=True))  # (C, m), max entry of each column is 1
    out: np.ndarray = E / E.sum(axis=0, keepdims=True)
    return out


def relu_backward(dA: np.ndarray, Z: np.ndarray, A: np.ndarray) -> np.ndarray:
    return dA * (Z > 0)


def leaky_relu_backward(dA: np.ndarray, Z: np.ndarray, A: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.where(Z > 0, dA, dA * LEAKY_SLOPE)
    return out


def tanh_backward(dA: np.ndarray, Z: np.ndarray, A: np.ndarray) -> np.ndarray:
    out: np.ndarray = dA * (1 - A * A)
    return out


def sigmoid_backward(dA: np.ndarray, Z: np.ndarray, A: np.ndarray) -> np.ndarray:
    out: np.ndarray = dA * A * (1 - A)
    return out


_FORWARD: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": relu,
    "leaky_relu": leaky_relu,
    "tanh": tanh,
    "sigmoid": sigmoid,
    "softmax": softmax,
}
_BACKWARD: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "relu": relu_backward,
    "leaky_relu": leaky_relu_backward,
    "tanh": tanh_backward,
    "sigmoid": sigmoid_backward,
}


def forward(name: str, Z: np.ndarray) -> np.ndarray:
    """A = g(Z) for the activation ``name`` (one of :data:`NAMES`)."""
    try:
        fn = _FORWARD[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r} (known: {', '.join(NAMES)})") from None
    return fn(Z)


def backward(name: str, dA: np.ndarray, Z: np.ndarray, A: np.ndarray) -> np.ndarray:
    """dZ = dA * g'(Z) for a hidden activation (``A`` = g(Z) from the forward pass)."""
    try:
        fn = _BACKWARD[name]
    except KeyError:
        if name == "softmax":
            raise ValueError("softmax has no elementwise backward: its dZ is AL - Y (output layer only)") from None
        raise ValueError(f"unknown activation {name!r} (known: {', '.join(HIDDEN)})") from None
    return fn(dA, Z, A)
