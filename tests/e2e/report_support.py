"""Build a finished (or still running) itsacat run directly, without the engine: train with the
reference trainer, write the run, its epoch rows and worker calls to the SQLite ledger of
``LAMBDANET_HOME`` and register the model — exactly the records the report reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import numpy as np

from lambdanet.config import parse_config
from lambdanet.data.readers import load_dataset, to_matrix, to_targets
from lambdanet.nn import mlp, reference
from lambdanet.ports.ledger import CallRow, EpochRow, RunRecord
from lambdanet.services import Services
from lambdanet.settings import Settings
from tests.conftest import CATVNONCAT, REPO

DATA = CATVNONCAT / "datasets.h5"
# one BLAS thread per process: on a loaded 2-core machine OpenBLAS's spinning threads make these
# tiny matmuls ~10x slower (kept if the caller set its own value)
SUBPROCESS_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


@dataclass
class BuiltRun:
    run_id: str
    model_ref: str
    params: dict[str, np.ndarray]
    activations: list[str]
    costs: list[float]


def small_config(epochs: int = 300) -> dict:
    return {"epochs": epochs, "layers": 2, "activations": {"layer1": "relu", "layer2": "sigmoid"},
            "neurons": {"layer1": 7, "layer2": 1}, "learning_rate": 0.0075, "batch_size": 1000, "seed": 1}


def build_run(services: Services, epochs: int = 300, retry: bool = True, model_name: str = "itsacat") -> BuiltRun:
    """Train, then write the ledger rows and the registered model of a completed 2-worker run."""
    cfg = parse_config(small_config(epochs))
    ds = load_dataset(DATA)
    X = to_matrix(ds.x_train, "float32")  # (12288, 209)
    Y = to_targets(ds.y_train, 2, "sigmoid", "float32")  # (1, 209)
    Xt = to_matrix(ds.x_test, "float32")  # (12288, 50)
    acc_at: dict[int, float] = {}

    t0 = time.time()
    result = reference.train(cfg, X, Y)
    wall = time.time() - t0
    acts = cfg.activation_list
    test_acc = float(np.mean((mlp.predict_proba(result.params, Xt, acts)[0] > 0.5) == ds.y_test))
    train_acc = float(np.mean((mlp.predict_proba(result.params, X, acts)[0] > 0.5) == ds.y_train))
    acc_at[len(result.costs)] = test_acc

    run_id = f"r-{uuid.uuid4().hex[:10]}"
    now = time.time()
    services.ledger.create_run(RunRecord(
        run_id=run_id, status="running", kind="mlp", data=str(DATA), model=model_name, created_at=now - wall - 1,
        started_at=now - wall,
        config={"config": cfg.model_dump(), "workers": 2, "strategy": "neuron", "executor": "local",
                "store_url": "redis://:secret@127.0.0.1:6379/0"},
    ))
    rows = [EpochRow(run_id, i + 1, c, cfg.learning_rate, wall / len(result.costs),
                     {"test_accuracy": acc_at[i + 1]} if i + 1 in acc_at else {})
            for i, c in enumerate(result.costs)]
    services.ledger.upsert_epochs(run_id, rows)
    calls = []
    n_rounds = 3
    for r in range(n_rounds):
        attempts = (0, 1) if (retry and r == 1) else (0,)
        for a in attempts:
            for w in range(2):
                start = now - wall + (r + 0.5 * a) * wall / n_rounds + 0.01 * w
                ok = not (retry and r == 1 and a == 0 and w == 1)
                calls.append(CallRow(run_id, r, a, w, start, start + wall / n_rounds * (0.4 if not ok else 0.9), ok,
                                     None if ok else "exit code -9"))
    services.ledger.record_calls(run_id, calls)
    weights = {k: np.asarray(v, dtype=np.float32) for k, v in result.params.items()}
    mv = services.registry.register(model_name, weights, {
        "kind": "mlp", "classes": list(ds.classes), "input_shape": [64, 64, 3], "dtype": "float32",
        "preprocessing": {"resize": "bilinear", "scale": 255.0, "mean": None, "std": None},
        "architecture": {"layer_dims": cfg.layer_dims(12288), "activations": acts},
        "config": cfg.model_dump(), "run_id": run_id,
        "metrics": {"train_accuracy": train_acc, "test_accuracy": test_acc, "final_cost": result.costs[-1]},
    })
    ref = f"{mv.name}:{mv.version}"
    services.ledger.update_run(
        run_id, status="completed", model=ref, ended_at=time.time(), stop_reason=result.stop_reason,
        metrics={"epochs_run": result.epochs_run, "final_cost": result.costs[-1], "train_accuracy": train_acc,
                 "test_accuracy": test_acc, "wall_seconds": wall, "workers": 2, "strategy": "neuron",
                 "rounds": n_rounds, "retries": 1 if retry else 0, "worker_calls": len(calls),
                 "worker_seconds": sum(c.ended_at - c.started_at for c in calls), "store_bytes": 123456,
                 "estimated_cost_usd": 0.000042},
    )
    return BuiltRun(run_id, ref, weights, acts, result.costs)


def cli(home: Path, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {**SUBPROCESS_ENV, **os.environ, "LAMBDANET_HOME": str(home), "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-m", "lambdanet", *args], capture_output=True, text=True, env=env,
                          timeout=180, cwd=cwd)


class Elements(HTMLParser):
    """Every start tag as (tag, attrs) — enough to read the report's data-* attributes."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.items: list[tuple[str, dict[str, str]]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.items.append((tag, {k: v or "" for k, v in attrs}))

    def find(self, **want: str) -> list[dict[str, str]]:
        return [a for _, a in self.items if all(a.get(k.replace("_", "-")) == v for k, v in want.items())]

    def with_class(self, cls: str) -> list[dict[str, str]]:
        return [a for _, a in self.items if cls in a.get("class", "").split()]


def build_run_in_subprocess(home: Path, epochs: int = 300, retry: bool = True) -> BuiltRun:
    """:func:`build_run` in a fresh interpreter (single-threaded BLAS) writing to ``home``; the
    weights are read back from the registry."""
    code = ("import json; from lambdanet.services import Services; from tests.e2e.report_support import build_run; "
            f"s = Services.open(); b = build_run(s, epochs={epochs}, retry={retry}); "
            "print(json.dumps({'run_id': b.run_id, 'model': b.model_ref, 'costs': b.costs}))")
    env = {**SUBPROCESS_ENV, **os.environ, "LAMBDANET_HOME": str(home),
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    if res.returncode != 0:
        raise RuntimeError(f"build_run failed: {res.stderr[-2000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    services = Services.open(Settings(
        home=home, ledger_url=f"sqlite:///{home / 'ledger.db'}", objects_url=str(home / "objects"),
        notifier_url="console://", store_url="memory://", executor="local"))
    try:
        mv = services.registry.load(out["model"])
        return BuiltRun(out["run_id"], out["model"], dict(mv.weights),
                        list(mv.metadata["architecture"]["activations"]), out["costs"])
    finally:
        services.close()


class PacedProgress:
    """A driver progress sink slowed down so a browser polling once a second sees the rounds of
    a run arrive one after another (the driver calls it after each round's ledger write)."""

    def start(self, total_epochs: int, done_epochs: int) -> None:
        pass

    def update(self, epoch: int, cost: float) -> None:
        time.sleep(0.1)

    def finish(self) -> None:
        pass


def small_npz(folder: Path, m: int = 64) -> Path:
    """The first ``m`` training and 20 test images of catvnoncat as an .npz data set."""
    ds = load_dataset(DATA)
    path = folder / "cats.npz"
    np.savez(path, x=ds.x_train[:m], y=ds.y_train[:m], x_test=ds.x_test[:20], y_test=ds.y_test[:20],
             classes=np.array(ds.classes))
    return path


PACED_TRAIN = """
import json, sys
from lambdanet.config import parse_config
from lambdanet.engine.driver import Driver, TrainRequest
from lambdanet.services import Services
from tests.e2e.report_support import PacedProgress, small_config
data, epochs, per_round = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
services = Services.open()
request = TrainRequest(data=data, config=parse_config(small_config(epochs)), model_name="itsacat", workers=2,
                       strategy="neuron", epochs_per_round=per_round)
print(json.dumps(Driver(services, PacedProgress()).train(request).to_json()))
"""


def start_paced_training(home: Path, tmp: Path, epochs: int, epochs_per_round: int) -> subprocess.Popen[str]:
    """A real engine run (Driver, 2 workers, neuron strategy) in its own process writing to the
    ledger of ``home``, paced by :class:`PacedProgress`; prints its RunResult JSON at the end."""
    env = {**SUBPROCESS_ENV, **os.environ, "LAMBDANET_HOME": str(home),
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    return subprocess.Popen([sys.executable, "-c", PACED_TRAIN, str(small_npz(tmp)), str(epochs),
                             str(epochs_per_round)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=REPO)
