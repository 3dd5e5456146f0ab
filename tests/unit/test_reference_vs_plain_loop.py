"""The reference trainer's mini-batch, momentum, Adam and softmax paths against an independent
plain numpy loop written here from the textbook formulas (nothing from ``lambdanet.nn``):

* mini-batches: the documented scheme of :mod:`lambdanet.nn.batches` — one in-order batch when
  ``batch_size >= m``, else ``default_rng([seed, epoch]).permutation(m)`` cut into runs of
  ``batch_size`` (the last holds the remainder); one update per batch, the epoch cost the mean of
  the batch costs taken before each update;
* momentum (the deeplearning.ai course's form): ``v = beta v + (1 - beta) g``; ``p -= lr v``;
* Adam (Kingma & Ba, Algorithm 1; the course's ``update_parameters_with_adam``): ``t`` counts the
  updates, ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2``, ``m_hat = m / (1 - b1^t)``,
  ``v_hat = v / (1 - b2^t)``, ``p -= lr m_hat / (sqrt(v_hat) + eps)``;
* softmax output with categorical cross-entropy on 3 CIFAR-10 classes: ``dZ_L = AL - Y``.

The full-batch gd path is checked against the course's loop in ``test_nn_reference.py``.
"""

from __future__ import annotations

from typing import Any

import h5py
import numpy as np
import pytest

from lambdanet.config import MLPConfig
from lambdanet.nn import reference
from tests.conftest import CATVNONCAT, CIFAR10

# ---- the plain loop ----------------------------------------------------------------------------


def _act(name: str, Z: np.ndarray) -> np.ndarray:
    if name == "relu":
        return np.maximum(0, Z)
    if name == "leaky_relu":
        return np.where(Z > 0, Z, 0.01 * Z)
    if name == "tanh":
        return np.tanh(Z)
    if name == "sigmoid":
        return 1 / (1 + np.exp(-Z))
    E = np.exp(Z - Z.max(axis=0))  # softmax, column by column
    return E / E.sum(axis=0)


def _act_slope(name: str, Z: np.ndarray, A: np.ndarray) -> np.ndarray:
    """g'(Z) of a hidden activation."""
    if name == "relu":
        return (Z > 0).astype(Z.dtype)
    if name == "leaky_relu":
        return np.where(Z > 0, 1.0, 0.01).astype(Z.dtype)
    if name == "tanh":
        return 1 - A**2
    return A * (1 - A)  # sigmoid


def plain_loop(X: np.ndarray, Y: np.ndarray, dims: list[int], acts: list[str], *, lr: float, epochs: int,
               batch_size: int, seed: int, optimizer: str, init: str = "deep", beta: float = 0.9,
               beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
               dtype: str = "float64") -> tuple[dict[str, np.ndarray], list[float]]:
    X, Y = X.astype(dtype), Y.astype(dtype)
    L = len(dims) - 1
    rng = np.random.RandomState(seed)
    p: dict[str, np.ndarray] = {}
    for l in range(1, L + 1):  # noqa: E741
        W = rng.randn(dims[l], dims[l - 1])
        scale = np.sqrt(2.0 / dims[l - 1]) if init == "he" and acts[l - 1] in ("relu", "leaky_relu") \
            else 1 / np.sqrt(dims[l - 1])
        p[f"W{l}"] = (W * scale).astype(dtype)
        p[f"b{l}"] = np.zeros((dims[l], 1), dtype)
    first = {k: np.zeros_like(v) for k, v in p.items()}  # momentum's v / Adam's m
    second = {k: np.zeros_like(v) for k, v in p.items()}  # Adam's v
    t = 0
    m = X.shape[1]
    costs = []
    for epoch in range(epochs):
        if batch_size >= m:
            batches = [np.arange(m)]
        else:
            perm = np.random.default_rng([seed, epoch]).permutation(m)
            batches = [perm[i:i + batch_size] for i in range(0, m, batch_size)]
        batch_costs = []
        for idx in batches:
            Xb, Yb = X[:, idx], Y[:, idx]
            mb = Xb.shape[1]
            As, Zs = [Xb], []
            for l in range(1, L + 1):  # noqa: E741
                Z = p[f"W{l}"] @ As[-1] + p[f"b{l}"]
                Zs.append(Z)
                As.append(_act(acts[l - 1], Z))
            AL = As[-1]
            if acts[-1] == "softmax":
                batch_costs.append(float(-np.sum(Yb * np.log(AL)) / mb))
            else:
                batch_costs.append(float(-np.sum(Yb * np.log(AL) + (1 - Yb) * np.log(1 - AL)) / mb))
            g: dict[str, np.ndarray] = {}
            dZ = AL - Yb
            for l in range(L, 0, -1):  # noqa: E741
                g[f"W{l}"] = dZ @ As[l - 1].T / mb
                g[f"b{l}"] = np.sum(dZ, axis=1, keepdims=True) / mb
                if l > 1:
                    dZ = (p[f"W{l}"].T @ dZ) * _act_slope(acts[l - 2], Zs[l - 2], As[l - 1])
            t += 1
            for k in p:
                if optimizer == "gd":
                    p[k] = p[k] - lr * g[k]
                elif optimizer == "momentum":
                    first[k] = beta * first[k] + (1 - beta) * g[k]
                    p[k] = p[k] - lr * first[k]
                else:
                    first[k] = beta1 * first[k] + (1 - beta1) * g[k]
                    second[k] = beta2 * second[k] + (1 - beta2) * g[k] ** 2
                    m_hat = first[k] / (1 - beta1**t)
                    v_hat = second[k] / (1 - beta2**t)
                    p[k] = p[k] - lr * m_hat / (np.sqrt(v_hat) + eps)
        costs.append(float(np.mean(batch_costs)))
    return p, costs


# ---- data ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cats() -> tuple[np.ndarray, np.ndarray]:
    """catvnoncat, every 8th feature of the first 90 images: (1536, 90), labels (1, 90)."""
    with h5py.File(CATVNONCAT / "datasets.h5", "r") as f:
        x, y = f["train_set_x"][:90], f["train_set_y"][:90]
    return (x.reshape(90, -1).T / 255)[::8], y.reshape(1, -1).astype(np.float64)


@pytest.fixture(scope="module")
def three_classes() -> tuple[np.ndarray, np.ndarray]:
    """30 CIFAR-10 test images each of airplane, automobile and bird, interleaved, downsampled to
    8x8x3: X (192, 90), one-hot Y (3, 90)."""
    with np.load(CIFAR10 / "cifar10_test.npz") as f:
        x, y = f["x"], f["y"]
    idx = np.stack([np.flatnonzero(y == c)[:30] for c in range(3)], axis=1).reshape(-1)  # 0, 1, 2, 0, 1, 2…
    x8 = x[idx][:, ::4, ::4, :]  # (90, 8, 8, 3)
    return x8.reshape(90, -1).T / 255, np.eye(3)[y[idx]].T


def _cfg(dims: list[int], acts: list[str], **kw: Any) -> MLPConfig:
    n = len(acts)
    return MLPConfig(layers=n, activations={f"layer{i + 1}": a for i, a in enumerate(acts)},
                     neurons={f"layer{i + 1}": d for i, d in enumerate(dims[1:])}, **kw)


def _compare(result: reference.TrainResult, params: dict[str, np.ndarray], costs: list[float],
             rtol: float) -> None:
    np.testing.assert_allclose(result.costs, costs, rtol=rtol)
    assert sorted(result.params) == sorted(params)
    for k, want in params.items():
        got = result.params[k]
        err = float(np.max(np.abs(got.astype(np.float64) - want))) / float(np.max(np.abs(want)))
        assert err <= rtol, f"{k}: max relative difference {err:.3g} > {rtol:g}"


# ---- the tests -----------------------------------------------------------------------------------

CASES = [  # optimizer, batch size (90 samples: 4 batches of 25 + 15; 32: 2 of 32 + 26; 90: full), lr
    ("gd", 25, 0.05), ("momentum", 25, 0.05), ("momentum", 90, 0.1), ("adam", 32, 0.005), ("adam", 90, 0.01)]


@pytest.mark.parametrize(("optimizer", "batch", "lr"), CASES)
def test_sigmoid_minibatch_paths_match_the_plain_loop(cats: tuple[np.ndarray, np.ndarray], optimizer: str,
                                                      batch: int, lr: float) -> None:
    X, Y = cats
    dims, acts = [X.shape[0], 7, 5, 1], ["relu", "tanh", "sigmoid"]
    cfg = _cfg(dims, acts, epochs=6, batch_size=batch, learning_rate=lr, optimizer=optimizer, seed=3,
               dtype="float64", beta=0.8, beta1=0.85, beta2=0.99, epsilon=1e-7)
    result = reference.train(cfg, X, Y)
    params, costs = plain_loop(X, Y, dims, acts, lr=lr, epochs=6, batch_size=batch, seed=3, optimizer=optimizer,
                               beta=0.8, beta1=0.85, beta2=0.99, eps=1e-7)
    assert result.epochs_run == 6 and len(result.costs) == 6
    _compare(result, params, costs, 1e-9)
    assert costs[-1] < costs[0]  # it learns: the comparison is not between two frozen networks


@pytest.mark.parametrize("optimizer", ["gd", "momentum", "adam"])
def test_softmax_three_classes_matches_the_plain_loop(three_classes: tuple[np.ndarray, np.ndarray],
                                                      optimizer: str) -> None:
    X, Y = three_classes
    dims, acts = [X.shape[0], 8, 6, 3], ["leaky_relu", "sigmoid", "softmax"]
    lr = 0.005 if optimizer == "adam" else 0.1
    cfg = _cfg(dims, acts, epochs=5, batch_size=20, learning_rate=lr, optimizer=optimizer, seed=7,
               dtype="float64", init="he")
    result = reference.train(cfg, X, Y)
    params, costs = plain_loop(X, Y, dims, acts, lr=lr, epochs=5, batch_size=20, seed=7, optimizer=optimizer,
                               init="he")
    _compare(result, params, costs, 1e-9)
    assert costs[0] == pytest.approx(np.log(3), rel=0.2)  # three classes, near-uniform at the start


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_float32_paths_stay_within_1e4_of_the_float64_plain_loop(
        cats: tuple[np.ndarray, np.ndarray], three_classes: tuple[np.ndarray, np.ndarray], optimizer: str) -> None:
    for (X, Y), acts, hidden in ((cats, ["relu", "sigmoid"], 6), (three_classes, ["tanh", "softmax"], 5)):
        dims = [X.shape[0], hidden, Y.shape[0]]
        lr = 0.005 if optimizer == "adam" else 0.05
        cfg = _cfg(dims, acts, epochs=3, batch_size=30, learning_rate=lr, optimizer=optimizer, seed=2,
                   dtype="float32")
        result = reference.train(cfg, X, Y)
        assert all(v.dtype == np.float32 for v in result.params.values())
        params, costs = plain_loop(X, Y, dims, acts, lr=lr, epochs=3, batch_size=30, seed=2, optimizer=optimizer)
        _compare(result, params, costs, 1e-4)
