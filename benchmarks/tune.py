"""``lambdanet tune`` on catvnoncat: a pruned parallel study beside the same trials run sequentially
without pruning, and itsacat's own ``parameters.json`` on the same validation split.

    python benchmarks/tune.py                                   # 32 trials × 500 epochs
    python benchmarks/tune.py --trials 8 --epochs 200           # a quick look

Both studies: ``--trials`` (32) trials of itsacat's network (4 layers, relu/sigmoid) over learning
rate (log 1e-4…1e-1), layer-1 width (8…64), optimizer (gd, momentum, adam) and batch size
(32, 64, 209), ``--epochs`` (500) epochs each in rounds of ``epochs/10`` (the rungs), the same TPE
seed, K = 1 worker per trial on the local executor and the embedded stores, in a fresh
``LAMBDANET_HOME``. "parallel" runs P = 2 trials at once, each driven by its own trial-driver
process (``--trial-driver``; threads share one GIL), with ``--pruner`` (median:
``--startup-trials`` 5, ``--warmup-rounds`` 1; or asha); "sequential" runs one at a time with
no pruner. The tune driver budgets the CPU itself: each trial's worker gets cores // P threads
(cores // 1 for the sequential study) — the benchmark sets no thread
variable. The objective (``--objective``, default balanced accuracy — the mean of the classes'
recalls: on this 42-image validation split the majority class alone scores 0.619 accuracy, more
than any trained model, so plain accuracy picks the constant predictor) is computed on the
seeded 20 % split of the training set; the test set is scored once, for each study's best trial.
itsacat's ``examples/itsacat/parameters.json`` (5000 epochs, as itsacat ran it)
is trained on the same training split and scored on the same validation split.

Prints a markdown table — wall time, worker-seconds, estimated AWS Lambda cost, trials pruned, best
validation accuracy, its test accuracy, whether the best model predicts both classes — and the
ratios against the targets (wall ≤ 0.4× sequential, ≥ 30 % pruned, best validation accuracy ≥
itsacat's); ``--out FILE`` also writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "datasets" / "catvnoncat" / "datasets.h5"
PARAMS = REPO / "examples" / "itsacat" / "parameters.json"
SPACE = {"learning_rate": {"log_uniform": [1e-4, 1e-1]}, "neurons.layer1": {"int": [8, 64]},
         "optimizer": {"choice": ["gd", "momentum", "adam"]}, "batch_size": {"choice": [32, 64, 209]}}


def run_study(name: str, base: dict[str, Any], args: argparse.Namespace, parallel: int, pruner: str,
              trial_driver: str) -> dict[str, Any]:
    from lambdanet.services import Services
    from lambdanet.settings import Settings
    from lambdanet.tune.request import TuneRequest
    from lambdanet.tune.study import Tuner

    services = Services.open(Settings.from_env())
    try:
        req = TuneRequest(study=name, data=str(args.data), base=base, space=SPACE, trials=args.trials,
                          parallel=parallel, executor=args.executor, store_url=args.store, pruner=pruner,
                          objective=args.objective, seed=args.seed, epochs_per_round=max(1, args.epochs // 10),
                          model_name="catvnoncat", startup_trials=args.startup_trials,
                          warmup_rounds=args.warmup_rounds, trial_driver=trial_driver)

        def event(ev: dict[str, Any]) -> None:
            if ev["event"] in ("trial_completed", "trial_pruned", "trial_failed"):
                print(f"  [{name}] trial {ev.get('trial')} {ev['event'][6:]} "
                      f"{'' if 'epoch' not in ev else 'at epoch ' + str(ev['epoch'])}", file=sys.stderr, flush=True)

        t0 = time.perf_counter()
        result = Tuner(services, req, on_event=event).run().to_json()
        result["measured_wall_seconds"] = time.perf_counter() - t0
        result["cpu_threads"] = req.cpu_threads
        result["trial_driver"] = trial_driver
        result["best_predicts_both_classes"] = predicts_both_classes(services, name, result)
        return result
    finally:
        services.close()


def predicts_both_classes(services: Any, study: str, result: dict[str, Any]) -> bool | None:
    """Whether the study's best model is more than a constant (majority-class) predictor on the
    validation split: a real model, not the trivial one that ties on a small split."""
    import numpy as np

    from lambdanet.config import parse_config
    from lambdanet.data.readers import load_dataset, to_matrix
    from lambdanet.engine import checkpoints
    from lambdanet.nn import mlp

    if result.get("best_run") is None:
        return None
    config = parse_config(result["best_config"])
    pointer = checkpoints.read_pointer(services.objects, result["best_run"])
    state = checkpoints.read_state(services.objects, pointer.file)
    params = {k[6:]: np.asarray(v) for k, v in state.items() if k.startswith("param.")}
    valid = load_dataset(services.settings.home / "studies" / study / "validation.npz")
    AL = mlp.predict_proba(params, to_matrix(valid.x_train, config.dtype), config.activation_list)  # (1, m)
    return bool(len(np.unique(AL[0] > 0.5)) == 2)


def itsacat_baseline(study: str, epochs: int | None) -> dict[str, Any]:
    """itsacat's parameters.json trained on the study's train split, scored on its validation split."""
    from lambdanet.config import load_config
    from lambdanet.data.readers import load_dataset
    from lambdanet.engine import checkpoints
    from lambdanet.engine.driver import Driver, TrainRequest
    from lambdanet.services import Services
    from lambdanet.settings import Settings
    from lambdanet.tune.evaluate import evaluate

    services = Services.open(Settings.from_env())
    try:
        folder = services.settings.home / "studies" / study
        config = load_config(PARAMS)
        if epochs is not None:  # a quick look only: the comparison is itsacat's own epochs
            config = config.model_copy(update={"epochs": epochs})
        t0 = time.perf_counter()
        res = Driver(services).train(TrainRequest(data=str(folder / "train.npz"), config=config,
                                                  model_name="itsacat-baseline"))
        wall = time.perf_counter() - t0
        pointer = checkpoints.read_pointer(services.objects, res.run_id)
        assert pointer is not None
        state = checkpoints.read_state(services.objects, pointer.file)
        valid = load_dataset(folder / "validation.npz")
        full = load_dataset(DATA)
        v = evaluate(config, state, valid.x_train, valid.y_train, valid.n_classes)
        assert full.x_test is not None and full.y_test is not None
        t = evaluate(config, state, full.x_test, full.y_test, full.n_classes)
        return {"wall_seconds": wall, "worker_seconds": res.worker_seconds,
                "estimated_cost_usd": res.estimated_cost_usd,
                "validation_accuracy": v.accuracy, "validation_cost": v.cost, "test_accuracy": t.accuracy,
                "epochs_run": res.epochs_run, "stop_reason": res.stop_reason}
    finally:
        services.close()


def fmt(v: Any, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--trials", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=500, help="epochs per trial (rounds of epochs/10)")
    ap.add_argument("--executor", default="local")
    ap.add_argument("--store", default="memory://")
    ap.add_argument("--objective", default="balanced_accuracy", choices=("accuracy", "balanced_accuracy", "cost"))
    ap.add_argument("--pruner", default="median", choices=("asha", "median"))
    ap.add_argument("--trial-driver", default="process", choices=("process", "thread"),
                    help="what drives each of the parallel study's 2 trials")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--startup-trials", type=int, default=5, help="median pruner")
    ap.add_argument("--warmup-rounds", type=int, default=1, help="median pruner")
    ap.add_argument("--itsacat-epochs", type=int, default=None,
                    help="a quick look only (default: parameters.json's own 5000, stopped by its threshold)")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="lambdanet-tune-bench-"))
    os.environ["LAMBDANET_HOME"] = str(home)
    base = {**json.loads(PARAMS.read_text()), "epochs": args.epochs, "threshold": 0.0, "report_every": args.epochs}
    load0 = os.getloadavg()
    print(f"LAMBDANET_HOME={home}; load average before: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}",
          file=sys.stderr, flush=True)
    par = run_study("parallel-pruned", base, args, parallel=2, pruner=args.pruner, trial_driver=args.trial_driver)
    seq = run_study("sequential", base, args, parallel=1, pruner="none", trial_driver="thread")
    its = itsacat_baseline("parallel-pruned", args.itsacat_epochs)
    load1 = os.getloadavg()

    ratio = par["wall_seconds"] / seq["wall_seconds"]
    pruned_share = par["pruned"] / max(1, par["trials"])
    rows = [
        (f"pruned parallel study (P = 2, {args.pruner}, trial-driver {args.trial_driver}es, "
         f"{par['cpu_threads']} thread each)", par),
        (f"sequential study (P = 1, no pruner, {seq['cpu_threads']} threads)", seq),
    ]
    print()
    print(f"catvnoncat, {args.trials} trials × {args.epochs} epochs (rounds of {max(1, args.epochs // 10)}), "
          f"executor {args.executor}, objective validation {args.objective}; load average "
          f"{load0[0]:.2f} before, {load1[0]:.2f} after")
    print()
    print("| study | wall s | × sequential | worker-s | est. AWS USD | trials completed / pruned / failed "
          "| best val acc | its val cost | its test acc | predicts both classes |")
    print("| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- |")
    for label, r in rows:
        print(f"| {label} | {r['wall_seconds']:.1f} | {r['wall_seconds'] / seq['wall_seconds']:.2f} | "
              f"{r['worker_seconds']:.1f} | {r['estimated_cost_usd']:.5f} | {r['completed']} / {r['pruned']} / "
              f"{r['failed']} | {fmt(r['validation_accuracy'], '.3f')} | {fmt(r['validation_cost'], '.3f')} | "
              f"{fmt(r['test_accuracy'], '.3f')} | {r['best_predicts_both_classes']} |")
    print(f"| itsacat parameters.json ({its['epochs_run']} epochs, {its['stop_reason']}) | {its['wall_seconds']:.1f} "
          f"| | {its['worker_seconds']:.1f} | {its['estimated_cost_usd']:.5f} | | "
          f"{its['validation_accuracy']:.3f} | {its['validation_cost']:.3f} | {its['test_accuracy']:.3f} | |")
    print()
    checks = [
        ("wall time ≤ 0.4× sequential", ratio <= 0.4, f"{ratio:.2f}×"),
        ("the best trial is a real model (predicts both classes on the validation split)",
         bool(par["best_predicts_both_classes"]), str(par["best_predicts_both_classes"])),
        ("≥ 30 % of trials pruned", pruned_share >= 0.3, f"{pruned_share:.0%}"),
        ("best val acc ≥ itsacat's", (par["validation_accuracy"] or 0) >= its["validation_accuracy"],
         f"{fmt(par['validation_accuracy'], '.3f')} vs {its['validation_accuracy']:.3f}"),
    ]
    for what, ok, value in checks:
        print(f"- {what}: {value} — {'met' if ok else 'MISSED'}")
    print(f"- best configuration (parallel study): {json.dumps(par['best_params'], sort_keys=True)}")
    print(f"- best configuration (sequential study): {json.dumps(seq['best_params'], sort_keys=True)}")
    if args.out is not None:
        args.out.write_text(json.dumps({"parallel": par, "sequential": seq, "itsacat": its, "ratio": ratio,
                                         "pruned_share": pruned_share, "load": [load0, load1]}, indent=1))


if __name__ == "__main__":
    main()
