"""Activations and losses: values, numerical stability, and gradients vs finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from lambdanet.nn import activations as act
from lambdanet.nn import losses


def numeric_grad(f, Z: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar f at every entry of Z (float64)."""
    g = np.zeros_like(Z)
    for idx in np.ndindex(*Z.shape):
        old = Z[idx]
        Z[idx] = old + h
        up = f(Z)
        Z[idx] = old - h
        down = f(Z)
        Z[idx] = old
        g[idx] = (up - down) / (2 * h)
    return g


@pytest.mark.parametrize("name", act.HIDDEN)
def test_hidden_backward_matches_finite_differences(name: str) -> None:
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(4, 6))
    Z[np.abs(Z) < 1e-3] = 0.5  # keep away from the relu kink
    dA = rng.normal(size=Z.shape)
    A = act.forward(name, Z)
    analytic = act.backward(name, dA, Z, A)
    numeric = numeric_grad(lambda z: float(np.sum(dA * act.forward(name, z))), Z.copy())
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


def test_activation_values() -> None:
    Z = np.array([[-2.0, 0.0, 3.0]])
    np.testing.assert_array_equal(act.forward("relu", Z), [[0.0, 0.0, 3.0]])
    np.testing.assert_allclose(act.forward("leaky_relu", Z), [[-0.02, 0.0, 3.0]])
    np.testing.assert_allclose(act.forward("tanh", Z), np.tanh(Z))
    np.testing.assert_allclose(act.forward("sigmoid", Z), 1 / (1 + np.exp(-Z)), rtol=1e-15)
    S = act.forward("softmax", np.array([[1.0, 2.0], [3.0, 2.0]]))
    np.testing.assert_allclose(S[:, 0], np.exp([1, 3]) / np.exp([1, 3]).sum())
    np.testing.assert_allclose(S.sum(axis=0), [1.0, 1.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_and_softmax_are_stable_and_keep_dtype(dtype) -> None:
    Z = np.array([[-1000.0, -50.0, 0.0, 50.0, 1000.0]], dtype=dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        s = act.forward("sigmoid", Z)
        sm = act.forward("softmax", np.vstack([Z, -Z]))
    assert s.dtype == dtype and sm.dtype == dtype
    assert np.all(np.isfinite(s)) and s[0, 0] == 0.0 and s[0, -1] == 1.0 and s[0, 2] == 0.5
    np.testing.assert_allclose(sm.sum(axis=0), 1.0, rtol=1e-6)
    for name in act.NAMES:
        assert act.forward(name, Z).dtype == dtype


def test_softmax_backward_and_unknown_names_are_refused() -> None:
    Z = np.zeros((2, 2))
    with pytest.raises(ValueError, match="AL - Y"):
        act.backward("softmax", Z, Z, Z)
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        act.forward("swish", Z)


@pytest.mark.parametrize("output", ["sigmoid", "softmax"])
def test_cost_gradient_wrt_output_preactivation_is_al_minus_y_over_m(output: str) -> None:
    rng = np.random.default_rng(1)
    m = 5
    if output == "sigmoid":
        Z = rng.normal(size=(1, m))
        Y = rng.integers(0, 2, size=(1, m)).astype(float)
    else:
        Z = rng.normal(size=(3, m))
        Y = np.eye(3)[rng.integers(0, 3, size=m)].T
    AL = act.forward(output, Z)
    analytic = losses.output_delta(output, AL, Y) / m
    numeric = numeric_grad(lambda z: losses.cost(output, act.forward(output, z), Y), Z.copy())
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9)


def test_cost_values_and_clipping() -> None:
    AL = np.array([[0.8, 0.1]])
    Y = np.array([[1.0, 0.0]])
    expected = -(np.log(0.8) + np.log(0.9)) / 2
    assert losses.cost("sigmoid", AL, Y) == pytest.approx(expected, rel=1e-12)
    # a saturated wrong answer is large but finite (clipped logs), in float32 too
    for dtype in (np.float32, np.float64):
        c = losses.cost("sigmoid", np.array([[1.0, 0.0]], dtype), np.array([[0.0, 1.0]], dtype))
        assert np.isfinite(c) and c > 10
    P = np.array([[0.7, 0.0], [0.3, 1.0]])
    assert losses.cost("softmax", P, np.array([[1.0, 0.0], [0.0, 1.0]])) == pytest.approx(-np.log(0.7) / 2)
    with pytest.raises(ValueError, match="must match"):
        losses.cost("sigmoid", AL, Y.T)
