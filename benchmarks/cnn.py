"""CIFAR-10 CNN benchmark: lambdanet's data-parallel LeNet training beside a plain PyTorch loop,
and test accuracy after N epochs.

    python benchmarks/cnn.py                          # full run: throughput + 10 epochs on 50k images
    python benchmarks/cnn.py --epochs 2 --limit 5000  # quick
    python benchmarks/cnn.py --skip-accuracy          # throughput only
    python benchmarks/cnn.py --device cuda            # on a GPU

Throughput (images/s, same data, model, batch size, preprocessing and thread budget):

* plain PyTorch loop  — ``loss.backward(); opt.step()`` over shuffled mini-batches;
* lambdanet K=1       — :func:`lambdanet.torchnet.train.train_epochs`, the loop the engine's
  worker runs (``collective=None``);
* lambdanet K=2       — two workers (threads, one torch thread each) all-reducing one flat
  gradient buffer per step through the engine's :class:`Collective` on a ``memory://`` store.
* engine K=1 / K=2    — the whole :class:`Driver` (data upload, rounds, checkpoints, ledger,
  registry) with the local executor and the memory store, images/s over its wall time.

The accuracy phase trains LeNet (Adam, lr 1e-3, batch 100) through the Driver (K=1) for
``--epochs`` on ``--limit`` training images and reports the test accuracy on the 10,000 test
images. NOTE: this CIFAR-10 copy is JPEG-compressed (see shared/datasets/cifar10/README.txt);
expect ~2-3 % lower accuracy than on the original pixels.
"""

from __future__ import annotations

import argparse
import os
import shutil
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
from lambdanet.torchnet.data import ImageData, load_cifar10, minibatches, to_tensor
from lambdanet.torchnet.models import build_model
from lambdanet.torchnet.train import configure_torch, make_optimizer, resolve_device, train_epochs, usable_cores

CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "cifar10"


def plain_loop(x: np.ndarray, y: np.ndarray, cfg: CNNConfig, epochs: int, dev: torch.device) -> float:
    """Seconds for ``epochs`` of an ordinary PyTorch training loop."""
    model = build_model(cfg.model, seed=cfg.seed).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    yt = torch.from_numpy(y)
    t0 = time.perf_counter()
    for epoch in range(1, epochs + 1):
        for idx in minibatches(len(y), cfg.batch_size, cfg.seed, epoch):
            loss = F.cross_entropy(model(to_tensor(x[idx], dev)), yt[idx].to(dev))
            opt.zero_grad()
            loss.backward()
            opt.step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def lambdanet_k(x: np.ndarray, y: np.ndarray, cfg: CNNConfig, epochs: int, k: int, dev: torch.device) -> float:
    """Seconds for ``epochs`` of train_epochs with K workers (threads) on a memory store."""
    store = MemoryStore.from_url(f"memory://bench-{uuid.uuid4().hex}")
    errors: list[BaseException] = []

    def work(rank: int) -> None:
        try:
            configure_torch(threads=max(1, usable_cores() // k))  # in the worker thread, as the engine does
            model = build_model(cfg.model, seed=cfg.seed).to(dev)
            comm = Collective(store, "bench", rank, k, timeout_s=600) if k > 1 else None
            train_epochs(model, make_optimizer(model, cfg), x, y, cfg, epochs, comm, device=dev)
        except BaseException as exc:
            errors.append(exc)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=work, args=(r,)) for r in range(k)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    configure_torch()
    if errors:
        raise errors[0]
    return seconds


def engine_run(data: Path, cfg: CNNConfig, workers: int, home: Path) -> tuple[float, list[Any], Any]:
    """Wall seconds, the ledger's epoch rows and the RunResult of a Driver run."""
    from lambdanet.engine.driver import Driver, TrainRequest
    from lambdanet.services import Services
    from lambdanet.settings import Settings

    os.environ["LAMBDANET_HOME"] = str(home)
    services = Services.open(Settings.from_env(notifier_url="console://"))
    try:
        req = TrainRequest(data=str(data), config=cfg, model_name="bench-cnn", workers=workers,
                           strategy="data", store_url=f"memory://bench-{uuid.uuid4().hex}",
                           executor="local")
        t0 = time.perf_counter()
        result = Driver(services).train(req)
        return time.perf_counter() - t0, services.ledger.epochs(result.run_id), result
    finally:
        services.close()


def write_subset(folder: Path, x: np.ndarray, y: np.ndarray, xt: np.ndarray, yt: np.ndarray) -> Path:
    path = folder / "cifar10_train.npz"
    np.savez(path, x=x, y=y)
    np.savez(folder / "cifar10_test.npz", x=xt, y=yt)
    return path


def throughput(args: argparse.Namespace, d: ImageData, dev: torch.device, tmp: Path) -> None:
    n = min(args.bench_images, len(d.y_train))
    xb, yb = d.x_train[:n], d.y_train[:n]
    cfg = CNNConfig(model="lenet", epochs=args.bench_epochs, batch_size=100, augment=args.augment)
    images = n * args.bench_epochs
    plain_loop(xb[:500], yb[:500], cfg, 1, dev)  # warm-up (allocator, oneDNN kernels)
    timers = {
        "plain PyTorch loop": lambda: plain_loop(xb, yb, cfg, args.bench_epochs, dev),
        "lambdanet K=1 (train_epochs, no collective)": lambda: lambdanet_k(xb, yb, cfg, args.bench_epochs, 1, dev),
        "lambdanet K=2 (train_epochs, 2 threads, memory-store all-reduce)":
            lambda: lambdanet_k(xb, yb, cfg, args.bench_epochs, 2, dev),
    }
    runs: dict[str, list[float]] = {name: [] for name in timers}
    for _ in range(args.repeats):  # interleaved, median of N: robust to a noisy machine
        for name, fn in timers.items():
            runs[name].append(fn())
    rows: list[tuple[str, float]] = [(name, images / float(np.median(s))) for name, s in runs.items()]
    if not args.skip_engine:
        data_path = write_subset(tmp, xb, yb, d.x_test[:1000], d.y_test[:1000])
        for k in (1, 2):
            wall, epoch_rows, _ = engine_run(data_path, cfg, k, tmp / f"home-k{k}")
            rows.append((f"engine K={k} epochs (Driver, local executor, memory store; +1k test eval)",
                         images / sum(r.seconds for r in epoch_rows)))
            rows.append((f"engine K={k} wall (+ data upload, checkpoints, final eval, registry)", images / wall))
    base = rows[0][1]
    print(f"\nthroughput: LeNet, Adam, batch 100, {n} images x {args.bench_epochs} epoch(s), "
          f"augment={args.augment}, median of {args.repeats} (engine rows: 1 run)")
    for name, ips in rows:
        print(f"  {name:<80} {ips:8.0f} img/s  {ips / base:5.2f}x")



def accuracy(args: argparse.Namespace, d: ImageData, dev: torch.device, tmp: Path) -> None:
    cfg = CNNConfig(model="lenet", epochs=args.epochs, batch_size=100, augment=args.augment)
    t0 = time.perf_counter()
    if args.skip_engine:
        configure_torch()
        model = build_model("lenet", seed=0).to(dev)
        out = train_epochs(model, make_optimizer(model, cfg), d.x_train, d.y_train, cfg, args.epochs,
                           device=dev, test=(d.x_test, d.y_test),
                           on_epoch=lambda s: print(f"  epoch {s.epoch}: loss {s.loss:.4f} "
                                                    f"test {s.test_accuracy:.4f} ({s.seconds:.1f} s)"))
        acc = out.epochs[-1].test_accuracy
    else:
        path = args.data / "cifar10_train.npz" if args.limit is None else write_subset(
            tmp, d.x_train, d.y_train, d.x_test, d.y_test)
        _, epoch_rows, result = engine_run(path, cfg, 1, tmp / "home-acc")
        for r in epoch_rows:
            extra = {k: round(v, 4) for k, v in r.extra.items() if k in ("test_accuracy", "train_accuracy")}
            print(f"  epoch {r.epoch}: loss {r.cost:.4f} {extra} ({r.seconds:.1f} s)")
        acc = result.test_accuracy
    secs = time.perf_counter() - t0
    print(f"\naccuracy: LeNet, {args.epochs} epochs on {len(d.y_train)} images: test accuracy {acc:.4f} "
          f"on {len(d.y_test)} test images ({secs:.0f} s, {secs / args.epochs:.1f} s/epoch; JPEG copy of "
          f"CIFAR-10, ~2-3 % below the original)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=10, help="epochs of the accuracy run (default 10)")
    ap.add_argument("--limit", type=int, default=None, help="training images of the accuracy run (default all)")
    ap.add_argument("--bench-images", type=int, default=10_000, help="training images per throughput epoch")
    ap.add_argument("--bench-epochs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="throughput repeats (median of N, interleaved)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda")
    ap.add_argument("--augment", action="store_true", help="random crop + flip in every run")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-engine", action="store_true", help="no Driver runs (loop-level numbers only)")
    ap.add_argument("--data", type=Path, default=CIFAR)
    args = ap.parse_args(argv)

    dev = resolve_device(args.device)
    configure_torch()
    t0 = time.perf_counter()
    d = load_cifar10(args.data, limit_train=args.limit, seed=0)
    print(f"data: {len(d.y_train)} train / {len(d.y_test)} test images from {args.data} "
          f"({time.perf_counter() - t0:.1f} s to load); device {dev}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}")

    tmp = Path(tempfile.mkdtemp(prefix="lambdanet-bench-cnn-"))
    try:
        if not args.skip_throughput:
            throughput(args, d, dev, tmp)
        if not args.skip_accuracy:
            accuracy(args, d, dev, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
