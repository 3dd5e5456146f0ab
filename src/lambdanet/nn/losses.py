"""Costs of the numpy network: binary cross-entropy (sigmoid output) and categorical
cross-entropy (softmax output), with clipped logs so a saturated output never gives inf/nan.

Both pair with their output activation so that the gradient of the mean cost with respect to
the output pre-activation is ``(AL - Y) / m`` — :func:`output_delta` returns ``AL - Y`` and the
backward pass divides by the batch size.
"""

from __future__ import annotations

import numpy as np


def _eps(a: np.ndarray) -> float:
    """Clip margin: 1e-7 for float32 (1 - eps stays below 1), 1e-12 for float64."""
    return 1e-7 if a.dtype == np.float32 or a.dtype == np.float16 else 1e-12


def binary_cross_entropy(AL: np.ndarray, Y: np.ndarray) -> float:
    """-mean(Y log AL + (1-Y) log(1-AL)) over the m columns of (1, m) arrays."""
    eps = _eps(AL)
    P = np.clip(AL, eps, 1 - eps)  # (1, m)
    m = AL.shape[1]
    return float(-(np.sum(Y * np.log(P)) + np.sum((1 - Y) * np.log(1 - P))) / m)


def categorical_cross_entropy(AL: np.ndarray, Y: np.ndarray) -> float:
    """-mean over columns of sum_c Y_c log AL_c for one-hot (C, m) targets."""
    eps = _eps(AL)
    P = np.clip(AL, eps, 1.0)  # (C, m)
    m = AL.shape[1]
    return float(-np.sum(Y * np.log(P)) / m)


def cost(output: str, AL: np.ndarray, Y: np.ndarray) -> float:
    """Mean cost of a batch: BCE for a ``sigmoid`` output, CCE for ``softmax``."""
    if AL.shape != Y.shape:
        raise ValueError(f"AL has shape {AL.shape} but Y has shape {Y.shape}; they must match")
    if output == "sigmoid":
        return binary_cross_entropy(AL, Y)
    if output == "softmax":
        return categorical_cross_entropy(AL, Y)
    raise ValueError(f"unknown output activation {output!r} (known: sigmoid, softmax)")


def output_delta(output: str, AL: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """dZ_L = AL - Y: the gradient of ``m * cost`` w.r.t. Z_L for both output types."""
    if output not in ("sigmoid", "softmax"):
        raise ValueError(f"unknown output activation {output!r} (known: sigmoid, softmax)")
    out: np.ndarray = AL - Y
    return out
