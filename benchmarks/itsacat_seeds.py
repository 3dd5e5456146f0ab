"""The itsacat acceptance run: ``lambdanet train`` full batch, 2500 epochs, seeds 1..5.

Runs exactly the README's command line for each seed (through the CLI entry point, a fresh
LAMBDANET_HOME each), then prints train/test accuracy per seed, the median test accuracy, and
whether the targets hold (train ≥ 0.95 for every seed, median test ≥ 0.74). Also runs once with
``--params`` alone (mini-batch 64, threshold 0.0019) and prints why it stopped.

    python benchmarks/itsacat_seeds.py [--seeds 1 2 3 4 5] [--epochs 2500]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "datasets" / "catvnoncat" / "datasets.h5"
PARAMS = REPO / "examples" / "itsacat" / "parameters.json"


def train(home: Path, *extra: str) -> dict:
    env = {**os.environ, "LAMBDANET_HOME": str(home)}
    res = subprocess.run([sys.executable, "-m", "lambdanet", "train", str(DATA), "--params", str(PARAMS), *extra,
                          "--json"], capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        raise SystemExit(f"lambdanet train failed: {res.stderr.strip()}")
    return json.loads(res.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--epochs", type=int, default=2500)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            out = train(Path(tmp) / f"s{seed}", "--batch-size", "209", "--epochs", str(args.epochs),
                        "--seed", str(seed))
            rows.append((seed, out))
            print(f"seed {seed}: cost {out['final_cost']:.4f}  train {out['train_accuracy']:.3f}  "
                  f"test {out['test_accuracy']:.3f}  {out['wall_seconds']:.1f} s", flush=True)
        median = statistics.median(o["test_accuracy"] for _, o in rows)
        all_train = all(o["train_accuracy"] >= 0.95 for _, o in rows)
        print(f"median test accuracy {median:.3f} (target >= 0.74: {'met' if median >= 0.74 else 'NOT met'}); "
              f"train >= 0.95 for every seed: {'yes' if all_train else 'NO'}")
        out = train(Path(tmp) / "minibatch")
        print(f"--params alone (mini-batch 64, threshold 0.0019): {out['epochs_run']} epochs, stopped by "
              f"{out['stop_reason']}, cost {out['final_cost']:.4f}, train {out['train_accuracy']:.3f}, "
              f"test {out['test_accuracy']:.3f}, {out['wall_seconds']:.1f} s")


if __name__ == "__main__":
    main()
