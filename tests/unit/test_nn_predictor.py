"""MLPPredictor: metadata + weights of a model version -> (N, n_classes) probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from lambdanet.errors import ImageError, ModelCorrupt
from lambdanet.nn import mlp
from lambdanet.nn.predictor import MLPPredictor
from lambdanet.predictor import Predictor, load_predictor
from lambdanet.registry import ModelVersion


def version(acts: list[str], dims: list[int], classes: list[str] | None, **md) -> ModelVersion:
    weights = mlp.init_params(dims, acts, "he", 5, "float32")
    weights = {k: v + 0.01 for k, v in weights.items()}
    metadata = {"kind": "mlp", "dtype": "float32", "input_shape": [4, 3, 3],
                "preprocessing": {"resize": "bilinear", "scale": 255.0, "mean": None, "std": None},
                "architecture": {"layer_dims": dims, "activations": acts}, **md}
    if classes is not None:
        metadata["classes"] = classes
    return ModelVersion(name="toy", version=3, metadata=metadata, weights=weights)


def images(n: int) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 256, size=(n, 4, 3, 3), dtype=np.uint8)


def plain_forward(weights: dict[str, np.ndarray], X: np.ndarray, acts: list[str]) -> np.ndarray:
    """The network written out here in float64 (not lambdanet.nn): (n_x, N) -> (n_L, N)."""
    A = X.astype(np.float64)
    for l, name in enumerate(acts, start=1):  # noqa: E741
        Z = weights[f"W{l}"].astype(np.float64) @ A + weights[f"b{l}"].astype(np.float64).reshape(-1, 1)
        if name == "relu":
            A = np.maximum(Z, 0)
        elif name == "tanh":
            A = np.tanh(Z)
        elif name == "sigmoid":
            A = 1 / (1 + np.exp(-Z))
        else:  # softmax over the classes of each column
            E = np.exp(Z - Z.max(axis=0))
            A = E / E.sum(axis=0)
    return A


def test_sigmoid_model_returns_one_minus_p_and_p() -> None:
    mv = version(["relu", "sigmoid"], [36, 5, 1], ["non-cat", "cat"])
    pred = load_predictor(mv)
    assert isinstance(pred, MLPPredictor) and isinstance(pred, Predictor)
    assert (pred.name, pred.version, pred.classes, pred.input_shape) == ("toy", 3, ["non-cat", "cat"], (4, 3, 3))
    x = images(6)
    probs = pred.predict_proba(x)
    p = plain_forward(mv.weights, x.reshape(6, -1).T / 255, ["relu", "sigmoid"])[0]
    assert probs.shape == (6, 2) and probs.dtype == np.float32
    np.testing.assert_allclose(probs[:, 1], p, rtol=1e-5)
    np.testing.assert_allclose(probs[:, 0], 1 - p, rtol=1e-5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(pred.predict_proba(x[0]), probs[:1], rtol=1e-6)  # a single (H, W, C) image


def test_softmax_model_values_and_default_class_names() -> None:
    mv = version(["tanh", "softmax"], [36, 6, 4], None)
    mv.weights["W2"] *= 8  # spread the scores so the four probabilities differ clearly
    pred = MLPPredictor(mv)
    x = images(3)
    probs = pred.predict_proba(x)
    assert pred.classes == ["0", "1", "2", "3"] and probs.shape == (3, 4)
    want = plain_forward(mv.weights, x.reshape(3, -1).T / 255, ["tanh", "softmax"]).T  # (3, 4)
    assert np.ptp(want, axis=1).min() > 0.05  # not a near-uniform answer that any scale would match
    np.testing.assert_allclose(probs, want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)


def test_mean_std_preprocessing() -> None:
    pre = {"scale": 255.0, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    mv = version(["relu", "sigmoid"], [36, 5, 1], ["a", "b"], preprocessing=pre)
    x = images(2)
    X = ((x / 255 - 0.5) / 0.25).reshape(2, -1).T
    p = plain_forward(mv.weights, X, ["relu", "sigmoid"])[0]
    np.testing.assert_allclose(MLPPredictor(mv).predict_proba(x)[:, 1], p, rtol=1e-5)


def test_bad_inputs_and_bad_models() -> None:
    pred = MLPPredictor(version(["relu", "sigmoid"], [36, 5, 1], ["a", "b"]))
    with pytest.raises(ImageError, match=r"images have shape \(3, 4, 3\) but model toy:3 expects \(4, 3, 3\)"):
        pred.predict_proba(np.zeros((1, 3, 4, 3), np.uint8))
    with pytest.raises(ImageError, match="uint8"):
        pred.predict_proba(np.zeros((1, 4, 3, 3), np.float32))
    with pytest.raises(ModelCorrupt, match="metadata names 3 classes but the network outputs 2"):
        MLPPredictor(version(["relu", "sigmoid"], [36, 5, 1], ["a", "b", "c"]))
    mv = version(["relu", "sigmoid"], [36, 5, 1], ["a", "b"])
    broken = ModelVersion(name="toy", version=3, metadata=mv.metadata,
                          weights={k: v for k, v in mv.weights.items() if k != "W2"})
    with pytest.raises(ModelCorrupt, match="weights lack W2"):
        MLPPredictor(broken)


def test_metadata_an_mlp_cannot_use_is_model_corrupt_with_one_line() -> None:
    mv = version(["relu", "sigmoid"], [36, 5, 1], ["a", "b"])
    no_arch = {k: v for k, v in mv.metadata.items() if k != "architecture"}
    with pytest.raises(ModelCorrupt, match=r"model toy:3 is corrupt: model.json lacks architecture.layer_dims, "
                                           r"architecture.activations; register it again"):
        MLPPredictor(ModelVersion(name="toy", version=3, metadata=no_arch, weights=mv.weights))
    with pytest.raises(ModelCorrupt, match=r"model toy:3 is corrupt: model.json: dtype: .*float dtype") as err:
        ModelVersion(name="toy", version=3, metadata={**mv.metadata, "dtype": "int8"}, weights=mv.weights)
    assert err.value.http_status == 500 and "\n" not in str(err.value)
    one_act = {**mv.metadata, "architecture": {"layer_dims": [36, 5, 1], "activations": ["sigmoid"]}}
    with pytest.raises(ModelCorrupt, match=r"1 activations for 2 layers"):
        MLPPredictor(ModelVersion(name="toy", version=3, metadata=one_act, weights=mv.weights))
