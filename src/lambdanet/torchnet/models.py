"""The two CNNs of the CIFAR-10 track: a wide LeNet and VGG11 with batch norm.

Usage::

    model = build_model("lenet")          # or "vgg11_bn"
    logits = model(x)                      # x: float (N, 3, 32, 32) normalised -> (N, 10)

Both take normalised float images (N, 3, 32, 32) — see :func:`lambdanet.torchnet.data.to_tensor`.
"""

from __future__ import annotations

import threading

import torch
from torch import nn

from lambdanet.errors import ConfigError

MODEL_NAMES = ("lenet", "vgg11_bn")
VGG11_LAYERS: list[int | str] = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]

# torch's module initialisers draw from the process-global RNG; threads of one process (the local
# executor) must not interleave their seeded initialisations.
_INIT_LOCK = threading.Lock()


class WideLeNet(nn.Module):
    """conv 3→32 k5, pool 2, conv 32→64 k5, pool 2, fc 1600→120→84→n_classes (ReLU)."""

    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 5)
        self.conv2 = nn.Conv2d(32, 64, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.fc1 = nn.Linear(64 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))  # (N, 32, 14, 14)
        x = self.pool(torch.relu(self.conv2(x)))  # (N, 64, 5, 5)
        x = torch.flatten(x, 1)  # (N, 1600)
        x = torch.relu(self.fc1(x))  # (N, 120)
        x = torch.relu(self.fc2(x))  # (N, 84)
        return self.fc3(x)  # (N, n_classes)


class VGG11BN(nn.Module):
    """VGG11 with batch norm for 32x32 inputs: conv3x3-BN-ReLU blocks, 5 max-pools, fc 512→n_classes."""

    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in VGG11_LAYERS:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                out = int(item)
                layers += [nn.Conv2d(channels, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
                channels = out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(512, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (N, 512, 1, 1)
        return self.classifier(torch.flatten(x, 1))  # (N, n_classes)


def build_model(name: str, n_classes: int = 10, seed: int | None = None) -> nn.Module:
    """A fresh model; with ``seed`` its initial weights depend only on (name, n_classes, seed)."""
    classes = {"lenet": WideLeNet, "vgg11_bn": VGG11BN}
    if name not in classes:
        raise ConfigError(f"unknown CNN model '{name}' (allowed: {', '.join(MODEL_NAMES)})")
    if n_classes < 2:
        raise ConfigError(f"a CNN needs at least 2 classes, got {n_classes}")
    if seed is None:
        return classes[name](n_classes)
    with _INIT_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return classes[name](n_classes)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
