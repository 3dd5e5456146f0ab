"""The dashboard's run state — progress, ETA and JSON safety — on runs the engine wrote (the Driver,
2 workers, local executor, in-memory store, catvnoncat at 16x16): one stopped after its first round
(still ``running``), the same run finished, one whose cost diverged to NaN and one started and
never driven. The expected values
are computed here from the run's ledger rows."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from lambdanet.engine.driver import Driver, TrainRequest
from lambdanet.ports.ledger import EpochRow, RunRecord
from lambdanet.serve.dashboard import _epoch_json, run_state
from lambdanet.services import Services
from lambdanet.settings import Settings
from tests.e2e.engine_support import config, small_data


class Runs(NamedTuple):
    partial: RunRecord  # after round 1 of 3 (2 of 6 epochs), as the ledger held it then
    partial_epochs: list[EpochRow]
    done: RunRecord  # the same run driven to its end
    done_epochs: list[EpochRow]
    diverged: RunRecord
    diverged_epochs: list[EpochRow]
    fresh: RunRecord  # started (Driver.start), never driven: running, no epoch yet


def _request(data: Path, name: str, **overrides: object) -> TrainRequest:
    return TrainRequest(data=str(data), config=config(epochs=6, batch_size=64, **overrides), workers=2,
                        strategy="neuron", store_url=f"memory://{name}", epochs_per_round=2)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    tmp = tmp_path_factory.mktemp("dashboard")
    data = small_data(tmp)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAMBDANET_HOME", str(tmp / "home"))
        for var in ("LAMBDANET_LEDGER", "LAMBDANET_OBJECTS", "LAMBDANET_NOTIFIER", "LAMBDANET_STORE",
                    "LAMBDANET_EXECUTOR"):
            mp.delenv(var, raising=False)
        services = Services.open(Settings.from_env())
        try:
            driver = Driver(services)
            run_id = driver.start(_request(data, "dash"))
            session = driver.open_session(run_id)
            try:
                step = session.next_round()
                assert (step.epochs_done, step.finished) == (2, False)
                partial, partial_epochs = services.ledger.get_run(run_id), services.ledger.epochs(run_id)
                while not session.next_round().finished:
                    pass
                session.finish()
            finally:
                session.close()
            # 1e30 overflows float32: the cost is NaN from the first epoch on (the engine trains on)
            bad = driver.train(_request(data, "nan", learning_rate=1e30, dtype="float32"))
            fresh = driver.start(_request(data, "fresh"))
            yield Runs(partial, partial_epochs, services.ledger.get_run(run_id), services.ledger.epochs(run_id),
                       services.ledger.get_run(bad.run_id), services.ledger.epochs(bad.run_id),
                       services.ledger.get_run(fresh))
        finally:
            services.close()


def test_eta_of_a_running_run(runs: Runs) -> None:
    run, rows = runs.partial, runs.partial_epochs
    assert run.status == "running" and run.started_at and [e.epoch for e in rows] == [1, 2]
    now = run.started_at + 10.0
    s = run_state(run, rows, now=now)
    assert s["epochs_done"] == 2 and s["epochs_total"] == 6
    assert s["eta_seconds"] == pytest.approx(10.0 / 2 * (6 - 2))  # 2 epochs took 10 s: 4 more take 20 s
    assert s["last_cost"] == pytest.approx(rows[-1].cost)
    assert (s["workers"], s["strategy"], s["executor"]) == (2, "neuron", "local")
    assert (s["status"], s["run_id"]) == ("running", run.run_id)


def test_finished_runs_have_no_eta_and_take_progress_from_metrics(runs: Runs) -> None:
    run, rows = runs.done, runs.done_epochs
    assert run.status == "completed" and [e.epoch for e in rows] == list(range(1, 7))
    s = run_state(run, None, now=run.started_at + 1e6)  # the runs list passes no rows for a finished run
    assert s["eta_seconds"] is None and s["epochs_done"] == 6
    assert s["last_cost"] == pytest.approx(rows[-1].cost)  # the run's final cost is its last epoch's
    assert s["test_accuracy"] == run.metrics["test_accuracy"] is not None
    assert run_state(run, rows, now=run.started_at + 1e6)["eta_seconds"] is None
    assert runs.fresh.status == "running" and runs.fresh.started_at
    fresh = run_state(runs.fresh, [], now=runs.fresh.started_at + 1.0)
    assert fresh["epochs_done"] == 0 and fresh["eta_seconds"] is None and fresh["epochs_total"] == 6


def test_nan_costs_become_null(runs: Runs) -> None:
    rows = runs.diverged_epochs
    assert rows and all(math.isnan(e.cost) for e in rows)  # the engine recorded the diverged costs
    for e in rows:
        row = _epoch_json(e)
        assert row["cost"] is None and row["epoch"] == e.epoch
        json.dumps(row, allow_nan=False)
    s = run_state(runs.diverged, rows, now=runs.diverged.started_at + 1.0)
    assert s["last_cost"] is None
    json.dumps(s, allow_nan=False)
    # the engine never writes a non-finite accuracy, so this one row is made up: the guard covers extras too
    made_up = _epoch_json(EpochRow("r-1", 3, 0.5, 0.01, 0.1, {"test_accuracy": float("inf")}))
    assert made_up["test_accuracy"] is None
    json.dumps(made_up, allow_nan=False)
