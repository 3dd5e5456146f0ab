"""Independent references for the serving tests, written out here from the registered weights —
never the server's own ``load_predictor``: a plain numpy forward of an MLP (ReLU / sigmoid /
softmax layers, float64) and a plain torch functional LeNet."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from lambdanet.registry import ModelVersion


def numpy_forward(mv: ModelVersion, images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, C) -> (N, n_classes): a plain loop over the registered MLP layers in
    float64 (x / 255, then ReLU, sigmoid or softmax; a sigmoid output gives [1 - p, p])."""
    acts = mv.metadata["architecture"]["activations"]
    a = images.reshape(len(images), -1).T.astype(np.float64) / 255.0  # (n_x, N)
    for layer, act in enumerate(acts, start=1):
        w = np.asarray(mv.weights[f"W{layer}"], np.float64)  # (n_l, n_{l-1})
        b = np.asarray(mv.weights[f"b{layer}"], np.float64).reshape(-1, 1)  # (n_l, 1)
        z = w @ a + b  # (n_l, N)
        if act == "relu":
            a = np.maximum(z, 0.0)
        elif act == "sigmoid":
            a = 1.0 / (1.0 + np.exp(-z))
        else:
            assert act == "softmax", act
            e = np.exp(z - z.max(axis=0))
            a = e / e.sum(axis=0)
    return np.stack([1.0 - a[0], a[0]], axis=1) if acts[-1] == "sigmoid" else a.T  # (N, C)


def torch_lenet(mv: ModelVersion, images: np.ndarray) -> np.ndarray:
    """uint8 (N, 32, 32, 3) -> (N, 10): the LeNet of the registered weights, written out here."""
    w = {k: torch.tensor(np.asarray(v, np.float32)) for k, v in mv.weights.items()}
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0  # (N, 3, 32, 32)
    x = (x - 0.5) / 0.5
    x = F.max_pool2d(F.relu(F.conv2d(x, w["conv1.weight"], w["conv1.bias"])), 2)  # (N, 32, 14, 14)
    x = F.max_pool2d(F.relu(F.conv2d(x, w["conv2.weight"], w["conv2.bias"])), 2)  # (N, 64, 5, 5)
    x = x.flatten(1)  # (N, 1600)
    x = F.relu(x @ w["fc1.weight"].T + w["fc1.bias"])
    x = F.relu(x @ w["fc2.weight"].T + w["fc2.bias"])
    return torch.softmax(x @ w["fc3.weight"].T + w["fc3.bias"], dim=1).numpy()  # (N, 10)
