"""The Lithops-localhost row of ``benchmarks/engine.py``: round start overhead and the ratio of
a full itsacat run on Lithops (+ Redis) to the single-process reference trainer.

Usage::

    python benchmarks/lithops_row.py --epochs 20 --workers 2          # prints one JSON line
    from benchmarks.lithops_row import lithops_row; row = lithops_row(epochs=20, workers=2)

``round_start_s``: mean wall seconds of ``executor.run(ping, K specs)`` — K no-op Lithops calls,
i.e. what every round pays before any training (process start, job upload, status polling).
``train_wall_s`` vs ``reference_wall_s``: the same config (itsacat's [12288, 20, 7, 5, 1], batch
64, float32, seed 1) through ``Driver`` with ``executor=lithops`` and a real ``redis-server``,
and through ``lambdanet.nn.reference.train`` in this process; ``ratio`` = train / reference.
Needs ``redis-server`` on PATH unless ``store_url`` is given.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "catvnoncat" / "datasets.h5"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed; pass store_url=redis://…")
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"redis://127.0.0.1:{port}/0"
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def round_start_overhead(workers: int = 2, rounds: int = 5, version: int = 1) -> dict[str, float]:
    """Mean/min wall seconds of one round of ``workers`` no-op Lithops-localhost calls."""
    from lambdanet.executors.lithops import LithopsExecutor, ping

    ex = LithopsExecutor.from_url(f"lithops://localhost?version={version}")
    try:
        ex.run(ping, [{"worker": i} for i in range(workers)], timeout_s=120)  # warm-up (first job)
        walls = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            outcomes = ex.run(ping, [{"worker": i} for i in range(workers)], timeout_s=120)
            walls.append(time.perf_counter() - t0)
            if not all(o.ok for o in outcomes):
                raise RuntimeError(f"ping failed: {[o.error for o in outcomes]}")
    finally:
        ex.close()
    return {"round_start_s": sum(walls) / len(walls), "round_start_min_s": min(walls)}


def lithops_row(epochs: int = 20, workers: int = 2, rounds: int = 5, version: int = 1,
                store_url: str | None = None, data: str | Path = DATA,
                epochs_per_round: int | None = None) -> dict[str, Any]:
    """One benchmark row (a dict) for benchmarks/engine.py; see the module docstring."""
    from lambdanet.config import itsacat_defaults, parse_config
    from lambdanet.data.readers import load_dataset, to_matrix, to_targets
    from lambdanet.engine.driver import Driver, TrainRequest
    from lambdanet.nn import reference
    from lambdanet.services import Services
    from lambdanet.settings import Settings

    config = parse_config({**itsacat_defaults(), "epochs": epochs, "threshold": 0.0, "report_every": 10**6},
                          source="benchmark")
    overhead = round_start_overhead(workers, rounds, version)
    redis_proc = None
    with tempfile.TemporaryDirectory(prefix="lambdanet-bench-") as tmp:
        home = Path(tmp)
        if store_url is None:
            redis_proc, store_url = start_redis(home)
        try:
            settings = Settings(home=home, ledger_url=f"sqlite:///{home / 'ledger.db'}",
                                objects_url=str(home / "objects"), notifier_url="console://",
                                store_url=store_url, executor=f"lithops://localhost?version={version}")
            services = Services.open(settings)
            try:
                t0 = time.perf_counter()
                result = Driver(services).train(TrainRequest(
                    data=str(data), config=config, model_name="bench", workers=workers, strategy="neuron",
                    store_url=store_url, executor=settings.executor, epochs_per_round=epochs_per_round))
                train_wall = time.perf_counter() - t0
            finally:
                services.close()
        finally:
            if redis_proc is not None:
                redis_proc.kill()
                redis_proc.wait()
    ds = load_dataset(data)
    X = to_matrix(ds.x_train, config.dtype)  # (12288, 209)
    Y = to_targets(ds.y_train, len(ds.classes), "sigmoid", config.dtype)  # (1, 209)
    t0 = time.perf_counter()
    ref = reference.train(config, X, Y)
    reference_wall = time.perf_counter() - t0
    return {
        "name": f"lithops-localhost-v{version}", "workers": workers, "epochs": epochs, "rounds": result.rounds,
        **{k: round(v, 4) for k, v in overhead.items()},
        "train_wall_s": round(train_wall, 3), "reference_wall_s": round(reference_wall, 3),
        "ratio": round(train_wall / reference_wall, 1) if reference_wall > 0 else None,
        "final_cost": result.final_cost, "reference_final_cost": ref.costs[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--version", type=int, default=1, choices=(1, 2))
    parser.add_argument("--epochs-per-round", type=int, default=None)
    args = parser.parse_args()
    print(json.dumps(lithops_row(args.epochs, args.workers, args.rounds, args.version,
                                 epochs_per_round=args.epochs_per_round)))


if __name__ == "__main__":
    main()
