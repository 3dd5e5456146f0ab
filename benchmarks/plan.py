"""Validation of ``lambdanet plan``: predicted against measured wall time of real runs.

Usage::

    python benchmarks/plan.py --mlp-only          # the cat/non-cat MLP rows (a few minutes)
    python benchmarks/plan.py                     # + the fast CIFAR-10 net, 1 epoch on a subset
    python benchmarks/plan.py --mlp-only --workers 1 2 --executors local
    python benchmarks/plan.py --models cifar-fast     # only the CIFAR-10 rows
    python benchmarks/plan.py --what-if           # docs/plan.md's what-if tables (plan's arithmetic only)

For every model x K in (1, 2, 4) x (executor, store) in (local, memory://), (local, redis),
(process, redis), (lithops-localhost, redis) it runs ``lambdanet plan … --target local --json``
(calibration included: a fresh LAMBDANET_HOME per model) and then ``lambdanet train`` with the
same flags, and prints one JSON line per row, then a markdown table for docs/plan.md: predicted
and measured wall seconds (the run's own ``wall_seconds``), their ratio, predicted and measured
store bytes. It starts its own ``redis-server`` on a free loopback port (needs it on PATH).
Figures taken while other programs load the machine are not figures: run it on a quiet one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lithops_row import start_redis  # benchmarks/ is not a package: its folder is on sys.path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
MLP = {"epochs": 300, "layers": 4, "activations": {"layer1": "relu", "layer2": "relu", "layer3": "relu",
                                                   "layer4": "sigmoid"},
       "neurons": {"layer1": 20, "layer2": 7, "layer3": 5, "layer4": 1}, "learning_rate": 0.0075,
       "batch_size": 64, "threshold": 0.0, "report_every": 10**6}
MODELS: dict[str, tuple[Path, dict[str, Any], str]] = {
    "mlp": (SHARED / "catvnoncat" / "datasets.h5", MLP, "data"),
    # the fast CIFAR-10 recipe, 1 epoch on a 5,000-image subset (do not run it beside other work)
    "cifar-fast": (SHARED / "cifar10" / "cifar10_train.npz",
                   {**json.loads((ROOT / "examples" / "cifar10" / "fast.json").read_text()), "epochs": 1,
                    "limit_train": 5000, "limit_test": 1000}, "data"),
}
EXECUTORS = {"local": "local", "process": "process", "lithops": "lithops://localhost"}


def cli(home: Path, *args: str) -> dict[str, Any]:
    env = {**os.environ, "LAMBDANET_HOME": str(home), "PYTHONPATH": str(ROOT / "src")}
    res = subprocess.run([sys.executable, "-m", "lambdanet", *args], capture_output=True, text=True, env=env,
                         cwd=home, timeout=3600)
    if res.returncode != 0:
        raise RuntimeError(f"lambdanet {args[0]} failed: {res.stderr.strip()[-500:]}")
    return dict(json.loads(res.stdout.splitlines()[-1]))


def row(home: Path, model: str, workers: int, executor: str, store: str) -> dict[str, Any]:
    data, config, strategy = MODELS[model]
    params = home / f"{model}.json"
    params.write_text(json.dumps(config))
    flags = [str(data), "-p", str(params), "-k", str(workers), "--strategy", strategy, "--store", store,
             "--executor", EXECUTORS[executor], "--json"]
    t0 = time.perf_counter()
    plan = cli(home, "plan", *flags, "--target", "local")
    plan_s = time.perf_counter() - t0
    run = cli(home, "train", *flags)
    return {
        "model": model, "workers": workers, "executor": executor, "store": store.split(":", 1)[0],
        "predicted_s": plan["wall_seconds"], "measured_s": run["wall_seconds"],
        "ratio": round(plan["wall_seconds"] / run["wall_seconds"], 3),
        "predicted_bytes": plan["bytes"], "measured_bytes": run["store_bytes"],
        "predicted_rounds": plan["rounds"], "measured_rounds": run["rounds"],
        "plan_s": round(plan_s, 2), "breakdown": plan["breakdown"],
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | K | executor | store | predicted s | measured s | predicted / measured | "
             "predicted bytes | measured bytes |", "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['model']} | {r['workers']} | {r['executor']} | {r['store']} | {r['predicted_s']:.2f} | "
              f"{r['measured_s']:.2f} | {r['ratio']:.2f} | {r['predicted_bytes']:,} | {r['measured_bytes']:,} |"
              for r in rows]
    return "\n".join(lines)


# ---- what-if: the CIFAR-10 recipes on AWS Lambda, beside one g4dn.xlarge --------------------------
G4DN_USD_PER_HOUR = 0.526  # g4dn.xlarge on demand, us-east-1
G4DN_BOOT_S = 180.0  # assumption: instance start, image pull, data copy, CUDA start-up
# T4 training throughput (images/s, fp16 autocast), assumptions: the fast net is airbench94's body,
# which trains ~9.9 epochs of CIFAR-10 in 3.83 s on an A100 (arXiv 2404.00498: ~130,000 images/s);
# a T4 (65 fp16 tensor TFLOPS at 70 W) taken as 1/8 of an A100. VGG11-bn: a T4 taken at 5,000
# images/s (ResNet-18 on CIFAR-10 trains at ~2,000-2,500 images/s on a T4 with AMP, and VGG11-bn
# has ~1/3.6 of its multiply-adds).
T4_IMAGES_S = {"fast": 16_000.0, "vgg11_bn": 5_000.0}
WHAT_IF_K = (1, 2, 4, 8, 16, 32, 64)
WHAT_IF_MEMORY = (1769, 3538, 10240)
WHAT_IF_H = (1, 2, 4, 8, 16, 32, 64)


def what_if(recipe: str) -> str:
    """The markdown what-if table of one recipe (examples/cifar10/<recipe>.json, its own epochs)."""
    from lambdanet.config import load_config
    from lambdanet.plan.calibrate import calibrate, describe
    from lambdanet.plan.model import RunShape, predict

    data = SHARED / "cifar10" / "cifar10_train.npz"
    config = load_config(ROOT / "examples" / "cifar10" / f"{recipe}.json")
    work, dataset = describe(str(data), config, "data", 1)
    measured = calibrate(str(data), config, dataset, work, RunShape(workers=1, target="lambda"), "memory://")
    rows = ["| K | memory MB | H = 1: wall s | $ x86 | $ arm64 | best H | wall s | $ x86 | $ arm64 |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    best_wall: tuple[float, str] = (float("inf"), "")
    best_usd: tuple[float, str] = (float("inf"), "")
    for k in WHAT_IF_K:
        for mb in WHAT_IF_MEMORY:
            def plan(h: int, arch: str, k: int = k, mb: int = mb) -> Any:
                return predict(work, RunShape(workers=k, sync_every=h, target="lambda", memory_mb=mb,
                                              arch=arch), measured)  # type: ignore[arg-type]
            one = plan(1, "x86_64")
            h = min(WHAT_IF_H, key=lambda h: plan(h, "x86_64").wall_seconds)
            best = plan(h, "x86_64")
            rows.append(f"| {k} | {mb:,} | {one.wall_seconds:,.0f} | {one.usd:.3f} | {plan(1, 'arm64').usd:.3f} | "
                        f"{h} | {best.wall_seconds:,.0f} | {best.usd:.3f} | {plan(h, 'arm64').usd:.3f} |")
            where = f"K = {k}, {mb:,} MB, H = {h}"
            best_wall = min(best_wall, (best.wall_seconds, where))
            best_usd = min(best_usd, (plan(h, "arm64").usd, where + ", arm64"))
    images = work.epochs * work.train_samples
    t4_s = G4DN_BOOT_S + images / T4_IMAGES_S[config.model]  # type: ignore[union-attr]
    rows += ["", f"Fastest on Lambda: {best_wall[1]} ({best_wall[0]:,.0f} s); cheapest: {best_usd[1]} "
             f"(${best_usd[0]:.3f}). One g4dn.xlarge (T4): {t4_s:,.0f} s with boot, "
             f"${t4_s / 3600 * G4DN_USD_PER_HOUR:.3f}. Calibrated on {measured.cpu}: "
             f"{measured.sample_seconds_1 * 1000:.2f} ms per training image on one thread."]
    return f"**{recipe}** ({work.epochs} epochs x {work.train_samples:,} images, {work.params:,} parameters)\n\n" \
        + "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mlp-only", action="store_true", help="only the cat/non-cat MLP rows")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS), help="the models' rows")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--executors", nargs="+", default=["local", "process", "lithops"], choices=list(EXECUTORS))
    parser.add_argument("--what-if", action="store_true",
                        help="print docs/plan.md's what-if tables (fast and vgg11_bn on Lambda) and exit")
    args = parser.parse_args()
    if args.what_if:
        print("\n\n".join(what_if(recipe) for recipe in ("fast", "vgg11_bn")))
        return
    models = ["mlp"] if args.mlp_only else args.models
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="lambdanet-plan-bench-") as tmp:
        redis_proc, redis_url = start_redis(Path(tmp))
        try:
            for model in models:
                home = Path(tmp) / model  # one calibration cache per model
                home.mkdir()
                for executor in args.executors:
                    for store in (["memory://", redis_url] if executor == "local" else [redis_url]):
                        for k in args.workers:
                            r = row(home, model, k, executor, store)
                            print(json.dumps(r), flush=True)
                            rows.append(r)
        finally:
            redis_proc.kill()
            redis_proc.wait()
    print(table(rows))


if __name__ == "__main__":
    main()
