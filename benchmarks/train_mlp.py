"""Benchmark: lambdanet's 2500-epoch float32 itsacat run beside a plain numpy loop.

Runs, in one process and on the same data, (1) the deeplearning.ai-style plain numpy loop
(benchmarks/plain_numpy.py, independent of lambdanet) and (2) ``lambdanet train`` through the
driver with embedded defaults (memory store, local executor, SQLite ledger, folder objects,
checkpoints every round, model registered), and prints both wall times and their ratio.

    python benchmarks/train_mlp.py [--epochs 2500] [--repeat 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = REPO.parent / "shared" / "datasets" / "catvnoncat" / "datasets.h5"
sys.path.insert(0, str(HERE))

from plain_numpy import plain_loop  # noqa: E402


def run_lambdanet(epochs: int, home: Path) -> tuple[float, dict]:
    os.environ["LAMBDANET_HOME"] = str(home)
    from lambdanet.config import itsacat_defaults, parse_config
    from lambdanet.engine.driver import Driver, TrainRequest
    from lambdanet.services import Services
    from lambdanet.settings import Settings

    config = parse_config({**itsacat_defaults(), "epochs": epochs, "batch_size": 209, "threshold": 0.0, "seed": 1,
                           "report_every": 10**9})
    services = Services.open(Settings.from_env(notifier_url="console://"))
    t0 = time.perf_counter()
    result = Driver(services).train(TrainRequest(data=str(DATA), config=config, model_name="bench"))
    wall = time.perf_counter() - t0
    services.close()
    return wall, result.to_json()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=2500)
    ap.add_argument("--repeat", type=int, default=1, help="best of N for each side")
    args = ap.parse_args()

    from lambdanet.data.readers import load_dataset, to_matrix, to_targets

    ds = load_dataset(DATA)
    X = to_matrix(ds.x_train, "float32")  # (12288, 209)
    Y = to_targets(ds.y_train, 2, "sigmoid", "float32")  # (1, 209)
    dims = [X.shape[0], 20, 7, 5, 1]

    plain_times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        _, costs = plain_loop(X, Y, dims, 0.0075, args.epochs, 1, "float32")
        plain_times.append(time.perf_counter() - t0)
    ours = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            wall, result = run_lambdanet(args.epochs, Path(tmp) / f"home{i}")
            ours.append(wall)
    plain, mine = min(plain_times), min(ours)
    print(f"itsacat MLP {dims}, float32, full batch (209), lr 0.0075, {args.epochs} epochs, seed 1")
    print(f"{'':28}{'wall s':>10}{'ms/epoch':>10}{'final cost':>12}")
    print(f"{'plain numpy loop':28}{plain:10.2f}{1000 * plain / args.epochs:10.3f}{float(costs[-1]):12.5f}")
    print(f"{'lambdanet train (embedded)':28}{mine:10.2f}{1000 * mine / args.epochs:10.3f}"
          f"{float(result['final_cost']):12.5f}")
    print(f"ratio lambdanet / plain = {mine / plain:.3f}  (target <= 1.15)")
    print(f"lambdanet: train accuracy {result['train_accuracy']:.3f}, test accuracy {result['test_accuracy']:.3f}, "
          f"rounds {result['rounds']}")
    if not np.isclose(float(costs[-1]), float(result["final_cost"]), rtol=1e-3):
        print("WARNING: final costs differ between the two loops")


if __name__ == "__main__":
    main()
