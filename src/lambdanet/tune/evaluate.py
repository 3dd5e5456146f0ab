"""The validation metric of a trial: cost and accuracy of a run's state on held-out samples.

Usage::

    score = evaluate(config, session.state(), x_valid, y_valid, n_classes)   # Score(cost, accuracy, samples)
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
    samples: int  # the validation samples scored

    @property
    def finite(self) -> bool:
        return math.isfinite(self.cost)

    def value(self, objective: str) -> float:
        """The value told to Optuna: the cost (minimised), or the accuracy (maximised) with ties
        broken by the cost. On a small validation split many trials share an accuracy (the
        majority-class predictor scores well there); among them the lower cost is the better model.
        The cost term stays below 1 / (samples + 1), less than one sample's share of the accuracy,
        so it never reorders two different accuracies."""
        if objective == "cost":
            return self.cost
        return self.accuracy - min(self.cost, COST_CAP) / (COST_CAP * (self.samples + 1))


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
    pred = (AL[0] > 0.5).astype(np.int64) if AL.shape[0] == 1 else AL.argmax(axis=0)
    return Score(float(cost), float(np.mean(pred == np.asarray(y).reshape(-1))), X.shape[1])


def _cnn(config: CNNConfig, state: dict[str, Any], x: np.ndarray, y: np.ndarray, n_classes: int) -> Score:
    import torch

    from lambdanet.torchnet.checkpoint import load_state_arrays
    from lambdanet.torchnet.data import to_tensor
    from lambdanet.torchnet.models import build_model

    model = build_model(config.model, n_classes=n_classes, seed=config.seed)
    load_state_arrays(dict(state), model, None)
    model.eval()
    total, correct, n = 0.0, 0, len(y)
    labels = torch.from_numpy(np.asarray(y, dtype=np.int64).reshape(-1))
    with torch.no_grad():
        for i in range(0, n, 500):
            logits = model(to_tensor(x[i:i + 500]))
            total += float(torch.nn.functional.cross_entropy(logits, labels[i:i + 500], reduction="sum"))
            correct += int((logits.argmax(dim=1) == labels[i:i + 500]).sum())
    return Score(total / max(n, 1), correct / max(n, 1), n)
