"""The reference trainer on the real catvnoncat data against an independent plain-numpy loop
(the deeplearning.ai L-layer model), plus resume, early stop and mini-batch determinism."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from lambdanet.config import MLPConfig
from lambdanet.nn import reference
from lambdanet.nn.optimizers import make_optimizer
from tests.conftest import CATVNONCAT

LAYERS = [12288, 20, 7, 5, 1]


@pytest.fixture(scope="module")
def cat_data() -> tuple[np.ndarray, np.ndarray]:
    with h5py.File(CATVNONCAT / "datasets.h5", "r") as f:
        x, y = f["train_set_x"][()], f["train_set_y"][()]
    return x.reshape(x.shape[0], -1).T / 255, y.reshape(1, -1).astype(np.float64)


def course_loop(X, Y, layer_dims, lr, iterations, seed, dtype):
    """The course's L_layer_model, written out independently of lambdanet.nn."""
    X, Y = X.astype(dtype), Y.astype(dtype)
    np.random.seed(seed)
    L = len(layer_dims) - 1
    p = {}
    for l in range(1, L + 1):  # noqa: E741
        p["W" + str(l)] = (np.random.randn(layer_dims[l], layer_dims[l - 1]) / np.sqrt(layer_dims[l - 1])).astype(dtype)
        p["b" + str(l)] = np.zeros((layer_dims[l], 1), dtype)
    m = X.shape[1]
    costs = []
    for _ in range(iterations):
        As, Zs = [X], []
        for l in range(1, L + 1):  # noqa: E741
            Z = p["W" + str(l)].dot(As[-1]) + p["b" + str(l)]
            Zs.append(Z)
            As.append(np.maximum(0, Z) if l < L else 1 / (1 + np.exp(-Z)))
        AL = As[-1]
        costs.append(float(np.squeeze(-(Y.dot(np.log(AL).T) + (1 - Y).dot(np.log(1 - AL).T)) / m)))
        dAL = -(np.divide(Y, AL) - np.divide(1 - Y, 1 - AL))
        dZ = dAL * AL * (1 - AL)
        grads = {}
        for l in range(L, 0, -1):  # noqa: E741
            grads["dW" + str(l)] = dZ.dot(As[l - 1].T) / m
            grads["db" + str(l)] = np.sum(dZ, axis=1, keepdims=True) / m
            dA = p["W" + str(l)].T.dot(dZ)
            if l > 1:
                dZ = np.array(dA, copy=True)
                dZ[Zs[l - 2] <= 0] = 0
        for l in range(1, L + 1):  # noqa: E741
            p["W" + str(l)] = p["W" + str(l)] - lr * grads["dW" + str(l)]
            p["b" + str(l)] = p["b" + str(l)] - lr * grads["db" + str(l)]
    return p, costs


def cfg(**kw) -> MLPConfig:
    base = {"epochs": 50, "layers": 4, "learning_rate": 0.0075, "batch_size": 209, "seed": 1,
            "activations": {"layer1": "relu", "layer2": "relu", "layer3": "relu", "layer4": "sigmoid"},
            "neurons": {"layer1": 20, "layer2": 7, "layer3": 5, "layer4": 1}}
    return MLPConfig(**{**base, **kw})


@pytest.mark.parametrize(("dtype", "rtol"), [("float64", 1e-9), ("float32", 2e-4)])
def test_full_batch_matches_the_course_loop(cat_data, dtype: str, rtol: float) -> None:
    X, Y = cat_data
    seen: list[tuple[int, float]] = []
    result = reference.train(cfg(dtype=dtype), X, Y, on_epoch=lambda e, c: seen.append((e, c)))
    ref_params, ref_costs = course_loop(X, Y, LAYERS, 0.0075, 50, 1, dtype)
    assert result.epochs_run == 50 and result.stop_reason == "epoch_limit"
    assert [e for e, _ in seen] == list(range(50)) and [c for _, c in seen] == result.costs
    np.testing.assert_allclose(result.costs, ref_costs, rtol=rtol)
    assert result.costs[0] == pytest.approx(0.771749, abs=1e-6)  # the course's "iteration 0"
    assert result.costs[-1] < result.costs[0]
    for k, v in ref_params.items():
        assert result.params[k].dtype == np.dtype(dtype)
        np.testing.assert_allclose(result.params[k], v, rtol=rtol, atol=rtol * 1e-2, err_msg=k)


@pytest.mark.parametrize("optimizer", ["gd", "momentum", "adam"])
def test_resume_equals_an_uninterrupted_run(cat_data, optimizer: str) -> None:
    X, Y = cat_data[0][::8, :80], cat_data[1][:, :80]  # 1536 features, 80 samples
    c = cfg(epochs=6, batch_size=32, optimizer=optimizer, learning_rate=0.01, dtype="float64",
            neurons={"layer1": 6, "layer2": 4, "layer3": 3, "layer4": 1})
    whole = reference.train(c, X, Y)
    half_opt = make_optimizer(c)
    first = reference.train(c.model_copy(update={"epochs": 3}), X, Y, optimizer=half_opt)
    # a checkpoint holds plain arrays: copy the params, rebuild the optimizer from its state
    params = {k: v.copy() for k, v in first.params.items()}
    opt = make_optimizer(c)
    opt.load_state_dict({k: v.copy() for k, v in half_opt.state_dict().items()})
    rest = reference.train(c, X, Y, start_epoch=3, params=params, optimizer=opt)
    assert rest.epochs_run == 6 and len(rest.costs) == 3
    assert first.costs + rest.costs == whole.costs
    for k in whole.params:
        np.testing.assert_array_equal(rest.params[k], whole.params[k])


def test_minibatch_runs_are_deterministic_and_epoch_cost_is_the_batch_mean(cat_data) -> None:
    X, Y = cat_data[0][::16, :50], cat_data[1][:, :50]
    c = cfg(epochs=2, batch_size=20, dtype="float64", neurons={"layer1": 4, "layer2": 3, "layer3": 2,
                                                                 "layer4": 1})
    a = reference.train(c, X, Y)
    b = reference.train(c, X, Y)
    assert a.costs == b.costs
    # epoch 0 by hand: three batches (20, 20, 10), the cost of each before its update
    from lambdanet.nn import losses, mlp
    from lambdanet.nn.batches import minibatches

    p = mlp.init_params(c.layer_dims(X.shape[0]), c.activation_list, "deep", 1, "float64")
    batch_costs = []
    for idx in minibatches(50, 20, 1, 0):
        AL, caches = mlp.forward(p, X[:, idx], c.activation_list)
        batch_costs.append(losses.cost("sigmoid", AL, Y[:, idx]))
        g = mlp.backward(p, caches, AL, Y[:, idx], c.activation_list)
        for k in g:
            p[k] -= c.learning_rate * g[k]
    assert len(batch_costs) == 3
    assert a.costs[0] == pytest.approx(float(np.mean(batch_costs)), rel=1e-12)


def test_threshold_stops_early_and_records_why(cat_data) -> None:
    X, Y = cat_data
    X, Y = X[::8, :60], Y[:, :60]
    c = cfg(epochs=400, learning_rate=0.05, threshold=0.3, dtype="float64", batch_size=60,
            neurons={"layer1": 8, "layer2": 4, "layer3": 3, "layer4": 1})
    r = reference.train(c, X, Y)
    assert r.stop_reason == "threshold" and r.epochs_run == len(r.costs) < 400
    assert r.costs[-1] <= 0.3 < min(r.costs[:-1])
    acc = reference.accuracy(r.params, X, Y[0].astype(int), c.activation_list)
    assert acc > 0.85


def test_softmax_output_trains(cat_data) -> None:
    X, Y = cat_data
    X, y = X[::8, :60], Y[0, :60].astype(int)
    Y2 = np.eye(2)[y].T  # one-hot (2, m)
    c = cfg(epochs=100, learning_rate=0.001, optimizer="adam", batch_size=20, dtype="float32",
            activations={"layer1": "tanh", "layer2": "leaky_relu", "layer3": "softmax"}, layers=3,
            neurons={"layer1": 8, "layer2": 4, "layer3": 2})
    r = reference.train(c, X, Y2)
    assert r.params["W1"].dtype == np.float32
    assert r.costs[-1] < 0.5 * r.costs[0]
    assert reference.accuracy(r.params, X, y, c.activation_list) > 0.9


def test_shape_mismatch_is_refused(cat_data) -> None:
    X, Y = cat_data
    with pytest.raises(ValueError, match="X must be"):
        reference.train(cfg(), X, Y[:, :10])
