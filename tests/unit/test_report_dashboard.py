"""The dashboard's run state: progress, ETA and JSON safety (no server needed)."""

from __future__ import annotations

import json

import pytest

from lambdanet.ports.ledger import EpochRow, RunRecord
from lambdanet.serve.dashboard import _epoch_json, run_state


def _run(status: str, **kw: object) -> RunRecord:
    return RunRecord(run_id="r-1", status=status, kind="mlp", data="d.h5", created_at=90.0, started_at=100.0,
                     config={"epochs": 100, "engine": {"workers": 4, "strategy": "data"}}, **kw)  # type: ignore[arg-type]


def test_eta_of_a_running_run() -> None:
    rows = [EpochRow("r-1", i, 1.0 / i, 0.01, 0.1) for i in range(1, 26)]
    s = run_state(_run("running"), rows, now=150.0)  # 25 epochs in 50 s -> 75 more take 150 s
    assert s["epochs_done"] == 25 and s["epochs_total"] == 100
    assert s["eta_seconds"] == pytest.approx(150.0)
    assert s["last_cost"] == pytest.approx(1 / 25)
    assert (s["workers"], s["strategy"]) == (4, "data")


def test_finished_runs_have_no_eta_and_take_progress_from_metrics() -> None:
    s = run_state(_run("completed", metrics={"epochs_done": 100, "final_cost": 0.1}), None, now=500.0)
    assert s["eta_seconds"] is None and s["epochs_done"] == 100 and s["last_cost"] == 0.1
    fresh = run_state(_run("running"), [], now=101.0)
    assert fresh["epochs_done"] == 0 and fresh["eta_seconds"] is None


def test_nan_costs_become_null() -> None:
    row = _epoch_json(EpochRow("r-1", 3, float("nan"), 0.01, 0.1, {"test_accuracy": float("inf")}))
    assert row["cost"] is None and row["test_accuracy"] is None
    json.dumps(row, allow_nan=False)
    s = run_state(_run("failed"), [EpochRow("r-1", 1, float("nan"), 0.01, 0.1)], now=200.0)
    json.dumps(s, allow_nan=False)
