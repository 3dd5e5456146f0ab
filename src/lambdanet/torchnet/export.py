"""What the registry stores for a CNN: numpy weights (safetensors-ready) and model.json metadata.

Usage::

    weights = registry_weights(model)            # {"conv1.weight": float32 (32, 3, 5, 5), …}
    meta = model_metadata(cfg, classes, metrics={"test_accuracy": 0.71}, run_id="r-1")
    registry.register("cifar-lenet", weights, meta)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from lambdanet.config import CNNConfig
from lambdanet.torchnet.data import MEAN, STD

INPUT_SHAPE = [32, 32, 3]


def registry_weights(model: nn.Module) -> dict[str, np.ndarray]:
    """The model's state dict (weights + batch-norm buffers) as contiguous numpy arrays on the CPU."""
    return {k: np.ascontiguousarray(v.detach().to("cpu").numpy()) for k, v in model.state_dict().items()}


def model_metadata(
    cfg: CNNConfig,
    classes: list[str],
    metrics: dict[str, Any] | None = None,
    run_id: str | None = None,
    input_shape: tuple[int, ...] | list[int] | None = None,
) -> dict[str, Any]:
    """model.json for a CNN (kind "cnn"); the registry adds name, version and created_at.
    ``input_shape``: (H, W, C) of the images it was trained on (default: CIFAR-10's 32x32x3)."""
    return {
        "kind": "cnn",
        "classes": list(classes),
        "input_shape": list(input_shape or INPUT_SHAPE),
        "dtype": "float32",
        "preprocessing": {"resize": "bilinear", "scale": 255.0, "mean": list(MEAN), "std": list(STD)},
        "architecture": {"model": cfg.model},
        "config": cfg.model_dump(),
        "metrics": dict(metrics or {}),
        "run_id": run_id,
    }
