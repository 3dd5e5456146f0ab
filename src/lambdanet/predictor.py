"""Turn a registered model version into something that classifies images.

Usage::

    mv = services.registry.load("itsacat@production")
    predictor = load_predictor(mv)
    probs = predictor.predict_proba(images)      # images: uint8 (N, H, W, C) -> (N, n_classes)
    predictor.classes[probs[0].argmax()]

Preprocessing that belongs to the model (divide by 255, normalise, flatten) happens inside
``predict_proba``, exactly as in training; callers only resize to ``input_shape`` (see
:mod:`lambdanet.data.images`).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from lambdanet.errors import ModelNotFound
from lambdanet.registry import ModelVersion


@runtime_checkable
class Predictor(Protocol):
    name: str
    version: int
    classes: list[str]
    input_shape: tuple[int, int, int]  # (H, W, C)

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, C) -> float (N, n_classes), rows summing to 1."""


def load_predictor(mv: ModelVersion, device: str = "cpu") -> Predictor:
    kind = mv.metadata.get("kind")
    if kind == "mlp":
        from lambdanet.nn.predictor import MLPPredictor

        return MLPPredictor(mv)
    if kind == "cnn":
        from lambdanet.torchnet.predictor import CNNPredictor

        return CNNPredictor(mv, device=device)
    raise ModelNotFound(f"model {mv.name}:{mv.version} has unknown kind {kind!r} (expected mlp or cnn)")
