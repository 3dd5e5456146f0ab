"""The published airbench94 recipe (Keller Jordan, arXiv 2404.00498: 94.01 % on CIFAR-10 in 9.9
epochs) as a plain PyTorch script on this CPU — the reference the ``fast`` recipe
(``examples/cifar10/fast.json``) is measured against: how far does the whole published recipe get
on the shared JPEG copy, in how many minutes, here?

    python benchmarks/airbench_plain.py                 # 9.9 epochs, as published
    python benchmarks/airbench_plain.py --epochs 20     # the schedule stretched to 20 epochs
    python benchmarks/airbench_plain.py --limit 2000 --epochs 1   # a check (seconds)

What the recipe has that ``fast`` leaves out (written here from the paper's description, not
imported): a frozen 2x2 "whitening" first convolution initialised from the eigenvectors of the
training images' 2x2-patch covariance (its bias trained for 3 epochs), identity (Dirac) init of
the first channels of every 3x3 convolution, batch norms with a fixed scale of 1 (eps 1e-12,
running-stat momentum 0.4), norm biases at 64x the learning rate, summed (not averaged) label-
smoothed loss with Nesterov momentum 0.85 and a triangular schedule (0.2 -> 1 at 23 % -> 0.07),
lookahead-style weight averaging every 5 steps from epoch 3 on (as an earlier airbench version
did; the published airbench94 averages from the first step, as lambdanet's ``airbench`` model
does), alternating flips (every image flipped in every other epoch) with 2-pixel reflect-padded
translation, and test-time augmentation over mirror and one-pixel translations. bf16 autocast and channels_last as the
``fast`` recipe uses them here. Prints one line per epoch and a JSON line at the end
(``test_accuracy`` with the 6-view TTA, ``train_seconds``, ``images_per_s``). Nothing here sets
a thread variable.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "cifar10"
MEAN = torch.tensor((0.4914, 0.4822, 0.4465)).view(1, 3, 1, 1)
STD = torch.tensor((0.2470, 0.2435, 0.2616)).view(1, 3, 1, 1)


class FixedScaleNorm(nn.BatchNorm2d):
    """Batch norm whose scale stays 1: only the bias learns."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, eps=1e-12, momentum=0.4)
        self.weight.requires_grad_(False)


def conv3x3(c_in: int, c_out: int) -> nn.Conv2d:
    conv = nn.Conv2d(c_in, c_out, 3, padding="same", bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[:c_in])  # the first c_in output channels start as the identity
    return conv


class Group(nn.Sequential):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(conv3x3(c_in, c_out), nn.MaxPool2d(2), FixedScaleNorm(c_out), nn.GELU(),
                         conv3x3(c_out, c_out), FixedScaleNorm(c_out), nn.GELU())


def make_net(train_images: torch.Tensor) -> nn.Sequential:
    whiten = nn.Conv2d(3, 24, 2, padding=0, bias=True)
    # (n * 31 * 31, 12): every 2x2 patch of the first 5,000 normalised training images
    patches = train_images.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 12).double()
    eigenvalues, eigenvectors = torch.linalg.eigh(patches.T @ patches / len(patches))  # ascending
    filters = (eigenvectors.T / torch.sqrt(eigenvalues + 5e-4)[:, None]).flip(0).reshape(12, 3, 2, 2)
    with torch.no_grad():
        whiten.weight.copy_(torch.cat((filters, -filters)).float())
        whiten.bias.zero_()
    whiten.weight.requires_grad_(False)
    net = nn.Sequential(whiten, nn.GELU(), Group(24, 64), Group(64, 256), Group(256, 256), nn.MaxPool2d(3),
                        nn.Flatten(), nn.Linear(256, 10, bias=False))
    return net.to(memory_format=torch.channels_last)


def logits_of(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out: torch.Tensor = net(x).float() / 9  # (n, 10): airbench's output scale 1/9
    return out


def tta_logits(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Mirror + one-pixel translations: 0.5 x (the image and its mirror) + 0.25 x each shifted pair."""
    def mirrored(v: torch.Tensor) -> torch.Tensor:
        return 0.5 * logits_of(net, v) + 0.5 * logits_of(net, v.flip(-1))
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    h, w = x.shape[-2:]
    shifted = 0.5 * mirrored(padded[:, :, :h, :w]) + 0.5 * mirrored(padded[:, :, 2:, 2:])
    return 0.5 * mirrored(x) + 0.5 * shifted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=float, default=9.9)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--limit", type=int, default=0, help="train on the first N shuffled images (a check)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t_start = time.perf_counter()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    def load(name: str) -> tuple[torch.Tensor, torch.Tensor]:
        with np.load(CIFAR / name) as z:
            x = torch.from_numpy(z["x"]).permute(0, 3, 1, 2).float().div(255)  # (n, 3, 32, 32)
            return ((x - MEAN) / STD).contiguous(memory_format=torch.channels_last), torch.from_numpy(
                z["y"].astype(np.int64))

    x, y = load("cifar10_train.npz")
    xt, yt = load("cifar10_test.npz")
    order = torch.from_numpy(rng.permutation(len(y)))
    x, y = x[order], y[order]  # the copy is sorted by class
    if args.limit:
        x, y, xt, yt = x[:args.limit], y[:args.limit], xt[:args.limit // 5], yt[:args.limit // 5]
    net = make_net(x[:5000])

    bs, momentum = args.batch_size, 0.85
    step_scale = 1024 * (1 + 1 / (1 - momentum))  # Nesterov's step growth, divided out of the lr
    lr, wd = 11.5 / step_scale, 0.0153 * bs / step_scale
    norm_biases = [p for n, p in net.named_parameters() if p.requires_grad and p.ndim == 1 and n != "0.bias"]
    others = [p for n, p in net.named_parameters() if p.requires_grad and not any(p is q for q in norm_biases)]
    opt = torch.optim.SGD([{"params": norm_biases, "lr": lr * 64, "weight_decay": wd / (lr * 64)},
                           {"params": others, "lr": lr, "weight_decay": wd / lr}], momentum=momentum, nesterov=True)
    steps_per_epoch = len(y) // bs  # the last partial batch is dropped
    total = math.ceil(steps_per_epoch * args.epochs)
    peak = int(0.23 * total)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: float(np.interp(s, [0, peak, total], [0.2, 1.0, 0.07])))

    padded = F.pad(x, (2, 2, 2, 2), mode="reflect")  # (n, 3, 36, 36) for the 2-pixel translations
    pre_flip = torch.from_numpy(rng.random(len(y)) < 0.5)  # drawn once; every other epoch flips all
    ema: list[torch.Tensor] | None = None
    step, train_seconds = 0, 0.0
    for epoch in range(math.ceil(args.epochs)):
        t0 = time.perf_counter()
        net[0].bias.requires_grad_(epoch < 3)
        net.train()
        flip = pre_flip ^ bool(epoch % 2)
        dy, dx = rng.integers(0, 5, size=(2, len(y)))
        perm = rng.permutation(len(y))
        for i in range(steps_per_epoch):
            idx = perm[i * bs:(i + 1) * bs]
            crops = torch.stack([padded[j, :, dy[j]:dy[j] + 32, dx[j]:dx[j] + 32] for j in idx])
            crops = torch.where(flip[idx].view(-1, 1, 1, 1), crops.flip(-1), crops)
            loss = F.cross_entropy(logits_of(net, crops.contiguous(memory_format=torch.channels_last)),
                                   y[idx], label_smoothing=0.2, reduction="sum")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if epoch >= 3 and step % 5 == 0:  # lookahead: pull the weights towards their running average
                state = [v for v in net.state_dict().values() if v.is_floating_point()]
                if ema is None:
                    ema = [v.clone() for v in state]
                else:
                    rho = 0.95 ** 5 * (step / total) ** 3
                    for e, v in zip(ema, state, strict=True):
                        e.lerp_(v, 1 - rho)
                        v.copy_(e)
            if step >= total:
                break
        if ema is not None:
            for e, v in zip(ema, [v for v in net.state_dict().values() if v.is_floating_point()], strict=True):
                v.copy_(e)
        train_seconds += time.perf_counter() - t0
        net.eval()
        with torch.inference_mode():
            acc = sum(int((logits_of(net, xt[i:i + 1000]).argmax(1) == yt[i:i + 1000]).sum())
                      for i in range(0, len(yt), 1000)) / len(yt)
        print(f"epoch {epoch + 1}: train {train_seconds:.0f} s, test (no TTA) {acc:.4f}", flush=True)
    t0 = time.perf_counter()
    with torch.inference_mode():
        tta = sum(int((tta_logits(net, xt[i:i + 1000]).argmax(1) == yt[i:i + 1000]).sum())
                  for i in range(0, len(yt), 1000)) / len(yt)
    print(json.dumps({"epochs": args.epochs, "test_accuracy": tta, "test_accuracy_no_tta": acc,
                      "train_seconds": round(train_seconds, 1), "tta_seconds": round(time.perf_counter() - t0, 1),
                      "images_per_s": round(step * bs / train_seconds, 1),
                      "wall_seconds": round(time.perf_counter() - t_start, 1)}))


if __name__ == "__main__":
    main()
