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


def _accuracy(params: dict[str, np.ndarray], X: np.ndarray, y: np.ndarray) -> float:
    L = len(params) // 2
    A = X.astype(params["W1"].dtype)
    for l in range(1, L + 1):  # noqa: E741
        Z = params[f"W{l}"] @ A + params[f"b{l}"]
        A = np.maximum(0, Z) if l < L else 1 / (1 + np.exp(-Z))
    return float(np.mean((A[0] > 0.5) == (y.reshape(-1) == 1)))


def main(argv: list[str] | None = None) -> None:
    """Check the course's figures (cost after iteration 2400, train/test accuracy) with the plain
    loop and, with ``--compare``, with ``lambdanet.nn.reference.train`` on the same data."""
    import argparse
    import time
    from pathlib import Path

    import h5py

    ap = argparse.ArgumentParser(description=main.__doc__)
    shared = Path(__file__).resolve().parents[2] / "shared"
    ap.add_argument("--data", default=str(shared / "datasets" / "catvnoncat" / "datasets.h5"))
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--epochs", type=int, default=2500)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--compare", action="store_true", help="also train with lambdanet.nn.reference")
    args = ap.parse_args(argv)
    with h5py.File(args.data, "r") as f:
        x, y = f["train_set_x"][()], f["train_set_y"][()]
        xt, yt = f["test_set_x"][()], f["test_set_y"][()]
    X = (x.reshape(x.shape[0], -1).T / 255).astype(args.dtype)
    Xt = (xt.reshape(xt.shape[0], -1).T / 255).astype(args.dtype)
    Y = y.reshape(1, -1).astype(args.dtype)
    dims = [X.shape[0], 20, 7, 5, 1]
    runs: dict[str, tuple[dict[str, np.ndarray], list[float], float]] = {}
    t0 = time.perf_counter()
    params, costs = plain_loop(X, Y, dims, 0.0075, args.epochs, args.seed, args.dtype)
    runs["plain numpy"] = (params, costs, time.perf_counter() - t0)
    if args.compare:
        from lambdanet.config import MLPConfig
        from lambdanet.nn import reference

        cfg = MLPConfig(epochs=args.epochs, layers=4, learning_rate=0.0075, batch_size=X.shape[1],
                        seed=args.seed, dtype=args.dtype,
                        activations={"layer1": "relu", "layer2": "relu", "layer3": "relu", "layer4": "sigmoid"},
                        neurons={"layer1": 20, "layer2": 7, "layer3": 5, "layer4": 1})
        t0 = time.perf_counter()
        r = reference.train(cfg, X, Y)
        runs["lambdanet"] = (r.params, r.costs, time.perf_counter() - t0)
    at = min(2400, args.epochs - 1)
    for name, (p, c, secs) in runs.items():
        print(f"{name:12s} {args.dtype}: cost after iteration {at} = {c[at]:.6f}  train acc "
              f"{_accuracy(p, X, y):.4f}  test acc {_accuracy(p, Xt, yt):.4f}  "
              f"{secs:.2f} s ({secs / args.epochs * 1e3:.2f} ms/epoch)")


if __name__ == "__main__":
    main()
