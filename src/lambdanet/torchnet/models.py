"""The CNNs of the image track: a wide LeNet, VGG11 with batch norm, and "fast", an
airbench-style network for CPU time-to-accuracy — each for any input size (above its minimum)
and any number of classes.

Usage::

    model = build_model("lenet")          # or "vgg11_bn", "fast"
    logits = model(x)                      # x: float (N, 3, H, W) normalised -> (N, n_classes)

All take normalised float images (N, 3, H, W) — see :func:`lambdanet.torchnet.data.to_tensor`.
The size is taken from the data: an adaptive pooling layer before each classifier brings the last
feature map to the size the classifier was built for (at 32x32 — CIFAR-10 — it is the identity,
so the weights and outputs are those of the fixed-size models). :data:`MIN_SIDE` is the smallest
side each model's convolutions and pools can take.

``fast`` follows the architecture of Keller Jordan's airbench94 (CIFAR-10 to 94 % in 3.3 s on an
A100, 2024): three conv blocks of widths 64 / 256 / 256, each conv → max-pool → batch norm → GELU
→ conv → batch norm → GELU, then a global max-pool and a bias-free linear layer scaled by 1/9 —
about 2 M parameters. It leaves out airbench's data-dependent whitening stem and its lookahead
weight averaging (a plain 3x3 conv stem of 32 channels instead), so it is trained by the ordinary
engine loop; its recipe (``examples/cifar10/fast.json``) takes airbench's label smoothing 0.2,
Nesterov SGD, a warm-up-then-linear-decay learning rate, flip + translate augmentation and flip
test-time augmentation.

``airbench`` is airbench94 with the parts ``fast`` leaves out: a frozen 2x2 "whitening" first
convolution set from the eigenvectors of the training images' 2x2-patch covariance
(:class:`DataInitialised`: the engine calls it once, when the run's initial state is made), the
first channels of every 3x3 convolution initialised as the identity (Dirac), batch norms with a
fixed scale of 1 whose biases learn at 64x the rate (:class:`ScaledParameterGroups`), eps 1e-12
and running-statistic momentum 0.4. Its recipe (``examples/cifar10/airbench.json``) adds the
lookahead weight averaging and airbench's learning-rate triangle (config keys ``lookahead``,
``lr_start``, ``lr_end``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from itertools import pairwise
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from lambdanet.errors import ConfigError

MODEL_NAMES = ("lenet", "vgg11_bn", "fast", "airbench")
# the smallest input side each model can take (airbench: the 2x2 whitening conv, then 3 pools)
MIN_SIDE = {"lenet": 16, "vgg11_bn": 32, "fast": 8, "airbench": 9}
# the models whose bf16 training is faster with channels_last weights (docs/benchmarks.md: "fast"
# gains; lenet loses and vgg11_bn does not change, so they keep the default layout)
CHANNELS_LAST = frozenset({"fast", "airbench"})
VGG11_LAYERS: list[int | str] = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]

# torch's module initialisers draw from the process-global RNG; threads of one process (the local
# executor) must not interleave their seeded initialisations.
_INIT_LOCK = threading.Lock()


@runtime_checkable
class DataInitialised(Protocol):
    """A model whose first layer is computed from training images before the first step.

    Usage::

        if isinstance(model, DataInitialised):
            model.initialise_from(to_tensor(x_train[sample]))   # normalised (n, 3, H, W)

    Called once per run, on the initial state (the result is stored with the weights)."""

    def initialise_from(self, images: torch.Tensor) -> None:
        """Set the data-dependent weights from normalised images (n, 3, H, W)."""


@runtime_checkable
class ScaledParameterGroups(Protocol):
    """A model whose parameters learn at different rates.

    Usage::

        for params, scale in model.parameter_groups():   # every trainable parameter once
            ...  # learning rate x scale, weight decay / scale (their product is unchanged)
    """

    def parameter_groups(self) -> list[tuple[list[nn.Parameter], float]]:
        """(trainable parameters, learning-rate scale) pairs covering every trainable parameter once."""


class WideLeNet(nn.Module):
    """conv 3→32 k5, pool 2, conv 32→64 k5, pool 2, fc 1600→120→84→n_classes (ReLU)."""

    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 5)
        self.conv2 = nn.Conv2d(32, 64, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.fit = nn.AdaptiveAvgPool2d((5, 5))  # any input size: the identity at 32x32
        self.fc1 = nn.Linear(64 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))  # (N, 32, 14, 14)
        x = self.fit(self.pool(torch.relu(self.conv2(x))))  # (N, 64, 5, 5)
        x = torch.flatten(x, 1)  # (N, 1600)
        x = torch.relu(self.fc1(x))  # (N, 120)
        x = torch.relu(self.fc2(x))  # (N, 84)
        out: torch.Tensor = self.fc3(x)  # (N, n_classes)
        return out


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
        self.fit = nn.AdaptiveAvgPool2d(1)  # any input size: the identity at 32x32
        self.classifier = nn.Linear(512, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fit(self.features(x))  # (N, 512, 1, 1)
        out: torch.Tensor = self.classifier(torch.flatten(x, 1))  # (N, n_classes)
        return out


def _chain(block: Callable[[int, int], nn.Module], widths: tuple[int, ...]) -> nn.Sequential:
    """Blocks from ``widths[0]`` through each of the following widths in turn."""
    return nn.Sequential(*(block(c_in, c_out) for c_in, c_out in pairwise(widths)))


class _FastBlock(nn.Module):
    """conv 3x3 → max-pool 2 → BN → GELU → conv 3x3 → BN → GELU (airbench's ConvGroup)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(c_out)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))  # (N, c_out, H/2, W/2)
        out: torch.Tensor = self.act(self.norm2(self.conv2(x)))
        return out


class FastNet(nn.Module):
    """airbench94's body for any input size (see the module docstring): stem 3→32, blocks
    32→64→256→256 (each halves the size), global max-pool, linear 256→n_classes scaled by 1/9."""

    WIDTHS = (64, 256, 256)
    SCALE = 1 / 9

    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.GELU())
        self.blocks = _chain(_FastBlock, (32, *self.WIDTHS))
        self.fit = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(self.WIDTHS[-1], n_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))  # (N, 256, H/8, W/8)
        x = torch.flatten(self.fit(x), 1)  # (N, 256)
        out: torch.Tensor = self.head(x) * self.SCALE  # (N, n_classes)
        return out


class FixedScaleNorm(nn.BatchNorm2d):
    """Batch norm whose scale stays 1 (only the bias learns); eps 1e-12, running-stat momentum 0.4."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, eps=1e-12, momentum=0.4)
        self.weight.requires_grad_(False)


def _dirac_conv(c_in: int, c_out: int) -> nn.Conv2d:
    """A 3x3 convolution whose first ``c_in`` output channels start as the identity."""
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[:c_in])
    return conv


class _AirbenchBlock(nn.Sequential):
    """conv → max-pool 2 → fixed-scale BN → GELU → conv → fixed-scale BN → GELU (airbench's ConvGroup)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(_dirac_conv(c_in, c_out), nn.MaxPool2d(2), FixedScaleNorm(c_out), nn.GELU(),
                         _dirac_conv(c_out, c_out), FixedScaleNorm(c_out), nn.GELU())


class AirbenchNet(nn.Module):
    """airbench94 (see the module docstring): whitening 2x2 conv 3→24 (frozen weights, learned
    bias), GELU, blocks 24→64→256→256, global max-pool, linear 256→n_classes (no bias) x 1/9."""

    WIDTHS = (64, 256, 256)
    SCALE = 1 / 9
    WHITEN_EPS = 5e-4  # added to the patch covariance's eigenvalues (airbench's value)
    NORM_BIAS_LR_SCALE = 64.0

    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()
        self.whiten = nn.Conv2d(3, 24, 2, bias=True)
        self.whiten.weight.requires_grad_(False)
        self.blocks = _chain(_AirbenchBlock, (24, *self.WIDTHS))
        self.act = nn.GELU()
        self.fit = nn.AdaptiveMaxPool2d(1)  # airbench's MaxPool2d(3) over the 3x3 map at 32x32
        self.head = nn.Linear(self.WIDTHS[-1], n_classes, bias=False)

    def initialise_from(self, images: torch.Tensor) -> None:
        """Whitening filters: the eigenvectors of the 2x2-patch covariance of ``images`` (n, 3, H, W),
        each scaled by 1/sqrt(eigenvalue + eps), largest first, and their negatives; bias 0."""
        # (n * (H-1) * (W-1), 12): every 2x2 patch, channel-major like the conv's weight
        patches = images.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 12).double()
        eigenvalues, eigenvectors = torch.linalg.eigh(patches.T @ patches / len(patches))  # ascending
        filters = (eigenvectors.T / torch.sqrt(eigenvalues + self.WHITEN_EPS)[:, None]).flip(0)  # (12, 12)
        bias = self.whiten.bias
        assert bias is not None  # built with bias=True: the one learned part of the whitening layer
        with torch.no_grad():
            self.whiten.weight.copy_(torch.cat((filters, -filters)).reshape(24, 3, 2, 2).float())
            bias.zero_()

    def parameter_groups(self) -> list[tuple[list[nn.Parameter], float]]:
        """The batch norms' biases at 64x the learning rate, every other trainable parameter at 1x."""
        norms = {id(p) for m in self.modules() if isinstance(m, FixedScaleNorm) for p in m.parameters()}
        trainable = [p for p in self.parameters() if p.requires_grad]
        return [([p for p in trainable if id(p) in norms], self.NORM_BIAS_LR_SCALE),
                ([p for p in trainable if id(p) not in norms], 1.0)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.act(self.whiten(x)))  # (N, 256, (H-1)/8, (W-1)/8)
        x = torch.flatten(self.fit(x), 1)  # (N, 256)
        out: torch.Tensor = self.head(x) * self.SCALE  # (N, n_classes)
        return out


def build_model(name: str, n_classes: int = 10, seed: int | None = None) -> nn.Module:
    """A fresh model; with ``seed`` its initial weights depend only on (name, n_classes, seed)."""
    classes: dict[str, type[nn.Module]] = {"lenet": WideLeNet, "vgg11_bn": VGG11BN, "fast": FastNet,
                                           "airbench": AirbenchNet}
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
