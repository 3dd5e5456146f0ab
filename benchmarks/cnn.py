"""CIFAR-10 CNN benchmark: lambdanet's LeNet training beside plain PyTorch, in one run.

    python benchmarks/cnn.py                 # loop on 10,000 images; whole 1-epoch runs on all 50,000
    python benchmarks/cnn.py --quick         # a check: 2,000 loop images, whole runs on 5,000 (1,000 test)
    python benchmarks/cnn.py --epochs 10     # whole runs of 10 epochs: test accuracy of both
    python benchmarks/cnn.py --device cuda   # on a GPU

1. **The loop** (images/s, one process, same data, model, batch 100, thread count; interleaved
   runs, median): a plain PyTorch loop (torch's defaults) beside lambdanet's K = 1 loop,
   :func:`lambdanet.torchnet.train.train_epochs` after :func:`configure_torch` — what the engine's
   worker runs, in the calling thread as the local executor runs K = 1 — and, for reference,
   K = 2 (two threads, one memory-store all-reduce per step). Target: K = 1 ≥ 0.95× plain.
2. **The whole run** (seconds, fresh processes): ``lambdanet train <npz> -p cnn.json --json``
   (reading the data, the run's data snapshot, checkpoints, ledger, the final accuracies, the
   registry) beside a plain script (:data:`PLAIN_SCRIPT`: loads the same .npz, trains the same
   epochs, scores the test set). Target: lambdanet ≤ 1.15× plain. Below it: the lambdanet run's
   epoch time from its ledger, and the data snapshot's share (``engine.checkpoints.write_data``
   timed in this process on the same data set).

Nothing here sets a thread variable: both sides run in the environment a user has. NOTE: this
CIFAR-10 copy is JPEG-compressed (see shared/datasets/cifar10/README.txt); expect ~2-3 % lower
accuracy than on the original pixels.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lambdanet.config import CNNConfig
from lambdanet.engine.collectives import Collective
from lambdanet.stores.memory import MemoryStore
from lambdanet.torchnet.data import ImageData, load_cifar10
from lambdanet.torchnet.models import build_model
from lambdanet.torchnet.train import configure_torch, make_optimizer, resolve_device, train_epochs, usable_cores

CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "cifar10"
LOOP_TARGET, RUN_TARGET = 0.95, 1.15

# The plain whole-run reference: what a user writes without lambdanet (argv: train.npz test.npz
# epochs batch lr seed device). Prints one JSON line.
PLAIN_SCRIPT = r'''
import json, sys, time
t0 = time.perf_counter()
import numpy as np, torch, torch.nn.functional as F
from torch import nn
train, test, epochs, batch, lr, seed, device = sys.argv[1:8]
epochs, batch, lr, seed, dev = int(epochs), int(batch), float(lr), int(seed), torch.device(device)
with np.load(train) as z:
    x, y = z["x"], z["y"].astype(np.int64)
with np.load(test) as z:
    xt, yt = z["x"], z["y"].astype(np.int64)
torch.manual_seed(seed)
model = nn.Sequential(nn.Conv2d(3, 32, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 5), nn.ReLU(),
                      nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1600, 120), nn.ReLU(), nn.Linear(120, 84),
                      nn.ReLU(), nn.Linear(84, 10)).to(dev)
opt = torch.optim.Adam(model.parameters(), lr=lr)
labels = torch.from_numpy(y).to(dev)
def images(a):  # uint8 (n, 32, 32, 3) -> float (n, 3, 32, 32), x / 255 normalised with mean = std = 0.5
    return (torch.from_numpy(a).to(dev).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
t1 = time.perf_counter()
for epoch in range(1, epochs + 1):
    perm = np.random.default_rng([seed, epoch]).permutation(len(y))
    for i in range(0, len(y), batch):
        idx = perm[i:i + batch]
        loss = F.cross_entropy(model(images(x[idx])), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
model.eval()
correct = 0
with torch.no_grad():
    for i in range(0, len(yt), 500):
        correct += int((model(images(xt[i:i + 500])).argmax(1).cpu().numpy() == yt[i:i + 500]).sum())
t2 = time.perf_counter()
print(json.dumps({"test_accuracy": correct / len(yt), "load_seconds": t1 - t0, "train_seconds": t2 - t1}))
'''


# ---- 1. the loop -----------------------------------------------------------------------------
def plain_loop(x: np.ndarray, y: np.ndarray, cfg: CNNConfig, dev: torch.device) -> float:
    """Seconds for one epoch of an ordinary PyTorch loop, torch's default settings."""
    if dev.type == "cuda":  # configure_torch turns them on for GPUs only
        torch.use_deterministic_algorithms(False)
    model = build_model(cfg.model, seed=cfg.seed).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    labels = torch.from_numpy(y).to(dev)
    t0 = time.perf_counter()
    perm = np.random.default_rng([cfg.seed, 1]).permutation(len(y))
    for i in range(0, len(y), cfg.batch_size):
        idx = perm[i:i + cfg.batch_size]
        xb = (torch.from_numpy(x[idx]).to(dev).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
        loss = F.cross_entropy(model(xb), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def lambdanet_k1(x: np.ndarray, y: np.ndarray, cfg: CNNConfig, dev: torch.device) -> float:
    """Seconds for one epoch of train_epochs at K = 1, set up as the engine's worker does."""
    configure_torch(device=dev)
    model = build_model(cfg.model, seed=cfg.seed).to(dev)
    opt = make_optimizer(model, cfg)
    t0 = time.perf_counter()
    train_epochs(model, opt, x, y, cfg, 1, None, device=dev)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def lambdanet_k2(x: np.ndarray, y: np.ndarray, cfg: CNNConfig, dev: torch.device) -> float:
    """Seconds for one epoch of train_epochs with 2 workers (threads) on a memory store."""
    store = MemoryStore.from_url(f"memory://bench-{uuid.uuid4().hex}")
    errors: list[BaseException] = []

    def work(rank: int) -> None:
        try:
            configure_torch(threads=max(1, usable_cores() // 2), device=dev)  # in the worker thread, as the engine does
            model = build_model(cfg.model, seed=cfg.seed).to(dev)
            comm = Collective(store, "bench", rank, 2, timeout_s=600)
            train_epochs(model, make_optimizer(model, cfg), x, y, cfg, 1, comm, device=dev)
        except BaseException as exc:
            errors.append(exc)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=work, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    configure_torch()
    if errors:
        raise errors[0]
    return seconds


def loop(args: argparse.Namespace, d: ImageData, dev: torch.device) -> None:
    n = min(args.loop_images, len(d.y_train))
    x, y = d.x_train[:n], d.y_train[:n].astype(np.int64)
    cfg = CNNConfig(model="lenet", epochs=1, batch_size=100)
    plain_loop(x[:500], y[:500], cfg, dev)  # warm-up (allocator, oneDNN kernels)
    lambdanet_k1(x[:500], y[:500], cfg, dev)
    timers = {"plain PyTorch loop": plain_loop, "lambdanet K=1 (train_epochs, calling thread)": lambdanet_k1}
    if not args.skip_k2:
        timers["lambdanet K=2 (2 threads, memory-store all-reduce per step)"] = lambdanet_k2
    runs: dict[str, list[float]] = {name: [] for name in timers}
    for r in range(args.repeats):  # interleaved, alternating order: a load change hits both sides of a round
        for name in list(timers)[:: 1 if r % 2 == 0 else -1]:
            runs[name].append(timers[name](x, y, cfg, dev))
    plain = np.array(runs["plain PyTorch loop"])
    print(f"\n1. the loop: LeNet, Adam, batch 100, {n} images x 1 epoch, {torch.get_num_threads()} torch threads, "
          f"{args.repeats} interleaved rounds: images/s of the median run, ratio = median of the rounds' ratios")
    for name, seconds in runs.items():
        ratios = plain / np.array(seconds)  # per round: this side's speed over the plain loop's
        mark = ""
        if name.startswith("lambdanet K=1"):
            mark = f"  target >= {LOOP_TARGET:.2f}x: {'met' if np.median(ratios) >= LOOP_TARGET else 'MISSED'}"
        spread = f"[{ratios.min():.2f}-{ratios.max():.2f}]" if len(ratios) > 1 else ""
        print(f"  {name:<62} {n / float(np.median(seconds)):8.0f} img/s  {np.median(ratios):5.2f}x "
              f"{spread:>11}{mark}")


# ---- 2. the whole run ------------------------------------------------------------------------
def _timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=7200)
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} … failed (exit {r.returncode}): {r.stderr.strip()[-1500:]}")
    return seconds, json.loads(r.stdout.strip().splitlines()[-1])


def _epoch_seconds(home: Path, run_id: str) -> float:
    """The lambdanet run's epoch seconds (training + the epoch's test pass) from its ledger."""
    from lambdanet.services import Services
    from lambdanet.settings import Settings

    old = os.environ.get("LAMBDANET_HOME")
    os.environ["LAMBDANET_HOME"] = str(home)
    try:
        services = Services.open(Settings.from_env(notifier_url="console://"))
        try:
            return sum(r.seconds for r in services.ledger.epochs(run_id))
        finally:
            services.close()
    finally:
        if old is None:
            os.environ.pop("LAMBDANET_HOME", None)
        else:
            os.environ["LAMBDANET_HOME"] = old


def _snapshot_seconds(train_npz: Path, tmp: Path) -> tuple[float, float]:
    """(seconds to read the data set as the driver does, seconds of its data snapshot write)."""
    from lambdanet.data.readers import load_dataset
    from lambdanet.engine import checkpoints

    t0 = time.perf_counter()
    ds = load_dataset(str(train_npz))
    t1 = time.perf_counter()
    checkpoints.write_data(checkpoints.open_objects(str(tmp / "snapshot-objects")), "r-bench-snapshot", ds)
    return t1 - t0, time.perf_counter() - t1


def whole_run(args: argparse.Namespace, d: ImageData, tmp: Path) -> None:
    if args.limit is None:
        train_npz, test_npz = args.data / "cifar10_train.npz", args.data / "cifar10_test.npz"
    else:
        folder = tmp / "data"
        folder.mkdir()
        train_npz, test_npz = folder / "cifar10_train.npz", folder / "cifar10_test.npz"
        np.savez(train_npz, x=d.x_train, y=d.y_train.astype(np.uint8))
        np.savez(test_npz, x=d.x_test, y=d.y_test.astype(np.uint8))
    cfg = {"model": "lenet", "epochs": args.epochs, "batch_size": 100, "learning_rate": 0.001,
           "optimizer": "adam", "seed": 0, "augment": False}
    (tmp / "cnn.json").write_text(json.dumps(cfg))
    (tmp / "plain_run.py").write_text(PLAIN_SCRIPT)
    env = dict(os.environ)  # the user's environment: no thread variable is added
    plain_cmd = [sys.executable, str(tmp / "plain_run.py"), str(train_npz), str(test_npz), str(args.epochs),
                 "100", "0.001", "0", args.device]
    ours_cmd = [sys.executable, "-m", "lambdanet", "train", str(train_npz), "-p", str(tmp / "cnn.json"),
                "--model", "bench-cnn", "--device", args.device, "--json"]
    plain_s: list[float] = []
    ours_s: list[float] = []
    epochs_s: list[float] = []
    plain_out: dict[str, Any] = {}
    ours_out: dict[str, Any] = {}
    for r in range(args.run_repeats):
        order = ["plain", "ours"] if r % 2 == 0 else ["ours", "plain"]
        for side in order:
            if side == "plain":
                s, plain_out = _timed(plain_cmd, env, tmp)
                plain_s.append(s)
            else:
                home = tmp / f"home-{r}"  # a fresh home: a user's first run (the data snapshot is written)
                s, ours_out = _timed(ours_cmd, {**env, "LAMBDANET_HOME": str(home)}, tmp)
                ours_s.append(s)
                epochs_s.append(_epoch_seconds(home, ours_out["run_id"]))
    plain, ours = float(np.median(plain_s)), float(np.median(ours_s))
    read_s, snap_s = _snapshot_seconds(train_npz, tmp)
    ratio = ours / plain
    print(f"\n2. the whole run: LeNet, {args.epochs} epoch(s) on {len(d.y_train)} images, test accuracy on "
          f"{len(d.y_test)}; fresh processes, median of {args.run_repeats}")
    print(f"  {'plain script process (load .npz, train, score the test set)':<62} {plain:8.1f} s        "
          f"test accuracy {plain_out['test_accuracy']:.4f}  (its epochs: {plain_out['train_seconds']:.1f} s)")
    print(f"  {'lambdanet train process (K=1, local executor, memory store)':<62} {ours:8.1f} s  {ratio:5.2f}x "
          f"test accuracy {ours_out['test_accuracy']:.4f}  target <= {RUN_TARGET:.2f}x: "
          f"{'met' if ratio <= RUN_TARGET else 'MISSED'}")
    epoch = float(np.median(epochs_s))
    print(f"    of which its epochs (ledger: training + the test pass) {epoch:.1f} s, the rest {ours - epoch:.1f} s; "
          f"measured here: reading the .npz {read_s:.2f} s, writing the run's data snapshot {snap_s:.2f} s "
          f"({snap_s / ours:.1%} of the run)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a check: --limit 5000 --limit-test 1000 "
                    "--loop-images 2000 --repeats 3")
    ap.add_argument("--epochs", type=int, default=1, help="epochs of the whole runs (default 1)")
    ap.add_argument("--limit", type=int, default=None, help="training images of the whole runs (default all)")
    ap.add_argument("--limit-test", type=int, default=None, help="test images of the whole runs (default all)")
    ap.add_argument("--loop-images", type=int, default=10_000, help="training images of the loop runs")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved loop rounds (median)")
    ap.add_argument("--run-repeats", type=int, default=1, help="whole runs per side (median, interleaved)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda")
    ap.add_argument("--skip-loop", action="store_true")
    ap.add_argument("--skip-run", action="store_true")
    ap.add_argument("--skip-k2", action="store_true", help="no K=2 loop row")
    ap.add_argument("--data", type=Path, default=CIFAR)
    args = ap.parse_args(argv)
    if args.quick:
        args.limit = args.limit or 5_000
        args.limit_test = args.limit_test or 1_000
        args.loop_images = min(args.loop_images, 2_000)
        args.repeats = min(args.repeats, 3)

    dev = resolve_device(args.device)
    t0 = time.perf_counter()
    d = load_cifar10(args.data, limit_train=args.limit, limit_test=args.limit_test, seed=0)
    threads = [v for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS") if v in os.environ]
    print(f"data: {len(d.y_train)} train / {len(d.y_test)} test images from {args.data} "
          f"({time.perf_counter() - t0:.1f} s to load); device {dev}, torch {torch.__version__}, "
          f"{os.cpu_count()} cores, thread variables set by the user: {', '.join(threads) or 'none'}")
    tmp = Path(tempfile.mkdtemp(prefix="lambdanet-bench-cnn-"))
    try:
        if not args.skip_loop:
            loop(args, d, dev)
        if not args.skip_run:
            whole_run(args, d, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
