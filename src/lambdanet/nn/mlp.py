"""The fully connected network: parameter init, forward and backward passes, vectorised.

Parameters are a flat dict ``{"W1": (n1, n0), "b1": (n1, 1), …, "WL": (nL, nL-1), "bL": (nL, 1)}``
(safetensors-ready). ``X`` is (n_x, m): one column per sample. Layer ``l`` computes
``Z_l = W_l @ A_{l-1} + b_l`` and ``A_l = g_l(Z_l)``; the last layer is ``sigmoid`` (binary, Y is
(1, m)) or ``softmax`` (multi-class, Y is one-hot (C, m)); either way ``dZ_L = AL - Y``.

Everything runs in the dtype of the parameters and inputs (float32 or float64); nothing is
upcast. The backward pass never computes ``dA_0`` (the gradient w.r.t. the inputs), which would
cost as much as the largest matmul and is not needed.

The per-layer helpers (:func:`layer_forward`, :func:`layer_backward`) are what a model-parallel
worker uses on its own rows of each layer.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from lambdanet.errors import ConfigError
from lambdanet.nn import activations as act
from lambdanet.nn.losses import output_delta

Params = dict[str, np.ndarray]


class Cache(NamedTuple):
    """What layer l keeps from the forward pass for its backward pass."""

    A_prev: np.ndarray  # (n_{l-1}, m)
    Z: np.ndarray  # (n_l, m)
    A: np.ndarray  # (n_l, m)


def n_layers(params: Params) -> int:
    """L, the number of weight layers in ``params``."""
    return sum(1 for k in params if k.startswith("W"))


def init_params(layer_dims: list[int], activations: list[str], init: str, seed: int,
                dtype: str) -> Params:
    """Random weights and zero biases, drawn with ``np.random.RandomState(seed).randn`` layer by
    layer in order (float64, then cast to ``dtype``).

    ``init="deep"``: ``randn / sqrt(n_prev)`` for every layer (the deeplearning.ai reference);
    ``init="he"``: ``randn * sqrt(2 / n_prev)`` for relu/leaky_relu layers, ``randn / sqrt(n_prev)``
    for the others (itsacat's).
    """
    if len(layer_dims) != len(activations) + 1:
        raise ConfigError(f"layer_dims has {len(layer_dims)} sizes but there are {len(activations)} "
                          f"activations; expected one more size (the input) than activations")
    if init not in ("deep", "he"):
        raise ConfigError(f"init: unknown scheme {init!r} (allowed: deep, he)")
    if not 0 <= seed < 2**32:
        raise ConfigError(f"seed: must be between 0 and 2**32 - 1, got {seed}")
    rng = np.random.RandomState(seed)
    params: Params = {}
    for l in range(1, len(layer_dims)):  # noqa: E741 - l is the course's layer index
        n_prev, n = layer_dims[l - 1], layer_dims[l]
        W = rng.randn(n, n_prev)  # (n_l, n_{l-1}) float64
        if init == "he" and activations[l - 1] in ("relu", "leaky_relu"):
            W = W * np.sqrt(2.0 / n_prev)
        else:
            W = W / np.sqrt(n_prev)
        params[f"W{l}"] = W.astype(dtype)
        params[f"b{l}"] = np.zeros((n, 1), dtype=dtype)
    return params


def layer_forward(W: np.ndarray, b: np.ndarray, A_prev: np.ndarray, activation: str) -> Cache:
    """One layer: Z = W @ A_prev + b, A = g(Z)."""
    Z = W @ A_prev  # (n_l, m)
    Z += b
    return Cache(A_prev, Z, act.forward(activation, Z))


def forward(params: Params, X: np.ndarray, activations: list[str]) -> tuple[np.ndarray, list[Cache]]:
    """The forward pass: returns AL (n_L, m) and one :class:`Cache` per layer."""
    caches: list[Cache] = []
    A = X  # (n_0, m)
    for l, name in enumerate(activations, start=1):  # noqa: E741
        cache = layer_forward(params[f"W{l}"], params[f"b{l}"], A, name)
        caches.append(cache)
        A = cache.A
    return A, caches


def predict_proba(params: Params, X: np.ndarray, activations: list[str]) -> np.ndarray:
    """AL (n_L, m): sigmoid probabilities (1, m) or softmax columns (C, m)."""
    A = X
    for l, name in enumerate(activations, start=1):  # noqa: E741
        Z = params[f"W{l}"] @ A
        Z += params[f"b{l}"]
        A = act.forward(name, Z)
    return A


def linear_grads(dZ: np.ndarray, A_prev: np.ndarray, m_total: int,
                 out: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """dW = dZ @ A_prev.T / m, db = sum(dZ) / m (rows of dZ may be any subset of the layer);
    written into ``out`` = (dW, db) when given (the same bits as new arrays)."""
    dW = np.matmul(dZ, A_prev.T, out=None if out is None else out[0])  # (n_l, n_{l-1})
    dW /= m_total
    db = np.sum(dZ, axis=1, keepdims=True, out=None if out is None else out[1])  # (n_l, 1)
    db /= m_total
    return dW, db


def layer_backward(dA: np.ndarray, cache: Cache, activation: str) -> np.ndarray:
    """dZ of a hidden layer from dA (n_l, m)."""
    return act.backward(activation, dA, cache.Z, cache.A)


def backward(params: Params, caches: list[Cache], AL: np.ndarray, Y: np.ndarray,
             activations: list[str], m_total: int | None = None, out: Params | None = None) -> Params:
    """Gradients ``{"W1": dW1, "b1": db1, …}`` of the mean cost.

    ``dZ_L = AL - Y``; ``dW_l = dZ_l @ A_{l-1}.T / m_total``; ``db_l = sum(dZ_l) / m_total``.
    ``m_total`` defaults to the batch size ``AL.shape[1]`` (the data strategy passes the size of
    the whole mini-batch when each worker holds a slice of it). With ``out`` (arrays of the
    parameters' shapes: the data strategy's views of one flat buffer) the gradients are written
    there instead of into new arrays.
    """
    m = AL.shape[1] if m_total is None else m_total
    L = len(caches)
    grads: Params = {}
    dZ = output_delta(activations[-1], AL, Y)  # (n_L, m)
    for l in range(L, 0, -1):  # noqa: E741
        cache = caches[l - 1]
        into = None if out is None else (out[f"W{l}"], out[f"b{l}"])
        grads[f"W{l}"], grads[f"b{l}"] = linear_grads(dZ, cache.A_prev, m, into)
        if l > 1:
            dA_prev = params[f"W{l}"].T @ dZ  # (n_{l-1}, m)
            dZ = layer_backward(dA_prev, caches[l - 2], activations[l - 2])
    return dict(sorted(grads.items(), key=lambda kv: (int(kv[0][1:]), kv[0][0] == "b")))
