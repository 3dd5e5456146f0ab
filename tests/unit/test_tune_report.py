"""The study report and the dashboard's grouping, from ledger rows as ``lambdanet tune`` writes them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lambdanet.errors import NotFound
from lambdanet.ports.ledger import RunRecord
from lambdanet.report.study import collect_study, render_study
from lambdanet.serve.dashboard import run_state
from lambdanet.services import Services
from lambdanet.settings import Settings


def _trial(n: int, outcome: str, curve: list[list[float]], **metrics: object) -> RunRecord:
    status = {"completed": "completed", "pruned": "completed", "failed": "failed"}[outcome]
    return RunRecord(run_id=f"r-{n}", status=status, kind="mlp", config={"epochs": 30}, data="train.npz",
                     model="tiny:1" if outcome == "completed" else "tiny", created_at=float(n),
                     stop_reason="pruned" if outcome == "pruned" else None,
                     metrics={"study": "s", "trial": n, "params": {"learning_rate": 0.01 * (n + 1)},
                              "objective": "cost", "outcome": outcome, "validation": curve,
                              "validation_cost": curve[-1][1], "validation_accuracy": curve[-1][2],
                              "epochs_done": int(curve[-1][0]), "worker_seconds": 1.5,
                              "estimated_cost_usd": 0.0001, **metrics})


def test_study_report_and_dashboard_grouping(home: Path) -> None:
    services = Services.open(Settings.from_env())
    try:
        with pytest.raises(NotFound, match="no study 's'"):
            collect_study(services, "s")
        services.ledger.create_run(_trial(0, "completed", [[10, 0.6, 0.7], [20, 0.5, 0.8], [30, 0.4, 0.9]],
                                          objective_value=0.4))
        services.ledger.create_run(_trial(1, "pruned", [[10, 0.69, 0.5]], prune_reason="pruned by the median pruner"))
        services.ledger.create_run(_trial(2, "failed", [[10, None, 0.5]], fail_reason="diverged: NaN"))
        services.ledger.create_run(RunRecord(run_id="r-plain", status="completed", kind="mlp", config={},
                                             data="x.h5"))
        services.objects.put("studies/s/summary.json", json.dumps(
            {"best_run": "r-0", "best_trial": 0, "objective": "cost", "best_value": 0.4, "validation_accuracy": 0.9,
             "test_accuracy": 0.8, "best_params": {"learning_rate": 0.01}, "best_config": {}, "model": "tiny:1",
             "wall_seconds": 3.0, "storage": "file"}).encode())
        rep = collect_study(services, "s")
    finally:
        services.close()
    payload = rep.to_json()
    assert [t["trial"] for t in payload["trials"]] == [0, 1, 2]  # the plain run is not a trial
    assert payload["counts"] == {"completed": 1, "pruned": 1, "failed": 1, "running": 0}
    html = render_study(rep)
    assert "data-outcome='pruned'" in html and "pruned by the median pruner" in html and "diverged: NaN" in html
    assert "id='history'" in html and "id='curves'" in html and "aliased <b>staging</b>" in html
    assert "<script" not in html  # self-contained, nothing runs
    state = run_state(_trial(1, "pruned", [[10, 0.69, 0.5]]), None)
    assert state["study"] == "s" and state["trial"] == 1 and state["outcome"] == "pruned"
