"""The report of a real CNN run on CIFAR-10 (a small subset): a 10x10 confusion matrix with class
names over the same test subset the engine evaluated, so its accuracy equals the run's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import CIFAR10
from tests.e2e.report_support import Elements, cli

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.mark.slow
def test_cifar10_report_has_a_10x10_matrix_matching_the_run(tmp_path: Path) -> None:
    home = tmp_path / "home"
    params = tmp_path / "cnn.json"
    params.write_text(json.dumps({"model": "lenet", "epochs": 1, "batch_size": 100, "limit_train": 600,
                                  "limit_test": 200}))
    res = cli(home, "train", str(CIFAR10 / "cifar10_train.npz"), "--params", str(params), "--strategy", "data",
              "--json")
    assert res.returncode == 0, res.stderr
    run = json.loads(res.stdout.strip().splitlines()[-1])
    out = tmp_path / "r.html"
    res = cli(home, "report", run["run_id"], "--out", str(out), "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    cm = np.array(data["test"]["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == 200 and data["test"]["classes"] == CLASSES
    assert data["test"]["accuracy"] == pytest.approx(np.trace(cm) / 200)
    assert data["test"]["accuracy"] == pytest.approx(run["test_accuracy"])  # the engine's own figure
    assert data["train"]["accuracy"] == pytest.approx(run["train_accuracy"])
    per_class = {r["name"]: r for r in data["test"]["per_class"]}
    for c, name in enumerate(CLASSES):
        tp, fp = cm[c, c], cm[:, c].sum() - cm[c, c]
        assert per_class[name]["tp"] == tp and per_class[name]["fp"] == fp
        assert per_class[name]["precision"] == (pytest.approx(tp / (tp + fp)) if tp + fp else None)
    doc = Elements(out.read_text())
    cells = [a for _, a in doc.items if "data-count" in a]
    assert len(cells) == 100 and sum(int(a["data-count"]) for a in cells) == 200
    assert len(doc.with_class("error-tile")) == 200 - np.trace(cm)
