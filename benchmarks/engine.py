"""The engine benchmark: lambdanet's serverless engine beside the single-process network and an
itsacat-style baseline, in one run.

    python benchmarks/engine.py                      # 2500 epochs (the itsacat full-batch run)
    python benchmarks/engine.py --epochs 300         # quicker
    python benchmarks/engine.py --baseline-epochs 1  # shorter itsacat-style baseline

It starts its own ``redis-server`` on a free loopback port and uses a temporary LAMBDANET_HOME.
Rows (float32, full batch, itsacat's [12288, 20, 7, 5, 1] network, lr 0.0075, seed 1):

* single process — :func:`lambdanet.nn.reference.train` (the training loop only);
* ``neuron`` / ``data`` with K = 1, 2, 4 on memory/local (threads) and K = 2, 4 on redis/process
  (one OS process per worker) — the whole :class:`Driver` wall time (data upload, rounds,
  checkpoints, ledger, accuracies, registry), its ratio to single process, milliseconds of
  synchronisation per epoch (time inside collectives, slowest worker) and store bytes per epoch;
* itsacat-style — one worker call per neuron per layer per step through the process executor and
  Redis (:mod:`lambdanet.engine.itsacat_baseline`), a few epochs, seconds per epoch; and the
  per-epoch speed-up of ``neuron`` K=4 redis/process over it.

BLAS runs with one thread per worker (``OPENBLAS_NUM_THREADS=1`` unless set), as a 1-vCPU
function would; the single-process row uses the same setting.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "datasets" / "catvnoncat" / "datasets.h5"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from lithops_row import round_start_overhead, start_redis  # noqa: E402  (benchmarks/ is not a package)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=2500)
    ap.add_argument("--baseline-epochs", type=int, default=2)
    ap.add_argument("--workers", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--no-lithops", action="store_true", help="skip the Lithops-localhost row")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="lambdanet-bench-engine-"))
    os.environ["LAMBDANET_HOME"] = str(tmp / "home")
    for var in ("LAMBDANET_LEDGER", "LAMBDANET_OBJECTS", "LAMBDANET_NOTIFIER", "LAMBDANET_STORE"):
        os.environ.pop(var, None)
    os.environ["LAMBDANET_NOTIFIER"] = "console://stdout"
    redis_proc, redis_url = start_redis(tmp)

    from lambdanet import adapters
    from lambdanet.config import itsacat_defaults, parse_config
    from lambdanet.data.readers import load_dataset, to_matrix, to_targets
    from lambdanet.engine.driver import Driver, TrainRequest
    from lambdanet.engine.itsacat_baseline import run_baseline
    from lambdanet.nn import reference
    from lambdanet.services import Services
    from lambdanet.settings import Settings

    class Quiet:  # no notifications in the table's output
        url = "quiet://"

        def notify(self, subject: str, message: str, **fields: object) -> None:
            pass

    cfg = parse_config({**itsacat_defaults(), "epochs": args.epochs, "batch_size": 209, "threshold": 0.0,
                        "dtype": "float32", "seed": 1, "report_every": 10**9})
    ds = load_dataset(DATA)
    X = to_matrix(ds.x_train, "float32")
    Y = to_targets(ds.y_train, 2, "sigmoid", "float32")
    services = Services.open(Settings.from_env())
    services.notifier = Quiet()  # type: ignore[assignment]
    rows: list[dict[str, object]] = []
    try:
        t = time.perf_counter()
        ref = reference.train(cfg, X, Y)
        single = time.perf_counter() - t
        rows.append({"run": "single process (nn.reference)", "seconds": single, "ratio": 1.0,
                     "sync_ms_epoch": 0.0, "bytes_epoch": 0, "final_cost": ref.costs[-1]})
        print(f"single process: {single:.2f} s, cost {ref.costs[-1]:.6f}", flush=True)
        plan = [("neuron", 1, "memory://", "local")]
        plan += [(s, k, "memory://", "local") for k in args.workers for s in ("neuron", "data")]
        plan += [(s, k, redis_url, "process") for k in args.workers for s in ("neuron", "data")]
        per_epoch_neuron = None
        for strategy, k, store, executor in plan:
            t = time.perf_counter()
            res = Driver(services).train(TrainRequest(data=str(DATA), config=cfg, workers=k, strategy=strategy,
                                                      store_url=store, executor=executor, model_name="bench"))
            wall = time.perf_counter() - t
            metrics = services.ledger.get_run(res.run_id).metrics
            where = "memory/local" if executor == "local" else "redis/process"
            row = {"run": f"{strategy} K={k} {where}", "seconds": wall, "ratio": wall / single,
                   "sync_ms_epoch": 1000 * float(metrics.get("sync_seconds", 0.0)) / res.epochs_run,
                   "bytes_epoch": res.store_bytes // max(1, res.epochs_run), "final_cost": res.final_cost,
                   "rounds": res.rounds, "worker_calls": res.worker_calls,
                   "estimated_cost_usd": res.estimated_cost_usd}
            rows.append(row)
            print(f"{row['run']}: {wall:.2f} s ({wall / single:.2f}x), cost {res.final_cost:.6f}", flush=True)
            if strategy == "neuron" and executor == "process" and k == max(args.workers):
                per_epoch_neuron = wall / res.epochs_run
        lithops_start = None
        if not args.no_lithops:  # the same run as K=2 neuron redis/process, through Lithops' localhost backend
            lithops_start = round_start_overhead(workers=2, rounds=3, version=1)["round_start_s"]
            t = time.perf_counter()
            res = Driver(services).train(TrainRequest(data=str(DATA), config=cfg, workers=2, strategy="neuron",
                                                      store_url=redis_url, executor="lithops://localhost?version=1",
                                                      model_name="bench"))
            wall = time.perf_counter() - t
            metrics = services.ledger.get_run(res.run_id).metrics
            rows.append({"run": "neuron K=2 redis/lithops-localhost", "seconds": wall, "ratio": wall / single,
                         "sync_ms_epoch": 1000 * float(metrics.get("sync_seconds", 0.0)) / res.epochs_run,
                         "bytes_epoch": res.store_bytes // max(1, res.epochs_run), "final_cost": res.final_cost,
                         "rounds": res.rounds, "round_start_s": lithops_start})
            print(f"neuron K=2 redis/lithops-localhost: {wall:.2f} s ({wall / single:.2f}x), {res.rounds} rounds, "
                  f"round start {lithops_start:.2f} s", flush=True)
        base_cfg = parse_config({**cfg.model_dump(), "epochs": args.baseline_epochs})
        bl = run_baseline(base_cfg, X, Y, redis_url, adapters.open_executor("process"), args.baseline_epochs)
        bl_epoch = sum(bl["seconds"]) / len(bl["seconds"])
        rows.append({"run": "itsacat-style (1 call/neuron/layer/step, process+redis)", "seconds": sum(bl["seconds"]),
                     "ratio": None, "sync_ms_epoch": None, "bytes_epoch": bl["bytes"] // args.baseline_epochs,
                     "final_cost": bl["costs"][-1], "per_epoch_s": bl_epoch,
                     "calls_per_epoch": bl["calls"] // args.baseline_epochs})
    finally:
        redis_proc.kill()
        redis_proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(f"float32, full batch, itsacat network [12288, 20, 7, 5, 1], {args.epochs} epochs, "
          f"{os.cpu_count()} cores, OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}")
    print("| run | wall s | × single | sync ms/epoch | store bytes/epoch | final cost |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
        sync = "" if r["sync_ms_epoch"] is None else f"{r['sync_ms_epoch']:.2f}"
        print(f"| {r['run']} | {r['seconds']:.2f} | {ratio} | {sync} | {r['bytes_epoch']:,} | "
              f"{r['final_cost']:.6f} |")
    print(f"\nitsacat-style: {bl_epoch:.2f} s per epoch ({bl['calls'] // args.baseline_epochs} calls per epoch, "
          f"{args.baseline_epochs} epochs)")
    if lithops_start is not None:
        print(f"lithops localhost (v1): {lithops_start:.2f} s to start a round of 2 no-op calls")
    if per_epoch_neuron:
        print(f"neuron K={max(args.workers)} redis/process: {1000 * per_epoch_neuron:.2f} ms per epoch "
              f"-> {bl_epoch / per_epoch_neuron:,.0f}x faster per epoch than itsacat-style")
    print(json.dumps({"epochs": args.epochs, "rows": rows}, default=float))


if __name__ == "__main__":
    main()
