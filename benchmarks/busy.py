"""The main job on a busy machine: ``lambdanet train`` beside one competing CPU-bound program,
against its quiet time, in the default environment (no thread variables set).

    python benchmarks/busy.py                  # 1000 epochs, 5 interleaved repeats (about 6 minutes)
    python benchmarks/busy.py --epochs 3799 --repeats 5

Each run is the README's main job (``examples/itsacat/parameters.json``, batch 64) cut to
``--epochs`` epochs, as a child process ``python -m lambdanet train … --json``, timed whole. Four
configurations, interleaved in every repeat so the machine's drift reaches them alike:

* quiet, default — what a user gets now (each round's threads = the free cores, see
  :mod:`lambdanet.cpu_budget`);
* quiet, every core — the policy before (``--cpu-threads`` = the cores: what the default was);
* busy, default — beside one ``while True: pass`` program started just before;
* busy, every core — the same, with the old policy (why the new one exists).

Targets: busy default ≤ 1.3× quiet default; quiet default ≤ 1.05× quiet every-core. Rows are
medians of ``--repeats``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "datasets" / "catvnoncat" / "datasets.h5"
PARAMS = REPO / "examples" / "itsacat" / "parameters.json"


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def one_run(home: Path, epochs: int, busy: bool, every_core: bool) -> tuple[float, dict[str, object]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMBDANET_")}
    env.update(LAMBDANET_HOME=str(home), LAMBDANET_NOTIFIER="console://stderr")
    args = [sys.executable, "-m", "lambdanet", "train", str(DATA), "--params", str(PARAMS), "--epochs", str(epochs),
            "--json"]
    if every_core:
        args += ["--cpu-threads", str(available_cores())]
    competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        if competitor is not None:
            time.sleep(0.5)  # running at full speed before the job starts
        t0 = time.perf_counter()
        done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=1800)
        wall = time.perf_counter() - t0
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    shown = subprocess.run([sys.executable, "-m", "lambdanet", "runs", "show", result["run_id"], "--json"],
                           capture_output=True, text=True, env=env, timeout=120)
    run = json.loads(shown.stdout.strip().splitlines()[-1])["run"]
    result["blas_threads"] = [w.get("blas") for w in run["metrics"].get("worker_threads") or []]
    return wall, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    configs = [("quiet, default", False, False), ("quiet, every core", False, True),
               ("busy, default", True, False), ("busy, every core", True, True)]
    walls: dict[str, list[float]] = {name: [] for name, _, _ in configs}
    with tempfile.TemporaryDirectory(prefix="lambdanet-bench-busy-") as tmp:
        for rep in range(args.repeats):
            for name, busy, every_core in configs:
                wall, result = one_run(Path(tmp) / "home", args.epochs, busy, every_core)
                walls[name].append(wall)
                print(f"rep {rep + 1}: {name}: {wall:.2f} s, BLAS threads {result['blas_threads']} "
                      f"(final cost {result['final_cost']})", flush=True)
    med = {name: statistics.median(w) for name, w in walls.items()}
    busy_ratio = med["busy, default"] / med["quiet, default"]
    quiet_ratio = med["quiet, default"] / med["quiet, every core"]
    thread_vars = {v: os.environ[v] for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS") if v in os.environ}
    print()
    print(f"main job, {args.epochs} epochs, whole `lambdanet train` process, median of {args.repeats}; "
          f"{available_cores()} cores, thread variables: {thread_vars or 'none set'}")
    print("| configuration | wall s (median) | range |")
    print("| --- | ---: | --- |")
    for name, w in walls.items():
        print(f"| {name} | {med[name]:.2f} | {min(w):.2f} … {max(w):.2f} |")
    print(f"busy default / quiet default: {busy_ratio:.2f}x "
          f"(target <= 1.3x: {'met' if busy_ratio <= 1.3 else 'missed'})")
    print(f"quiet default / quiet every core: {quiet_ratio:.2f}x "
          f"(target <= 1.05x: {'met' if quiet_ratio <= 1.05 else 'missed'})")
    print(json.dumps({"busy": {"walls": walls, "median": med, "busy_ratio": busy_ratio, "quiet_ratio": quiet_ratio}}))


if __name__ == "__main__":
    main()
