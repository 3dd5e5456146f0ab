"""The validation metric of a trial: cost and accuracy of a run's state on held-out samples.

Usage::

    score = evaluate(config, session.state(), x_valid, y_valid, n_classes)   # Score(cost, accuracy, …)
    score.value("accuracy")                                                    # what Optuna is told

MLP states hold ``param.W1`` … ``param.bL`` (see :mod:`lambdanet.engine.strategies.mlp_common`):
one forward pass of :mod:`lambdanet.nn` and its cost function. CNN states are loaded into the
config's model (:mod:`lambdanet.torchnet`) and scored in batches without gradients. A state that
has diverged gives a non-finite cost (overflow warnings are silenced: the caller records it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from lambdanet.config import CNNConfig, MLPConfig, TrainConfig
from lambdanet.data.readers import to_matrix, to_targets

COST_CAP = 100.0  # costs above this tie-break as equal (a diverging trial's cost is not a ranking)


@dataclass(frozen=True)
class Score:
    cost: float
    accuracy: float
    balanced_accuracy: float  # the mean of the classes' recalls: a constant predictor scores 1 / classes
    samples: int  # the validation samples scored
    classes: int

    @property
    def finite(self) -> bool:
        return math.isfinite(self.cost)

    def value(self, objective: str) -> float:
        """The value told to Optuna: the cost (minimised), or the accuracy or balanced accuracy
        (maximised) with ties broken by the cost. On a small validation split many trials share an
        accuracy (the majority-class predictor scores well there); among them the lower cost is the
        better model. The cost term stays below 1 / (classes × (samples + 1)), less than one
        sample's share of either accuracy, so it never reorders two different accuracies."""
        if objective == "cost":
            return self.cost
        score = self.balanced_accuracy if objective == "balanced_accuracy" else self.accuracy
        return score - min(self.cost, COST_CAP) / (COST_CAP * self.classes * (self.samples + 1))


def evaluate(config: TrainConfig, state: dict[str, Any], x: np.ndarray, y: np.ndarray, n_classes: int) -> Score:
    if isinstance(config, MLPConfig):
        return _mlp(config, state, x, y, n_classes)
    if isinstance(config, CNNConfig):
        return _cnn(config, state, x, y, n_classes)
    raise TypeError(f"cannot evaluate a {type(config).__name__}")  # pragma: no cover


def _mlp(config: MLPConfig, state: dict[str, Any], x: np.ndarray, y: np.ndarray, n_classes: int) -> Score:
    from lambdanet.nn import losses, mlp

    params = {k[6:]: np.asarray(v) for k, v in state.items() if k.startswith("param.")}
    output = config.activation_list[-1]
    X = to_matrix(x, config.dtype)  # (n_x, m)
    Y = to_targets(y, n_classes, output, config.dtype)
    with np.errstate(all="ignore"):
        AL = mlp.predict_proba(params, X, config.activation_list)
        cost = losses.cost(output, AL, Y) if np.all(np.isfinite(AL)) else math.nan
    pred = (AL[0] > 0.5).astype(np.int64) if AL.shape[0] == 1 else AL.argmax(axis=0)  # (m,)
    return _score(float(cost), pred, y, n_classes)


def _score(cost: float, pred: np.ndarray, y: np.ndarray, n_classes: int) -> Score:
    labels = np.asarray(y, dtype=np.int64).reshape(-1)  # (m,)
    hits = pred == labels  # (m,)
    per_class = np.bincount(labels, minlength=n_classes)  # (C,)
    hits_per_class = np.bincount(labels[hits], minlength=n_classes)  # (C,)
    present = per_class > 0
    recalls = hits_per_class[present] / per_class[present]
    return Score(cost, float(np.mean(hits)) if labels.size else 0.0,
                 float(np.mean(recalls)) if recalls.size else 0.0, int(labels.size), n_classes)


def _cnn(config: CNNConfig, state: dict[str, Any], x: np.ndarray, y: np.ndarray, n_classes: int) -> Score:
    import torch

    from lambdanet.torchnet.checkpoint import load_state_arrays
    from lambdanet.torchnet.data import to_tensor
    from lambdanet.torchnet.models import build_model

    model = build_model(config.model, n_classes=n_classes, seed=config.seed)
    load_state_arrays(dict(state), model, None)
    model.eval()
    total, n = 0.0, len(y)
    labels = torch.from_numpy(np.asarray(y, dtype=np.int64).reshape(-1))
    preds = []
    with torch.no_grad():
        for i in range(0, n, 500):
            logits = model(to_tensor(x[i:i + 500]))  # (b, C)
            total += float(torch.nn.functional.cross_entropy(logits, labels[i:i + 500], reduction="sum"))
            preds.append(logits.argmax(dim=1).numpy())
    pred = np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)  # (m,)
    return _score(total / max(n, 1), pred, y, n_classes)
