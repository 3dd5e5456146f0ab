"""CIFAR-10 time to accuracy: the shipped CNN recipes through ``lambdanet train`` beside a plain
PyTorch script of the same recipe, in one run.

    python benchmarks/cifar.py                         # fast (10 epochs), fast --epochs 2, lenet
    python benchmarks/cifar.py --recipes fast@2,fast@2x2   # the K = 2 check: 2 epochs, K = 1 and K = 2
    python benchmarks/cifar.py --recipes vgg11_bn      # VGG11-bn's 50 epochs (about 110 min on 2 bf16 cores)
    python benchmarks/cifar.py --recipes airbench      # the airbench recipe (whitening, lookahead, …)
    python benchmarks/cifar.py --quick                 # a check: 5,000 / 1,000 images, 1 epoch each
    python benchmarks/cifar.py --recipes airbench@2 --repeat 3   # 3 pairs of runs, the median ratio
    python benchmarks/cifar.py --precision             # training steps/s: fp32, bf16, channels_last, compile
    python benchmarks/cifar.py --tta MODEL             # a registered model ($LAMBDANET_HOME) under each tta

A recipe is ``NAME[@EPOCHS][xK]``: ``examples/cifar10/NAME.json``, optionally ``--epochs EPOCHS``
(the schedule rescales) and ``--workers K`` (``data`` strategy, the default local executor and
memory store). For each, two fresh processes on the same ``.npz`` files:

* ``lambdanet train TRAIN.npz -p NAME.json --json`` with a fresh ``LAMBDANET_HOME`` (the data
  snapshot, checkpoints, ledger, the registry — a user's first run);
* :data:`PLAIN_SCRIPT`: what a user writes without lambdanet — the same network definition
  (imported: the loop is what is compared, not the layers), the same optimizer, schedule, label
  smoothing, augmentation, lookahead, bf16 autocast / channels_last where the recipe says,
  the recipe's test-time augmentation on the last epoch (one pass before it, as lambdanet scores);
  torch's defaults otherwise, numpy's ``default_rng`` per epoch.

Columns: epochs, the process's wall time, training images/s (images x epochs over the epochs'
seconds — each epoch's training and its test pass, from the ledger for lambdanet and timed in the
script for plain), final test accuracy. Target: lambdanet's images/s >= 0.95x the plain script's.
On a shared virtual machine one pair's ratio moves by about +-10 % between identical runs
(docs/benchmarks.md): ``--repeat N`` runs N pairs, who goes first alternating, and judges the
median ratio.
``--precision`` times training steps alone (random batches, SGD with Nesterov momentum, label
smoothing) for each model: a plain float32 PyTorch step (the reference) beside bf16 autocast,
bf16 + channels_last and ``torch.compile`` — what decided each recipe's ``precision`` and
:data:`lambdanet.torchnet.models.CHANNELS_LAST` (lambdanet's choice is marked).

Accuracy targets on this machine: fast >= 0.92 in <= 40 minutes and >= 0.80 at 2 epochs,
VGG11-bn >= 0.90; K = 2 within 0.5 point of K = 1. Nothing here sets a thread variable. NOTE: the
shared CIFAR-10 copy is JPEG-compressed (shared/datasets/cifar10/README.txt): expect about 2
points below figures on the original pixels.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CIFAR = ROOT.parent / "shared" / "datasets" / "cifar10"
RECIPES = ROOT / "examples" / "cifar10"
SPEED_TARGET = 0.95
TARGETS = {"fast": (0.92, 40 * 60), "fast@2": (0.80, None), "vgg11_bn": (0.90, None),
           "airbench": (0.92, 40 * 60), "airbench@2": (0.80, None)}

# argv: train.npz test.npz config.json epochs. Prints one JSON line.
PLAIN_SCRIPT = r'''
import json, sys, time
t0 = time.perf_counter()
import numpy as np, torch, torch.nn.functional as F
from lambdanet.torchnet.models import build_model  # the network only; the loop below is plain PyTorch
train, test, cfg_path, epochs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
cfg = json.load(open(cfg_path))
bs, seed, precision = cfg.get("batch_size", 100), cfg.get("seed", 0), cfg.get("precision", "fp32")
# "auto": bf16 only on a CPU with bf16 in hardware (AMX or AVX-512 BF16), as the recipe resolves it
half = precision == "bf16" or (precision == "auto" and (torch.cpu._is_amx_tile_supported()
                                                        or torch.cpu._is_avx512_bf16_supported()))
with np.load(train) as z:
    x, y = z["x"], torch.from_numpy(z["y"].astype(np.int64))
with np.load(test) as z:
    xt, yt = z["x"], torch.from_numpy(z["y"].astype(np.int64))
model = build_model(cfg["model"], n_classes=10, seed=seed)
if cfg["model"] == "airbench":  # whitening filters from 5,000 shuffled training images
    sample = np.random.default_rng(seed).permutation(len(y))[:5000]
    model.initialise_from((torch.from_numpy(x[sample]).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5)
if half and cfg["model"] in ("fast", "airbench"):
    model = model.to(memory_format=torch.channels_last)
lr, wd = cfg.get("learning_rate", 1e-3), cfg.get("weight_decay", 0.0)
# airbench: the batch norms' biases at 64x the rate and 1/64 the weight decay
norm_biases = [p for n, p in model.named_parameters() if p.requires_grad and cfg["model"] == "airbench"
               and n.startswith("blocks") and n.endswith("bias")]
rest = [p for p in model.parameters() if p.requires_grad and all(p is not q for q in norm_biases)]
groups = [{"params": rest, "lr": lr, "weight_decay": wd}]
groups += [{"params": norm_biases, "lr": lr * 64, "weight_decay": wd / 64}] if norm_biases else []
if cfg.get("optimizer", "adam") == "sgd":
    opt = torch.optim.SGD(groups, lr=lr, momentum=cfg.get("momentum", 0.9), nesterov=cfg.get("nesterov", False))
else:
    opt = torch.optim.Adam(groups, lr=lr)
steps = -(-len(y) // bs)
total, peak = epochs * steps, max(1.0, cfg.get("warmup", 0.0) * epochs * steps)
start, end = cfg.get("lr_start", 0.0), cfg.get("lr_end", 0.0)
if cfg.get("lr_schedule") == "warmup_decay":  # up linearly over the warm-up steps, then down
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: float(np.interp(s + 1, [0, peak, total + 1],
                                                                             [start, 1.0, end])))
else:
    sched = None
average = {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}  # lookahead
augment, smoothing, tta = cfg.get("augment", "crop+flip"), cfg.get("label_smoothing", 0.0), cfg.get("tta", "none")

def images(a):  # uint8 (n, H, W, 3) -> float (n, 3, H, W), x / 255 normalised with mean = std = 0.5
    return (torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5

def scores(xb, tta):  # the logits under a test-time augmentation (a sum: only the argmax is used)
    if tta == "none":
        return model(xb)
    mirrored = model(xb) + model(torch.flip(xb, dims=(3,)))
    if tta == "flip":
        return mirrored
    h, w = xb.shape[-2:]  # "flip+translate": airbench94's 6 views, the shifted pairs at half weight
    p = F.pad(xb, (1, 1, 1, 1), mode="reflect")
    shifts = [p[:, :, :h, :w], p[:, :, 2:, 2:]]
    return 2 * mirrored + sum(model(s) + model(torch.flip(s, dims=(3,))) for s in shifts)

parts, cut = set(augment.split("+")), cfg.get("cutout", 0)
alternate = np.random.default_rng([seed, 2]).random(len(y)) < 0.5  # "altflip": mirrored in odd epochs

def jitter(a, idx, rng, epoch):  # a random crop ("crop": zero pad 4; "translate": reflect pad 2) and flips
    n, h, w, _ = a.shape
    pad = 2 if "translate" in parts else 4
    padded = np.pad(a, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect" if pad == 2 else "constant")
    shift = parts & {"crop", "translate"}
    dy, dx = rng.integers(0, 2 * pad + 1, size=(2, n)) if shift else np.full((2, n), pad)
    rows, cols = dy[:, None] + np.arange(h), dx[:, None] + np.arange(w)
    flip = (alternate[idx] ^ (epoch % 2 == 0) if "altflip" in parts
            else rng.random(n) < 0.5 if "flip" in parts else np.zeros(n, bool))
    cols[flip] = cols[flip][:, ::-1]
    out = padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    if cut:  # "cutout": a mid-grey cut x cut square wholly inside each image
        top, left = rng.integers(0, h - cut + 1, n), rng.integers(0, w - cut + 1, n)
        for k in range(n):
            out[k, top[k]:top[k] + cut, left[k]:left[k] + cut] = 128
    return out

epoch_seconds, accuracy = [], None
t1 = time.perf_counter()
for epoch in range(1, epochs + 1):
    e0 = time.perf_counter()
    model.train()
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(len(y))
    for i in range(0, len(y), bs):
        idx = perm[i:i + bs]
        xb = x[idx] if augment == "none" and not cut else jitter(x[idx], idx, rng, epoch)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=half):
            logits = model(images(xb)).float()
        loss = F.cross_entropy(logits, y[idx], label_smoothing=smoothing)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        step = (epoch - 1) * steps + i // bs + 1
        if cfg.get("lookahead") and (step % 5 == 0 or step == total):
            state = model.state_dict()
            for k, v in average.items():
                if step % 5 == 0:
                    v.lerp_(state[k], 1 - 0.95 ** 5 * (step / total) ** 3)
                state[k].copy_(v)
    model.eval()
    correct = 0
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=half):
        for i in range(0, len(yt), 250):
            xb = images(xt[i:i + 250])
            logits = scores(xb, tta if epoch == epochs else "none")  # the recipe's views on the last epoch
            correct += int((logits.argmax(1) == yt[i:i + 250]).sum())
    accuracy = correct / len(yt)
    epoch_seconds.append(time.perf_counter() - e0)
print(json.dumps({"test_accuracy": accuracy, "epoch_seconds": epoch_seconds, "load_seconds": t1 - t0}))
'''


@dataclass(frozen=True)
class Recipe:
    name: str  # examples/cifar10/<name>.json
    epochs: int | None  # None: the recipe's own
    workers: int

    @property
    def label(self) -> str:
        return self.name + (f"@{self.epochs}" if self.epochs else "") + (f"x{self.workers}" if self.workers > 1 else "")


def parse_recipe(text: str) -> Recipe:
    m = re.fullmatch(r"([a-z0-9_]+)(?:@(\d+))?(?:x(\d+))?", text.strip())
    if m is None or not (RECIPES / f"{m.group(1)}.json").is_file():
        known = ", ".join(sorted(p.stem for p in RECIPES.glob("*.json")))
        raise SystemExit(f"recipe '{text}': expected NAME[@EPOCHS][xK] with NAME one of {known}")
    return Recipe(m.group(1), int(m.group(2)) if m.group(2) else None, int(m.group(3) or 1))


@dataclass(frozen=True)
class Row:
    side: str
    epochs: int
    wall_s: float
    images_per_s: float
    test_accuracy: float


def _run(cmd: list[str], env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=6 * 3600)
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:5])} … failed (exit {r.returncode}): {r.stderr.strip()[-1500:]}")
    return seconds, json.loads(r.stdout.strip().splitlines()[-1])


def _ledger_epoch_seconds(home: Path, run_id: str) -> list[float]:
    """The run's epoch seconds (each epoch's training and its test pass) from its ledger."""
    os.environ["LAMBDANET_HOME"] = str(home)
    from lambdanet.services import Services
    from lambdanet.settings import Settings

    services = Services.open(Settings.from_env(notifier_url="console://"))
    try:
        return [r.seconds for r in services.ledger.epochs(run_id)]
    finally:
        services.close()


def lambdanet_row(recipe: Recipe, config: Path, data: tuple[Path, Path], n_train: int, epochs: int,
                  tmp: Path, attempt: int = 0) -> Row:
    home = tmp / f"home-{recipe.label}-{attempt}"  # a fresh home each time: a user's first run
    cmd = [sys.executable, "-m", "lambdanet", "train", str(data[0]), "-p", str(config), "--epochs", str(epochs),
           "--workers", str(recipe.workers), "--model", f"bench-{recipe.name}", "--json"]
    wall, out = _run(cmd, {**os.environ, "LAMBDANET_HOME": str(home)})
    seconds = _ledger_epoch_seconds(home, out["run_id"])
    return Row(f"lambdanet train (K={recipe.workers})", len(seconds), wall, n_train * len(seconds) / sum(seconds),
               float(out["test_accuracy"]))


def plain_row(config: Path, data: tuple[Path, Path], n_train: int, epochs: int, tmp: Path) -> Row:
    script = tmp / "plain_recipe.py"
    script.write_text(PLAIN_SCRIPT)
    wall, out = _run([sys.executable, str(script), str(data[0]), str(data[1]), str(config), str(epochs)],
                     dict(os.environ))
    seconds = out["epoch_seconds"]
    return Row("plain PyTorch script", len(seconds), wall, n_train * len(seconds) / sum(seconds),
               float(out["test_accuracy"]))


def verdict(recipe: Recipe, epochs: int, row: Row) -> str:
    key = recipe.name if recipe.epochs is None else f"{recipe.name}@{epochs}"
    if key not in TARGETS:
        return ""
    accuracy, seconds = TARGETS[key]
    met = row.test_accuracy >= accuracy and (seconds is None or row.wall_s <= seconds)
    within = "" if seconds is None else f" in <= {seconds / 60:.0f} min"
    return f"target >= {accuracy:.2f}{within}: {'met' if met else 'MISSED'}"


def subset_files(limit: int, limit_test: int, tmp: Path) -> tuple[Path, Path]:
    """The first ``limit`` / ``limit_test`` images of a seeded shuffle (the files are sorted by class)."""
    folder = tmp / "data"
    folder.mkdir()
    out = []
    for split, n in (("train", limit), ("test", limit_test)):
        with np.load(CIFAR / f"cifar10_{split}.npz") as z:
            x, y = z["x"], z["y"]
        idx = np.random.default_rng(0).permutation(len(y))[:n]
        out.append(folder / f"cifar10_{split}.npz")
        np.savez(out[-1], x=x[idx], y=y[idx])
    return out[0], out[1]


PRECISION_MODES = ("fp32", "bf16", "bf16+channels_last", "fp32+compile")


def step_images_per_s(name: str, mode: str, batch: int, steps: int) -> float:
    """Images/s of ``steps`` training steps of model ``name`` in ``mode`` (after 2 warm-up steps)."""
    import torch
    import torch.nn.functional as F

    from lambdanet.torchnet.models import build_model

    model = build_model(name, seed=0)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    if "channels_last" in mode:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    forward = torch.compile(model) if "compile" in mode else model

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode.startswith("bf16")):
            loss = F.cross_entropy(forward(x).float(), y, label_smoothing=0.2)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - t0)


def precision_table() -> None:
    """Training-step images/s per model and numeric mode, beside the plain float32 step."""
    import torch

    from lambdanet.config import CNNConfig, parse_config
    from lambdanet.torchnet.models import CHANNELS_LAST
    from lambdanet.torchnet.train import resolve_precision

    print(f"{'model':<10} {'mode':<20} {'images/s':>9} {'x fp32':>7}")
    for name, batch, steps in (("lenet", 100, 40), ("fast", 256, 6), ("vgg11_bn", 128, 4)):
        recipe = parse_config(json.loads((RECIPES / f"{name}.json").read_text()), source=name)
        assert isinstance(recipe, CNNConfig)
        resolved = resolve_precision(recipe.precision, torch.device("cpu"))
        ours = "fp32" if resolved == "fp32" else ("bf16+channels_last" if name in CHANNELS_LAST else "bf16")
        reference = None
        for mode in PRECISION_MODES:
            rate = step_images_per_s(name, mode, batch, steps)
            reference = reference or rate
            mark = "  <- the recipe (examples/cifar10)" if mode == ours else ""
            print(f"{name:<10} {mode:<20} {rate:9.0f} {rate / reference:6.2f}x{mark}", flush=True)


TTA_MODES = ("none", "flip", "flip+translate")


def tta_table(model_name: str) -> None:
    """Test accuracy and images/s of a registered model (``$LAMBDANET_HOME``) under each ``tta``,
    scored as its training scored it (its recipe's precision), on the whole shared test set."""
    import torch

    from lambdanet.config import CNNConfig
    from lambdanet.predictor import load_predictor
    from lambdanet.services import Services
    from lambdanet.settings import Settings
    from lambdanet.torchnet.predictor import CNNPredictor
    from lambdanet.torchnet.train import evaluate

    services = Services.open(Settings.from_env(notifier_url="console://"))
    try:
        version = services.registry.load(model_name)
        predictor = load_predictor(version)
    finally:
        services.close()
    assert isinstance(predictor, CNNPredictor)
    config = CNNConfig.model_validate(version.meta.config)
    with np.load(CIFAR / "cifar10_test.npz") as z:
        x, y = z["x"], z["y"].astype(np.int64)
    print(f"{model_name}:{version.version} ({version.meta.architecture.model}, scored at {config.precision}; "
          f"recorded test accuracy {version.meta.metrics.get('test_accuracy')}), {len(y)} test images")
    print(f"{'tta':<16} {'test acc':>8} {'images/s':>9}")
    for mode in TTA_MODES:
        t0 = time.perf_counter()
        accuracy = evaluate(predictor.model, x, y, torch.device("cpu"), tta=mode, precision=config.precision)
        print(f"{mode:<16} {accuracy:8.4f} {len(y) / (time.perf_counter() - t0):9.0f}", flush=True)


def print_pair(recipe: Recipe, epochs: int, rows: dict[str, Row], quick: bool) -> None:
    """The lambdanet row (its ratio to the plain script's images/s and its verdicts), then the plain row."""
    plain = rows.get("plain")
    for side in ("lambdanet", "plain"):
        if side not in rows:
            continue
        row = rows[side]
        ratio = f"{row.images_per_s / plain.images_per_s:5.2f}x" if plain and side == "lambdanet" else ""
        mark = verdict(recipe, epochs, row) if side == "lambdanet" and not quick else ""
        if ratio:
            fast_enough = row.images_per_s >= SPEED_TARGET * plain.images_per_s
            mark = f"speed >= {SPEED_TARGET:.2f}x: {'met' if fast_enough else 'MISSED'}; {mark}"
        print(f"{recipe.label:<12} {row.side:<24} {row.epochs:>6} {row.wall_s / 60:8.1f}m "
              f"{row.images_per_s:9.0f} {ratio:>6} {row.test_accuracy:8.4f}  {mark}", flush=True)


def positive(text: str) -> int:
    """``--repeat``'s value: a whole number >= 1 (argparse turns the error into one line, exit 2)."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--recipes", default="fast,fast@2,lenet", help="comma-separated NAME[@EPOCHS][xK]")
    ap.add_argument("--quick", action="store_true", help="5,000 train / 1,000 test images, 1 epoch each")
    ap.add_argument("--skip-plain", action="store_true", help="only the lambdanet rows")
    ap.add_argument("--repeat", type=positive, default=1, metavar="N",
                    help="N pairs of runs per recipe: the median ratio")
    ap.add_argument("--precision", action="store_true", help="training-step images/s per numeric mode, then exit")
    ap.add_argument("--tta", metavar="MODEL", help="a registered model's test accuracy under each tta, then exit")
    args = ap.parse_args(argv)
    if args.precision:
        precision_table()
        return 0
    if args.tta:
        tta_table(args.tta)
        return 0
    recipes = [parse_recipe(r) for r in args.recipes.split(",") if r.strip()]
    tmp = Path(tempfile.mkdtemp(prefix="lambdanet-bench-cifar-"))
    try:
        data = subset_files(5_000, 1_000, tmp) if args.quick else (CIFAR / "cifar10_train.npz",
                                                                   CIFAR / "cifar10_test.npz")
        with np.load(data[0]) as z:
            n_train = len(z["y"])
        threads = [v for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS") if v in os.environ]
        print(f"CIFAR-10 (JPEG copy) from {data[0].parent}: {n_train} training images; {os.cpu_count()} cores; "
              f"thread variables set by the user: {', '.join(threads) or 'none'}")
        print(f"{'recipe':<12} {'side':<24} {'epochs':>6} {'wall':>9} {'images/s':>9} {'ratio':>6} "
              f"{'test acc':>8}")
        for n, recipe in enumerate(recipes):
            config = RECIPES / f"{recipe.name}.json"
            epochs = 1 if args.quick else recipe.epochs or int(json.loads(config.read_text())["epochs"])
            ratios = []
            for attempt in range(args.repeat):
                # alternate who goes first, between recipes and between repeats
                sides = ["lambdanet", "plain"] if (n + attempt) % 2 == 0 else ["plain", "lambdanet"]
                rows: dict[str, Row] = {}
                for side in sides:
                    if side == "plain" and (args.skip_plain or recipe.workers > 1):
                        continue
                    rows[side] = (lambdanet_row(recipe, config, data, n_train, epochs, tmp, attempt)
                                  if side == "lambdanet" else plain_row(config, data, n_train, epochs, tmp))
                if "plain" in rows:
                    ratios.append(rows["lambdanet"].images_per_s / rows["plain"].images_per_s)
                print_pair(recipe, epochs, rows, quick=args.quick)
            if len(ratios) > 1:
                median = float(np.median(ratios))
                met = "met" if median >= SPEED_TARGET else "MISSED"
                print(f"{recipe.label:<12} median ratio over {len(ratios)} pairs: {median:.2f}x "
                      f"({min(ratios):.2f}-{max(ratios):.2f}x)  speed >= {SPEED_TARGET:.2f}x: {met}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
