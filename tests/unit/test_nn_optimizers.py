"""Optimizers against hand-written update formulas; state round trips; row subsets."""

from __future__ import annotations

import numpy as np
import pytest

from lambdanet.config import MLPConfig
from lambdanet.nn.optimizers import Adam, GradientDescent, Momentum, Optimizer, make_optimizer


def _grads(seq: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seq)
    return {"W1": rng.normal(size=(3, 4)), "b1": rng.normal(size=(3, 1))}


def _params() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(100)
    return {"W1": rng.normal(size=(3, 4)), "b1": rng.normal(size=(3, 1))}


def test_gd() -> None:
    p, ref = _params(), _params()
    opt = GradientDescent(0.1)
    for s in range(3):
        g = _grads(s)
        opt.step(p, g)
        for k in ref:
            ref[k] = ref[k] - 0.1 * g[k]
    for k in ref:
        np.testing.assert_allclose(p[k], ref[k], rtol=1e-14)
    assert int(opt.state_dict()["t"][0]) == 3


def test_momentum() -> None:
    p, ref = _params(), _params()
    opt = Momentum(0.05, beta=0.8)
    v = {k: np.zeros_like(a) for k, a in ref.items()}
    for s in range(4):
        g = _grads(s)
        opt.step(p, g)
        for k in ref:
            v[k] = 0.8 * v[k] + 0.2 * g[k]
            ref[k] = ref[k] - 0.05 * v[k]
    for k in ref:
        np.testing.assert_allclose(p[k], ref[k], rtol=1e-13)
        np.testing.assert_allclose(opt.state_dict()[f"v.{k}"], v[k], rtol=1e-13)


def test_adam() -> None:
    p, ref = _params(), _params()
    b1, b2, eps, lr = 0.9, 0.99, 1e-8, 0.01
    opt = Adam(lr, b1, b2, eps)
    m = {k: np.zeros_like(a) for k, a in ref.items()}
    v = {k: np.zeros_like(a) for k, a in ref.items()}
    for t in range(1, 6):
        g = _grads(t)
        opt.step(p, g)
        for k in ref:
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
            mh = m[k] / (1 - b1**t)
            vh = v[k] / (1 - b2**t)
            ref[k] = ref[k] - lr * mh / (np.sqrt(vh) + eps)
    for k in ref:
        np.testing.assert_allclose(p[k], ref[k], rtol=1e-12)
    state = opt.state_dict()
    assert state["t"].tolist() == [5] and sorted(state) == ["m.W1", "m.b1", "t", "v.W1", "v.b1"]


@pytest.mark.parametrize("make", [lambda: GradientDescent(0.1), lambda: Momentum(0.1, 0.9),
                                  lambda: Adam(0.01)])
def test_state_dict_round_trip_continues_identically(make) -> None:
    p1 = _params()
    a = make()
    for s in range(3):
        a.step(p1, _grads(s))
    p2 = {k: v.copy() for k, v in p1.items()}
    b = make()
    b.load_state_dict(a.state_dict())
    for s in range(3, 6):
        a.step(p1, _grads(s))
        b.step(p2, _grads(s))
    for k in p1:
        np.testing.assert_array_equal(p1[k], p2[k])
    assert isinstance(b, Optimizer)


def test_rows_stepped_separately_equal_the_whole() -> None:
    """A worker owning rows 0..1 and another owning row 2 reproduce the full Adam update."""
    whole, top, bottom = Adam(0.01), Adam(0.01), Adam(0.01)
    p = _params()
    pt = {k: v[:2].copy() for k, v in p.items()}
    pb = {k: v[2:].copy() for k, v in p.items()}
    for s in range(4):
        g = _grads(s)
        whole.step(p, g)
        top.step(pt, {k: v[:2] for k, v in g.items()})
        bottom.step(pb, {k: v[2:] for k, v in g.items()})
    for k in p:
        np.testing.assert_array_equal(np.vstack([pt[k], pb[k]]), p[k])


def test_float32_is_kept_and_bad_state_is_refused() -> None:
    p = {"W1": np.ones((2, 2), np.float32)}
    for opt in (GradientDescent(0.1), Momentum(0.1), Adam(0.1)):
        opt.step(p, {"W1": np.ones((2, 2), np.float32)})
        assert p["W1"].dtype == np.float32
        assert all(v.dtype in (np.float32, np.int64) for v in opt.state_dict().values())
    with pytest.raises(ValueError, match=r"unexpected entry 'm\.W1'"):
        Momentum(0.1).load_state_dict({"t": np.array([1]), "m.W1": np.zeros(2)})


def test_make_optimizer_reads_the_config() -> None:
    base = {"epochs": 1, "layers": 1, "activations": {"layer1": "sigmoid"}, "neurons": {"layer1": 1},
            "learning_rate": 0.5}
    assert type(make_optimizer(MLPConfig(**base))) is GradientDescent
    mom = make_optimizer(MLPConfig(**base, optimizer="momentum", beta=0.5))
    assert isinstance(mom, Momentum) and mom.beta == 0.5 and mom.lr == 0.5
    adam = make_optimizer(MLPConfig(**base, optimizer="adam", beta1=0.8, beta2=0.9, epsilon=1e-6))
    assert isinstance(adam, Adam) and (adam.beta1, adam.beta2, adam.epsilon) == (0.8, 0.9, 1e-6)
