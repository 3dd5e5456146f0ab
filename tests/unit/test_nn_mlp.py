"""The MLP: init schemes, forward shapes/dtypes, and the whole backward vs finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from lambdanet.errors import ConfigError
from lambdanet.nn import losses, mlp
from lambdanet.nn.activations import HIDDEN


def test_init_deep_and_he_follow_the_random_state_sequence() -> None:
    dims, acts = [6, 4, 3, 1], ["relu", "tanh", "sigmoid"]
    rng = np.random.RandomState(7)
    draws = [rng.randn(dims[i], dims[i - 1]) for i in range(1, 4)]
    deep = mlp.init_params(dims, acts, "deep", 7, "float64")
    he = mlp.init_params(dims, acts, "he", 7, "float64")
    assert list(deep) == ["W1", "b1", "W2", "b2", "W3", "b3"]
    for i in range(1, 4):
        np.testing.assert_allclose(deep[f"W{i}"], draws[i - 1] / np.sqrt(dims[i - 1]))
        assert deep[f"b{i}"].shape == (dims[i], 1) and not deep[f"b{i}"].any()
    np.testing.assert_allclose(he["W1"], draws[0] * np.sqrt(2 / 6))  # relu layer
    np.testing.assert_allclose(he["W2"], draws[1] / np.sqrt(4))  # tanh layer
    np.testing.assert_allclose(he["W3"], draws[2] / np.sqrt(3))  # output layer
    f32 = mlp.init_params(dims, acts, "deep", 7, "float32")
    assert all(v.dtype == np.float32 for v in f32.values())
    np.testing.assert_array_equal(f32["W2"], deep["W2"].astype(np.float32))


def test_init_rejects_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="init: unknown scheme 'xavier'"):
        mlp.init_params([2, 1], ["sigmoid"], "xavier", 1, "float64")
    with pytest.raises(ConfigError, match="seed: must be between 0 and"):
        mlp.init_params([2, 1], ["sigmoid"], "deep", -1, "float64")
    with pytest.raises(ConfigError, match="one more size"):
        mlp.init_params([2, 1], ["relu", "sigmoid"], "deep", 1, "float64")


def _net(hidden: str, output: str, dtype: str = "float64"):
    dims = [5, 4, 3, 1 if output == "sigmoid" else 3]
    acts = [hidden, hidden, output]
    params = mlp.init_params(dims, acts, "deep", 3, dtype)
    rng = np.random.default_rng(2)
    for k in params:  # non-zero biases so db is exercised
        if k.startswith("b"):
            params[k] = rng.normal(size=params[k].shape).astype(dtype) * 0.1
    X = rng.normal(size=(5, 7)).astype(dtype)
    if output == "sigmoid":
        Y = rng.integers(0, 2, size=(1, 7)).astype(dtype)
    else:
        Y = np.eye(3, dtype=dtype)[rng.integers(0, 3, size=7)].T.copy()
    return params, X, Y, acts


@pytest.mark.parametrize("output", ["sigmoid", "softmax"])
@pytest.mark.parametrize("hidden", HIDDEN)
def test_backward_matches_finite_differences(hidden: str, output: str) -> None:
    params, X, Y, acts = _net(hidden, output)
    AL, caches = mlp.forward(params, X, acts)
    grads = mlp.backward(params, caches, AL, Y, acts)
    assert list(grads) == list(params)
    h = 1e-6
    for key, P in params.items():
        num = np.zeros_like(P)
        for idx in np.ndindex(*P.shape):
            old = P[idx]
            P[idx] = old + h
            up = losses.cost(output, mlp.predict_proba(params, X, acts), Y)
            P[idx] = old - h
            down = losses.cost(output, mlp.predict_proba(params, X, acts), Y)
            P[idx] = old
            num[idx] = (up - down) / (2 * h)
        np.testing.assert_allclose(grads[key], num, rtol=1e-5, atol=1e-8, err_msg=key)


def test_float32_stays_float32_and_forward_matches_predict_proba() -> None:
    params, X, Y, acts = _net("relu", "sigmoid", "float32")
    AL, caches = mlp.forward(params, X, acts)
    assert AL.dtype == np.float32 and all(c.Z.dtype == np.float32 for c in caches)
    grads = mlp.backward(params, caches, AL, Y, acts)
    assert all(g.dtype == np.float32 for g in grads.values())
    np.testing.assert_array_equal(AL, mlp.predict_proba(params, X, acts))
    assert AL.shape == (1, 7) and [c.A.shape for c in caches] == [(4, 7), (3, 7), (1, 7)]


def test_m_total_sums_slices_to_the_full_batch_gradient() -> None:
    """The data strategy: gradients of column slices with m_total = m add up to the full gradient."""
    params, X, Y, acts = _net("leaky_relu", "softmax")
    AL, caches = mlp.forward(params, X, acts)
    full = mlp.backward(params, caches, AL, Y, acts)
    parts = []
    for cols in (slice(0, 3), slice(3, 7)):
        ALs, cs = mlp.forward(params, X[:, cols], acts)
        parts.append(mlp.backward(params, cs, ALs, Y[:, cols], acts, m_total=7))
    for k in full:
        np.testing.assert_allclose(parts[0][k] + parts[1][k], full[k], rtol=1e-12, atol=1e-15)
