"""Benchmark: communication-efficient ``data`` training — store bytes per epoch and final accuracy
for ``sync_every`` H = 1, 4, 8, 16 and each ``compress`` (none, fp16, bf16), K = 4 workers, beside
the reference (H = 1, no compression: the all-reduced gradient of every step) and their ratio;
then the wall time of K = 4 workers as processes on a real Redis against K = 1, for the best
setting (the fewest bytes with accuracy within ``--tolerance`` points of the reference).

    python benchmarks/scale.py --part mlp    [--epochs 1000]              # itsacat MLP on cat/non-cat
    python benchmarks/scale.py --part cifar  [--epochs 3 --limit 10000]   # examples/cifar10/fast.json
    python benchmarks/scale.py --part mlp --wall-only 16:bf16             # only the K = 4 / K = 1 wall times
    python benchmarks/scale.py --part cifar --settings 4:none,8:none,16:bf16   # a subset of the settings

Store bytes are the run's ``store_bytes`` (the engine's accounting: every byte put into and read
from the tensor store — the collectives, the in-round decisions and each round's end-of-round
shards), divided by the epochs run. The MLP is examples/itsacat/parameters.json with the early
stop off (every setting runs the same epochs); its test set has 50 images, so one image is 2
points of test accuracy — the train accuracy (209 images) is printed too. The CIFAR part trains
fast.json on the first ``--limit`` shuffled training images (``limit_train``) and scores
``--limit-test`` test images. Thread variables are left as they are.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = REPO.parent / "shared" / "datasets"
CATS = SHARED / "catvnoncat" / "datasets.h5"
CIFAR = SHARED / "cifar10" / "cifar10_train.npz"
SETTINGS = [(h, c) for c in ("none", "fp16", "bf16") for h in (1, 4, 8, 16)]


def settings(text: str) -> list[tuple[int, str]]:
    """``H:COMPRESS,…`` (``--settings``) as (H, compress) pairs, the reference H = 1 none first;
    empty: every H in 1, 4, 8, 16 with every compression."""
    if not text:
        return SETTINGS
    pairs = [(int(h), c or "none") for h, _, c in (item.partition(":") for item in text.split(",") if item)]
    return [(1, "none")] + [p for p in pairs if p != (1, "none")]


def base_config(part: str, args: argparse.Namespace) -> dict[str, Any]:
    if part == "mlp":
        cfg = json.loads((REPO / "examples" / "itsacat" / "parameters.json").read_text())
        return {**cfg, "epochs": args.epochs, "threshold": 0.0, "dtype": "float32", "report_every": 10**9}
    cfg = json.loads((REPO / "examples" / "cifar10" / "fast.json").read_text())
    return {**cfg, "epochs": args.epochs, "limit_train": args.limit, "limit_test": args.limit_test}


def train(part: str, args: argparse.Namespace, H: int, compress: str, workers: int, store: str = "memory://",
          executor: str = "local") -> dict[str, Any]:
    from lambdanet.config import parse_config
    from lambdanet.engine.driver import Driver, TrainRequest
    from lambdanet.services import Services
    from lambdanet.settings import Settings

    config = parse_config({**base_config(part, args), "sync_every": H, "compress": compress})
    services = Services.open(Settings.from_env(notifier_url="console://"))
    try:
        t0 = time.perf_counter()
        res = Driver(services).train(TrainRequest(
            data=str(CATS if part == "mlp" else CIFAR), config=config, workers=workers, strategy="data",
            store_url=store, executor=executor, model_name=f"scale-{part}-{H}-{compress}-{workers}",
            collective_timeout_s=600))
        wall = time.perf_counter() - t0
    finally:
        services.close()
    assert res.status == "completed", res.status
    return {"H": H, "compress": compress, "workers": workers, "bytes_per_epoch": res.store_bytes / res.epochs_run,
            "train": 100 * (res.train_accuracy or 0.0), "test": 100 * (res.test_accuracy or 0.0), "wall_s": wall,
            "final_cost": res.final_cost}


class Redis:
    """A private redis-server on a free loopback port (no persistence), stopped on exit."""

    def __enter__(self) -> str:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.dir = tempfile.mkdtemp(prefix="scale-redis-")
        self.proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(self.port),
                                      "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", self.dir],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        return f"redis://127.0.0.1:{self.port}/0"

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def run_part(part: str, args: argparse.Namespace) -> None:
    print(f"== {part}: K = {args.workers}, {args.epochs} epochs"
          + (f", {args.limit} training / {args.limit_test} test images" if part == "cifar" else ""), flush=True)
    if args.wall_only:
        h_text, _, compress = args.wall_only.partition(":")
        return wall_ratio(part, args, {"H": int(h_text), "compress": compress or "none"})
    rows = []
    for H, compress in settings(args.settings):
        row = train(part, args, H, compress, args.workers)
        rows.append(row)
        print(f"   ran H={H:<2} {compress:<4}  {row['wall_s']:.1f} s, {row['bytes_per_epoch']:,.0f} bytes/epoch, "
              f"train {row['train']:.2f} %, test {row['test']:.2f} %", file=sys.stderr, flush=True)
    ref = rows[0]
    print(f"{'H':>3} {'compress':>8} {'bytes/epoch':>14} {'reference':>14} {'ratio':>7} {'train %':>8} "
          f"{'test %':>7} {'Δtest':>6} {'ref test':>8}")
    for r in rows:
        print(f"{r['H']:>3} {r['compress']:>8} {r['bytes_per_epoch']:>14,.0f} {ref['bytes_per_epoch']:>14,.0f} "
              f"{ref['bytes_per_epoch'] / r['bytes_per_epoch']:>6.1f}x {r['train']:>8.2f} {r['test']:>7.2f} "
              f"{r['test'] - ref['test']:>+6.2f} {ref['test']:>8.2f}")
    ok = [r for r in rows if r["test"] >= ref["test"] - args.tolerance]  # higher is not a miss
    best = min(ok, key=lambda r: r["bytes_per_epoch"])
    print(f"best at most {args.tolerance} points below H = 1: H = {best['H']}, compress = {best['compress']}: "
          f"{ref['bytes_per_epoch'] / best['bytes_per_epoch']:.1f}x fewer bytes per epoch, "
          f"test {best['test']:.2f} % vs {ref['test']:.2f} %", flush=True)
    if not args.no_redis:
        wall_ratio(part, args, best)


def wall_ratio(part: str, args: argparse.Namespace, best: dict[str, Any]) -> None:
    """K = 4 processes on a real Redis with ``best``'s setting and with H = 1, against K = 1."""
    with Redis() as url:
        one = train(part, args, best["H"], best["compress"], 1)
        ref4 = train(part, args, 1, "none", args.workers, store=url, executor="process")
        four = train(part, args, best["H"], best["compress"], args.workers, store=url, executor="process")
    print(f"wall time, Redis + processes, K = {args.workers} / K = 1 (memory, in process):")
    print(f"   H={best['H']} {best['compress']}: {four['wall_s']:.1f} s / {one['wall_s']:.1f} s = "
          f"{four['wall_s'] / one['wall_s']:.2f}  (reference H=1 none: {ref4['wall_s']:.1f} s / {one['wall_s']:.1f} s"
          f" = {ref4['wall_s'] / one['wall_s']:.2f}; bytes/epoch on Redis {four['bytes_per_epoch']:,.0f} vs "
          f"{ref4['bytes_per_epoch']:,.0f})", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--part", choices=("mlp", "cifar", "all"), default="mlp")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=None, help="MLP: 1000; CIFAR: 3")
    ap.add_argument("--limit", type=int, default=10_000, help="CIFAR training images (limit_train)")
    ap.add_argument("--limit-test", type=int, default=2_000, help="CIFAR test images (limit_test)")
    ap.add_argument("--tolerance", type=float, default=0.5, help="test accuracy points below H = 1 allowed for 'best'")
    ap.add_argument("--settings", metavar="H:COMPRESS,...", default="",
                    help="only these settings (besides H = 1 none), e.g. 4:none,8:none,16:bf16; default: all 12")
    ap.add_argument("--no-redis", action="store_true", help="skip the Redis/process wall-time runs")
    ap.add_argument("--wall-only", metavar="H:COMPRESS", default="",
                    help="only the Redis/process wall-time runs, for this setting (e.g. 16:bf16): the sweep's bytes "
                         "and accuracies do not depend on the machine's load, its wall times do")
    args = ap.parse_args(argv)
    os.environ.setdefault("LAMBDANET_HOME", tempfile.mkdtemp(prefix="scale-home-"))
    for part in (("mlp", "cifar") if args.part == "all" else (args.part,)):
        run = argparse.Namespace(**vars(args))
        run.epochs = args.epochs or (1000 if part == "mlp" else 3)
        run_part(part, run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
