"""The deeplearning.ai course's plain numpy L-layer loop (relu hidden layers, sigmoid output,
full-batch gradient descent), kept independent of ``lambdanet.nn`` so benchmarks and checks can
time and compare lambdanet against it.

>>> params, costs = plain_loop(X, Y, [12288, 20, 7, 5, 1], 0.0075, 2500, seed=1, dtype="float32")

``X`` is (n_x, m) scaled to [0, 1], ``Y`` (1, m) of 0/1. Initialisation is the course's
``initialize_parameters_deep``: ``np.random.seed(seed)``-equivalent ``RandomState(seed).randn``
divided by ``sqrt(n_prev)``, zero biases. ``costs[i]`` is the cost of iteration ``i`` (before its
update), so ``costs[2400]`` is the course's "Cost after iteration 2400".
"""

from __future__ import annotations

import numpy as np


def plain_loop(X: np.ndarray, Y: np.ndarray, layer_dims: list[int], lr: float, epochs: int,
               seed: int, dtype: str) -> tuple[dict[str, np.ndarray], list[float]]:
    X = np.asarray(X, dtype=dtype)
    Y = np.asarray(Y, dtype=dtype)
    m = X.shape[1]
    L = len(layer_dims) - 1
    rng = np.random.RandomState(seed)
    params: dict[str, np.ndarray] = {}
    for l in range(1, L + 1):  # noqa: E741
        params[f"W{l}"] = (rng.randn(layer_dims[l], layer_dims[l - 1]) / np.sqrt(layer_dims[l - 1])).astype(dtype)
        params[f"b{l}"] = np.zeros((layer_dims[l], 1), dtype=dtype)
    eps = 1e-7 if np.dtype(dtype) == np.float32 else 1e-12
    costs: list[float] = []
    with np.errstate(over="ignore"):  # exp(-Z) may overflow to inf for very negative Z: 1/inf = 0
        _run(X, Y, params, L, m, lr, epochs, eps, costs)
    return params, costs


def _run(X: np.ndarray, Y: np.ndarray, params: dict[str, np.ndarray], L: int, m: int, lr: float,
         epochs: int, eps: float, costs: list[float]) -> None:
    for _ in range(epochs):
        # forward: [LINEAR -> RELU] * (L-1) -> LINEAR -> SIGMOID
        caches = []
        A = X
        for l in range(1, L):  # noqa: E741
            Z = np.dot(params[f"W{l}"], A) + params[f"b{l}"]
            caches.append((A, Z))
            A = np.maximum(0, Z)
        Z = np.dot(params[f"W{L}"], A) + params[f"b{L}"]
        caches.append((A, Z))
        AL = 1 / (1 + np.exp(-Z))
        # cross-entropy cost
        P = np.clip(AL, eps, 1 - eps)
        cost = -(np.dot(Y, np.log(P).T) + np.dot(1 - Y, np.log(1 - P).T)) / m
        costs.append(float(np.squeeze(cost)))
        # backward
        grads = {}
        dZ = AL - Y
        for l in range(L, 0, -1):  # noqa: E741
            A_prev, _ = caches[l - 1]
            grads[f"dW{l}"] = np.dot(dZ, A_prev.T) / m
            grads[f"db{l}"] = np.sum(dZ, axis=1, keepdims=True) / m
            if l > 1:
                dA = np.dot(params[f"W{l}"].T, dZ)
                dZ = np.array(dA, copy=True)
                dZ[caches[l - 2][1] <= 0] = 0
        # update
        for l in range(1, L + 1):  # noqa: E741
            params[f"W{l}"] = params[f"W{l}"] - lr * grads[f"dW{l}"]
            params[f"b{l}"] = params[f"b{l}"] - lr * grads[f"db{l}"]
