"""The engine benchmark: lambdanet's serverless engine beside the single-process network and an
itsacat-style baseline, in one run, in the default environment (no thread variables set).

    python benchmarks/engine.py                      # 1000 epochs (the itsacat full-batch run)
    python benchmarks/engine.py --epochs 300         # quicker
    python benchmarks/engine.py --no-baseline --no-lithops --executors local   # the scaling rows only

It starts its own ``redis-server`` on a free loopback port and uses a temporary LAMBDANET_HOME.
Rows (itsacat's ``examples/itsacat/parameters.json`` network [12288, 20, 7, 5, 1], float32, full
batch (209), lr 0.0075, no early stop, seed 1):

* single process — :func:`lambdanet.nn.reference.train` (the training loop only);
* ``neuron`` / ``data`` with K = 1, 2, 4 on memory/local (threads) and on redis/process (one OS
  process per worker) — the whole :class:`Driver` wall time (data upload, rounds, checkpoints,
  ledger, accuracies, registry), its ratio to K = 1 of the same strategy and executor and to
  single process, the CPU budget the run recorded (threads per worker and its source, see
  :mod:`lambdanet.cpu_budget`) and the BLAS threads its workers saw, milliseconds of
  synchronisation per epoch (time inside collectives, slowest worker) and store bytes per epoch.
  The scaling targets on memory/local — K = 2 ≤ 1.3× and K = 4 ≤ 1.5× of K = 1 — are marked met
  or missed. Each row is the median of ``--repeats`` runs (3), interleaved across K (K = 1, 2,
  4, K = 1, 2, 4, …) so the machine's drift reaches every K alike; the single process too;
* itsacat-style — one worker call per neuron per layer per step through the process executor and
  Redis (:mod:`itsacat_baseline`), a few epochs, seconds per epoch; and the
  per-epoch speed-up of ``neuron`` K=4 redis/process over it.

Cost of one fault (``--fault-cost``; :mod:`fault_cost`): the extra wall time of the whole
``lambdanet train`` process when one of its K = 4 process workers is killed (kill -9) or stopped
(kill -STOP) early and late in a round, median of interleaved pairs::

    python benchmarks/engine.py --fault-cost [--fault-pairs 5] [--fault-epochs 1500]

Handoff overhead (``--handoff``; :mod:`handoff`): a run continued across durable invocations (a
handoff after every ~10-s round) beside one uninterrupted process::

    python benchmarks/engine.py --handoff
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "datasets" / "catvnoncat" / "datasets.h5"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from lithops_row import round_start_overhead, start_redis  # noqa: E402  (benchmarks/ is not a package)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=1000)
    ap.add_argument("--baseline-epochs", type=int, default=2)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--repeats", type=int, default=3,
                    help="runs per row, interleaved across K; each row is the median run")
    ap.add_argument("--strategies", nargs="+", default=["neuron", "data"], choices=["neuron", "data"])
    ap.add_argument("--executors", nargs="+", default=["local", "process"], choices=["local", "process"])
    ap.add_argument("--no-lithops", action="store_true", help="skip the Lithops-localhost row")
    ap.add_argument("--no-baseline", action="store_true", help="skip the itsacat-style baseline row")
    ap.add_argument("--fault-cost", action="store_true", help="only the cost-of-one-fault rows (see the docstring)")
    ap.add_argument("--handoff", action="store_true", help="only the handoff-overhead rows (benchmarks/handoff.py)")
    ap.add_argument("--fault-epochs", type=int, default=1500)
    ap.add_argument("--fault-pairs", type=int, default=5, help="fault-cost repetitions (each row: their median)")
    ap.add_argument("--kill-early-s", type=float, default=3.0, help="the early fault: this long after the claim")
    args = ap.parse_args()
    if args.handoff:
        from handoff import handoff_rows

        print("\n".join(handoff_rows()))
        return
    if args.fault_cost:
        from fault_cost import run_fault_cost

        run_fault_cost(argparse.Namespace(pairs=args.fault_pairs, epochs=args.fault_epochs, early_s=args.kill_early_s))
        return

    tmp = Path(tempfile.mkdtemp(prefix="lambdanet-bench-engine-"))
    os.environ["LAMBDANET_HOME"] = str(tmp / "home")
    for var in ("LAMBDANET_LEDGER", "LAMBDANET_OBJECTS", "LAMBDANET_NOTIFIER", "LAMBDANET_STORE"):
        os.environ.pop(var, None)
    os.environ["LAMBDANET_NOTIFIER"] = "console://stdout"
    redis_proc, redis_url = start_redis(tmp)

    from itsacat_baseline import run_baseline

    from lambdanet import adapters
    from lambdanet.config import parse_config
    from lambdanet.cpu_budget import THREAD_VARS, available_cores
    from lambdanet.data.readers import load_dataset, to_matrix, to_targets
    from lambdanet.nn import reference
    from lambdanet.services import Services
    from lambdanet.settings import Settings

    class Quiet:  # no notifications in the table's output
        url = "quiet://"

        def notify(self, subject: str, message: str, **fields: object) -> None:
            pass

    params = json.loads((REPO / "examples" / "itsacat" / "parameters.json").read_text())
    cfg = parse_config({**params, "epochs": args.epochs, "batch_size": 209, "threshold": 0.0,
                        "dtype": "float32", "seed": 1, "report_every": 10**9})
    ds = load_dataset(DATA)
    X = to_matrix(ds.x_train, "float32")
    Y = to_targets(ds.y_train, 2, "sigmoid", "float32")
    services = Services.open(Settings.from_env())
    services.notifier = Quiet()  # type: ignore[assignment]
    rows: list[dict[str, Any]] = []
    bl: dict[str, Any] | None = None
    try:
        singles = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            ref = reference.train(cfg, X, Y)
            singles.append(time.perf_counter() - t)
        single = statistics.median(singles)
        rows.append({"run": "single process (nn.reference)", "seconds": single, "ratio": 1.0, "vs_k1": None,
                     "sync_ms_epoch": 0.0, "bytes_epoch": 0, "final_cost": ref.costs[-1], "budget": "",
                     "target": ""})
        print(f"single process: {single:.2f} s, cost {ref.costs[-1]:.6f}", flush=True)
        per_epoch_neuron = None
        for executor in args.executors:
            store = "memory://" if executor == "local" else redis_url
            for strategy in args.strategies:
                # K = 1, 2, 4, K = 1, 2, 4, …: the repeats interleave, so a drift in the machine's
                # load reaches every K alike; each row is the run with the median wall time
                runs: dict[int, list[dict[str, Any]]] = {k: [] for k in args.workers}
                for _ in range(args.repeats):
                    for k in args.workers:
                        runs[k].append(engine_run(services, cfg, strategy, k, store, executor))
                k1 = median_run(runs[1])["seconds"] if 1 in runs else None
                for k in args.workers:
                    row = with_ratios(median_run(runs[k]), executor, k, single, k1)
                    rows.append(row)
                    print(f"{row['run']}: {row['seconds']:.2f} s ({row['ratio']:.2f}x single"
                          f"{vs_k1_text(row)}), "
                          f"budget {row['budget']}, cost {row['final_cost']:.6f}", flush=True)
                    if strategy == "neuron" and executor == "process" and k == max(args.workers):
                        per_epoch_neuron = row["seconds"] / args.epochs
        lithops_start = None
        if not args.no_lithops:  # the same run as K=2 neuron redis/process, through Lithops' localhost backend
            lithops_start = round_start_overhead(workers=2, rounds=3, version=1)["round_start_s"]
            row = with_ratios(engine_run(services, cfg, "neuron", 2, redis_url, "lithops://localhost?version=1"),
                              "lithops", 2, single, None)
            row["round_start_s"] = lithops_start
            rows.append(row)
            print(f"{row['run']}: {row['seconds']:.2f} s ({row['ratio']:.2f}x), round start {lithops_start:.2f} s",
                  flush=True)
        if not args.no_baseline:
            base_cfg = parse_config({**cfg.model_dump(), "epochs": args.baseline_epochs})
            bl = run_baseline(base_cfg, X, Y, redis_url, adapters.open_executor("process"), args.baseline_epochs)
            rows.append({"run": "itsacat-style (1 call/neuron/layer/step, process+redis)",
                         "seconds": sum(bl["seconds"]), "ratio": None, "vs_k1": None, "sync_ms_epoch": None,
                         "bytes_epoch": bl["bytes"] // args.baseline_epochs, "final_cost": bl["costs"][-1],
                         "budget": "", "target": "", "per_epoch_s": sum(bl["seconds"]) / len(bl["seconds"]),
                         "calls_per_epoch": bl["calls"] // args.baseline_epochs})
    finally:
        redis_proc.kill()
        redis_proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    thread_vars = {v: os.environ[v] for v in THREAD_VARS if v in os.environ}
    print()
    print(f"float32, full batch, itsacat network [12288, 20, 7, 5, 1], {args.epochs} epochs, "
          f"{available_cores()} cores, thread variables: {thread_vars or 'none set (the default environment)'}")
    print("| run | wall s | × K=1 | × single | CPU budget (threads/worker, source; BLAS threads seen) "
          "| target | sync ms/epoch | store bytes/epoch | final cost |")
    print("| --- | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: |")
    for r in rows:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
        vs_k1 = "" if r["vs_k1"] is None else f"{r['vs_k1']:.2f}"
        sync = "" if r["sync_ms_epoch"] is None else f"{r['sync_ms_epoch']:.2f}"
        print(f"| {r['run']} | {r['seconds']:.2f} | {vs_k1} | {ratio} | {r['budget']} | {r['target']} | {sync} | "
              f"{r['bytes_epoch']:,} | {r['final_cost']:.6f} |")
    if bl is not None:
        bl_epoch = sum(bl["seconds"]) / len(bl["seconds"])
        print(f"\nitsacat-style: {bl_epoch:.2f} s per epoch ({bl['calls'] // args.baseline_epochs} calls per epoch, "
              f"{args.baseline_epochs} epochs)")
        if per_epoch_neuron:
            print(f"neuron K={max(args.workers)} redis/process: {1000 * per_epoch_neuron:.2f} ms per epoch "
                  f"-> {bl_epoch / per_epoch_neuron:,.0f}x faster per epoch than itsacat-style")
    if lithops_start is not None:
        print(f"lithops localhost (v1): {lithops_start:.2f} s to start a round of 2 no-op calls")
    print(json.dumps({"epochs": args.epochs, "cores": available_cores(), "thread_vars": thread_vars, "rows": rows},
                     default=float))


def vs_k1_text(row: dict[str, Any]) -> str:
    return "" if row["vs_k1"] is None else f", {row['vs_k1']:.2f}x K=1"


# the scaling targets on memory/local: wall time of K workers over K = 1 (issue 12)
TARGETS = {2: 1.3, 4: 1.5}


def engine_run(services: Any, cfg: Any, strategy: str, k: int, store: str, executor: str) -> dict[str, Any]:
    """One engine run, timed, with its recorded CPU budget and the threads its workers saw."""
    from lambdanet.engine.driver import Driver, TrainRequest
    from lambdanet.engine.requests import EngineSettings

    t = time.perf_counter()
    res = Driver(services).train(TrainRequest(data=str(DATA), config=cfg, workers=k, strategy=strategy,
                                              store_url=store, executor=executor, model_name="bench"))
    wall = time.perf_counter() - t
    rec = services.ledger.get_run(res.run_id)
    budget = EngineSettings.of_run(rec).cpu_budget
    seen = sorted({w.get("blas") for w in rec.metrics.get("worker_threads") or []}, key=str)
    where = {"local": "memory/local", "process": "redis/process"}.get(executor, "redis/lithops-localhost")
    return {"run": f"{strategy} K={k} {where}", "seconds": wall,
            "sync_ms_epoch": 1000 * float(rec.metrics.get("sync_seconds", 0.0)) / res.epochs_run,
            "bytes_epoch": res.store_bytes // max(1, res.epochs_run), "final_cost": res.final_cost,
            "rounds": res.rounds, "worker_calls": res.worker_calls, "estimated_cost_usd": res.estimated_cost_usd,
            "budget": f"{budget.threads if budget.threads is not None else '–'}, {budget.source}; "
                      f"seen {'/'.join(str(b) for b in seen) or '–'}",
            "cpu_budget": budget.model_dump(mode="json")}


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median wall time (the lower middle one of an even count), with every
    repeat's wall time."""
    ordered = sorted(runs, key=lambda r: r["seconds"])
    return {**ordered[(len(ordered) - 1) // 2], "repeats_s": [r["seconds"] for r in runs]}


def with_ratios(row: dict[str, Any], executor: str, k: int, single: float, k1: float | None) -> dict[str, Any]:
    """``row`` with its ratios to the single process and to K = 1, and its target verdict."""
    vs_k1 = row["seconds"] / k1 if k1 else None
    target = ""
    if executor == "local" and k in TARGETS and vs_k1 is not None:
        target = f"≤ {TARGETS[k]}×: {'met' if vs_k1 <= TARGETS[k] else 'MISSED'}"
    return {**row, "ratio": row["seconds"] / single, "vs_k1": vs_k1, "target": target}


if __name__ == "__main__":
    main()
