"""The study report and the dashboard's grouping, on a real ``lambdanet tune`` study (a tiny data set:
completed, pruned and diverged trials) beside a plain ``lambdanet train`` run in the same home; the
expected trials, counts, reasons and best trial are computed here from the ledger's run rows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lambdanet.errors import NotFound
from lambdanet.report.study import collect_study, render_study
from lambdanet.serve.dashboard import run_state
from lambdanet.services import Services
from lambdanet.settings import Settings
from tests.e2e.test_tune import BASE, cli, last_json, tiny_h5

# a learning rate of 1e30 overflows float32 to NaN: that trial fails; weak ones are pruned at epoch 10 or 20
SPACE = {"learning_rate": {"choice": [0.05, 0.02, 1e-5, 1e30]}, "neurons.layer1": {"int": [2, 12]}}


def test_study_report_and_dashboard_grouping(home: Path, tmp_path: Path) -> None:
    data = tiny_h5(tmp_path / "tiny" / "datasets.h5")
    base, space = tmp_path / "base.json", tmp_path / "space.json"
    base.write_text(json.dumps({**BASE, "dtype": "float32"}))
    space.write_text(json.dumps(SPACE))
    services = Services.open(Settings.from_env())
    try:
        with pytest.raises(NotFound, match="no study 's'"):
            collect_study(services, "s")
    finally:
        services.close()
    plain = cli(home, "train", str(data), "--params", str(base), "--json")
    assert plain.returncode == 0, plain.stderr
    plain_id = last_json(plain.stdout)["run_id"]
    res = cli(home, "tune", str(data), "--params", str(base), "--space", str(space), "--study", "s",
              "--epochs-per-round", "10", "--startup-trials", "1", "--trials", "8", "--seed", "0", "--json")
    assert res.returncode == 0, res.stderr
    out = last_json(res.stdout)

    services = Services.open(Settings.from_env())
    try:
        runs = [r for r in services.ledger.list_runs(limit=1000) if r.metrics.get("study") == "s"]
        rep = collect_study(services, "s")
    finally:
        services.close()
    by_outcome = {k: sorted(int(r.metrics["trial"]) for r in runs if r.metrics["outcome"] == k)
                  for k in ("completed", "pruned", "failed")}
    assert all(by_outcome.values()), by_outcome  # the study has each kind of trial this test is about
    completed = [r for r in runs if r.metrics["outcome"] == "completed"]
    best = min(completed, key=lambda r: float(r.metrics["validation_cost"]))  # objective: cost, minimised

    payload = rep.to_json()
    assert [t["trial"] for t in payload["trials"]] == sorted(int(r.metrics["trial"]) for r in runs) == list(range(8))
    assert plain_id not in {t["run_id"] for t in payload["trials"]}  # a plain run is not a trial
    assert payload["counts"] == {**{k: len(v) for k, v in by_outcome.items()}, "running": 0}
    assert (out["completed"], out["pruned"], out["failed"]) == tuple(len(by_outcome[k])
                                                                      for k in ("completed", "pruned", "failed"))
    assert (payload["summary"]["best_run"], payload["summary"]["model"]) == (best.run_id, best.model)
    reasons = {t["trial"]: t["reason"] for t in payload["trials"]}
    for r in runs:
        trial = int(r.metrics["trial"])
        if r.metrics["outcome"] == "pruned":
            assert reasons[trial] == r.metrics["prune_reason"] and "pruned by the median pruner" in reasons[trial]
        elif r.metrics["outcome"] == "failed":
            assert r.error and r.error.startswith("diverged") and reasons[trial] in (r.metrics.get("fail_reason"),
                                                                                     r.error)
        else:
            assert reasons[trial] is None

    html = render_study(rep)
    rows = dict(re.findall(r"<tr data-trial='(\d+)' data-outcome='(\w+)'", html))
    assert rows == {str(r.metrics["trial"]): r.metrics["outcome"] for r in runs}
    for r in runs:
        if r.metrics["outcome"] != "completed":
            assert str(reasons[int(r.metrics["trial"])]) in html
    assert f"<tr data-trial='{best.metrics['trial']}' data-outcome='completed' class='best'>" in html
    assert "id='history'" in html and "id='curves'" in html and "aliased <b>staging</b>" in html
    assert "<script" not in html  # self-contained, nothing runs

    pruned = next(r for r in runs if r.metrics["outcome"] == "pruned")
    state = run_state(pruned, None)
    assert (state["study"], state["trial"], state["outcome"]) == ("s", pruned.metrics["trial"], "pruned")
    assert state["epochs_done"] == pruned.metrics["epochs_done"] < 30
