"""Helpers of the report tests: the itsacat data and a small config, the CLI in a subprocess, an
HTML reader for the report's data-* attributes, and a real engine run paced for a live dashboard.
Every run the report tests read is written by the engine (no hand-made ledger rows)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import numpy as np

from lambdanet.data.readers import load_dataset
from tests.conftest import CATVNONCAT, REPO

DATA = CATVNONCAT / "datasets.h5"
# one BLAS thread per process: on a loaded 2-core machine OpenBLAS's spinning threads make these
# tiny matmuls ~10x slower (kept if the caller set its own value)
SUBPROCESS_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


@dataclass
class BuiltRun:
    """A finished engine run as the report tests read it back: its model's weights and the
    per-epoch costs of the ledger."""

    run_id: str
    model_ref: str
    params: dict[str, np.ndarray]
    activations: list[str]
    costs: list[float]


def small_config(epochs: int = 300) -> dict:
    return {"epochs": epochs, "layers": 2, "activations": {"layer1": "relu", "layer2": "sigmoid"},
            "neurons": {"layer1": 7, "layer2": 1}, "learning_rate": 0.0075, "batch_size": 1000, "seed": 1}


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
