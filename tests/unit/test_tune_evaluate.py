"""The validation score of a trial: accuracy, balanced accuracy and cost of an MLP state against
a plain numpy forward pass and per-class loop written here, and the objective's cost tie-break."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lambdanet.config import parse_config
from lambdanet.tune.evaluate import Score, evaluate

CONFIG = parse_config({"epochs": 1, "layers": 2, "activations": {"layer1": "relu", "layer2": "sigmoid"},
                       "neurons": {"layer1": 3, "layer2": 1}, "learning_rate": 0.1, "dtype": "float64"})


def reference(W1: np.ndarray, b1: np.ndarray, W2: np.ndarray, b2: np.ndarray, x: np.ndarray,
              y: np.ndarray) -> tuple[float, float, float]:
    X = x.reshape(len(x), -1).T / 255.0  # (n_x, m)
    A1 = np.maximum(0, W1 @ X + b1)  # (3, m)
    p = 1 / (1 + np.exp(-(W2 @ A1 + b2)))  # (1, m)
    cost = float(-np.mean(y * np.log(p[0]) + (1 - y) * np.log(1 - p[0])))
    pred = (p[0] > 0.5).astype(int)
    recalls = []
    for c in (0, 1):  # the definition, class by class
        members = [i for i in range(len(y)) if y[i] == c]
        recalls.append(sum(pred[i] == c for i in members) / len(members))
    return cost, float(np.mean(pred == y)), float(np.mean(recalls))


def test_mlp_score_matches_a_plain_forward_pass() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 2, 2, 3)).astype(np.uint8)
    y = np.array([0] * 30 + [1] * 10)
    W1, b1 = rng.normal(0, 0.3, (3, 12)), rng.normal(0, 0.1, (3, 1))
    W2, b2 = rng.normal(0, 0.5, (1, 3)), np.array([[0.2]])
    state = {"param.W1": W1, "param.b1": b1, "param.W2": W2, "param.b2": b2}
    score = evaluate(CONFIG, state, x, y, 2)
    cost, accuracy, balanced = reference(W1, b1, W2, b2, x, y)
    assert score.cost == pytest.approx(cost) and score.accuracy == pytest.approx(accuracy)
    assert score.balanced_accuracy == pytest.approx(balanced)
    assert (score.samples, score.classes) == (40, 2)


def test_a_constant_predictor_has_balanced_accuracy_one_half() -> None:
    x = np.zeros((40, 2, 2, 3), dtype=np.uint8)
    y = np.array([0] * 30 + [1] * 10)
    state = {"param.W1": np.zeros((3, 12)), "param.b1": np.zeros((3, 1)), "param.W2": np.zeros((1, 3)),
             "param.b2": np.array([[-2.0]])}  # always class 0, the majority
    score = evaluate(CONFIG, state, x, y, 2)
    assert score.accuracy == pytest.approx(0.75) and score.balanced_accuracy == pytest.approx(0.5)


def test_accuracy_ties_are_broken_by_cost_and_never_reorder_accuracies() -> None:
    n = 42
    tied_low_cost, tied_high_cost = Score(0.5, 26 / n, 0.6, n, 2), Score(0.7, 26 / n, 0.6, n, 2)
    one_more_right_worst_cost = Score(math.inf, 27 / n, 0.6, n, 2)
    for objective in ("accuracy", "balanced_accuracy"):
        assert tied_low_cost.value(objective) > tied_high_cost.value(objective)
    assert one_more_right_worst_cost.value("accuracy") > tied_low_cost.value("accuracy")
    assert Score(0.5, 0.1, 0.2, n, 2).value("cost") == 0.5
