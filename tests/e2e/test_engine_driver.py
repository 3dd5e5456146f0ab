"""The driver end to end on the embedded defaults (memory store, threads, SQLite ledger, folder
objects, console notifier): early stop, round budgets, notifications, ledger rows and metrics,
checkpoint objects, and requests refused before anything is written."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from lambdanet.engine.driver import Driver, TrainRequest
from lambdanet.errors import ConfigError, LambdanetError, RunNotFound, UserInputError
from tests.e2e.engine_support import config, max_rel_diff, open_services, reference_run, small_data, weights_of


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_data(tmp_path_factory.mktemp("cats16"))


def test_threshold_early_stop_matches_the_reference(home: Path, data: Path,
                                                    capfd: pytest.CaptureFixture[str]) -> None:
    probe = reference_run(config(epochs=8, learning_rate=0.05), data)
    threshold = probe.costs[4]  # the cost falls below this during epoch 5
    cfg = config(epochs=8, learning_rate=0.05, threshold=threshold)
    ref = reference_run(cfg, data)
    assert ref.stop_reason == "threshold" and ref.epochs_run < 8
    services = open_services()
    res = Driver(services).train(TrainRequest(data=str(data), config=cfg, workers=2, strategy="neuron",
                                              epochs_per_round=3))
    assert res.stop_reason == "threshold" and res.epochs_run == ref.epochs_run
    assert max_rel_diff(weights_of(services, res), ref.params) <= 1e-9
    err = capfd.readouterr().err
    assert f"Training stopped early at epoch {ref.epochs_run}" in err
    assert "Training Completed Successfully! Final Cost = " in err
    assert services.ledger.get_run(res.run_id).stop_reason == "threshold"


@pytest.mark.parametrize("workers,epochs,rounds", [(1, 3, 3), (2, 10, 2)])
def test_a_spent_round_budget_ends_rounds_early_without_changing_the_weights(
        home: Path, data: Path, workers: int, epochs: int, rounds: int) -> None:
    cfg = config(epochs=epochs)
    ref = reference_run(cfg, data)
    services = open_services()
    res = Driver(services).train(TrainRequest(data=str(data), config=cfg, workers=workers, strategy="data",
                                              round_seconds=1e-6))
    # K=1 stops after every epoch; K>1 decides together every 8 epochs
    assert res.rounds == rounds and res.epochs_run == epochs
    assert max_rel_diff(weights_of(services, res), ref.params) <= 1e-9


def test_notifications_ledger_metrics_and_run_objects(home: Path, data: Path,
                                                      capfd: pytest.CaptureFixture[str]) -> None:
    cfg = config(epochs=4, report_every=2)
    services = open_services()
    res = Driver(services).train(TrainRequest(data=str(data), config=cfg, workers=3, strategy="neuron",
                                              epochs_per_round=1, model_name="cats"))
    err = capfd.readouterr().err
    rows = services.ledger.epochs(res.run_id)
    assert f"Training update! Cost after epoch 2 = {rows[1].cost:.6f}" in err
    assert f"Training update! Cost after epoch 4 = {rows[3].cost:.6f}" in err
    assert "Cost after epoch 1 " not in err and "Cost after epoch 3 " not in err
    assert [r.extra for r in rows] == [{"round": 1}, {"round": 2}, {"round": 3}, {"round": 4}]
    assert f"Training Completed Successfully! Final Cost = {rows[3].cost:.6f}" in err
    run = services.ledger.get_run(res.run_id)
    assert run.status == "completed" and run.model == res.model and res.model and res.model.startswith("cats:")
    assert run.config["epochs"] == 4 and run.config["engine"]["workers"] == 3
    assert run.config["engine"]["store_url"] == "memory://"
    m = run.metrics
    assert m["worker_calls"] == 12 and m["rounds"] == 4 and m["retries"] == 0
    assert m["store_bytes"] == res.store_bytes > 0 and m["estimated_cost_usd"] > 0
    assert m["train_accuracy"] == res.train_accuracy and m["final_cost"] == rows[3].cost
    assert len(services.ledger.calls(res.run_id)) == 12
    out = res.to_json()
    for key in ("run_id", "status", "epochs_run", "final_cost", "train_accuracy", "test_accuracy",
                "wall_seconds", "model", "workers", "strategy", "rounds", "retries", "store_bytes",
                "estimated_cost_usd"):
        assert key in out
    json.dumps(out)
    objects = services.objects
    pointer = json.loads(objects.get(f"runs/{res.run_id}/checkpoint.json"))
    assert pointer["round"] == 4 and pointer["epochs_done"] == 4
    assert len(objects.list(f"runs/{res.run_id}/checkpoints/")) == 2
    ref = json.loads(objects.get(f"runs/{res.run_id}/data.json"))  # the run's data: a shared snapshot
    assert ref["snapshot"] == f"datasets/{ref['sha256']}.npz"
    with np.load(io.BytesIO(objects.get(ref["snapshot"])), allow_pickle=False) as z:
        assert z["x_train"].dtype == np.uint8 and z["x_train"].shape == (209, 16, 16, 3)


def test_more_workers_than_rows_of_a_layer(home: Path, data: Path) -> None:
    cfg = config(epochs=2, batch_size=64)
    ref = reference_run(cfg, data)
    services = open_services()
    res = Driver(services).train(TrainRequest(data=str(data), config=cfg, workers=6, strategy="neuron"))
    assert max_rel_diff(weights_of(services, res), ref.params) <= 1e-9  # layers of 5 and 1 rows


def test_bad_requests_are_refused_before_a_run_exists(home: Path, data: Path) -> None:
    services = open_services()
    driver = Driver(services)
    cfg = config(epochs=2)
    with pytest.raises(ConfigError, match=r"^memory:// lives in one process; use --store redis://… with the "
                                          r"process executor \(or --executor local\)$"):
        driver.train(TrainRequest(data=str(data), config=cfg, executor="process"))
    with pytest.raises(ConfigError, match="unknown strategy 'rows'"):
        driver.train(TrainRequest(data=str(data), config=cfg, strategy="rows"))
    with pytest.raises(ConfigError, match="--workers must be at least 1"):
        driver.train(TrainRequest(data=str(data), config=cfg, workers=0))
    bad_out = config(epochs=2, activations={"layer1": "relu", "layer2": "relu", "layer3": "relu",
                                            "layer4": "softmax"},
                     neurons={"layer1": 20, "layer2": 7, "layer3": 5, "layer4": 3})
    with pytest.raises(ConfigError, match="a softmax output needs one neuron per class"):
        driver.train(TrainRequest(data=str(data), config=bad_out))
    assert services.ledger.list_runs() == []
    with pytest.raises(RunNotFound):
        driver.resume("r-nope")
    res = driver.train(TrainRequest(data=str(data), config=cfg))
    with pytest.raises(UserInputError, match="already completed"):
        driver.resume(res.run_id)


def test_store_urls_are_stored_without_secrets_but_reopenable() -> None:
    from lambdanet.engine.driver import safe_url

    assert safe_url("redis://:pw-1@10.0.0.5:6379/0") == "redis://:***@10.0.0.5:6379/0"
    assert safe_url("rediss://cache:6380/0?password=pw-2") == "rediss://cache:6380/0?password=***"
    assert safe_url("memory://") == "memory://" and safe_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_a_start_whose_data_cannot_be_written_leaves_no_run_and_the_same_id_starts_again(
        home: Path, data: Path) -> None:
    """The ledger row is the commit point: a caller that kept the id (a tune trial, a trigger) starts
    it again after a failed or killed start, instead of finding a run without data."""
    services = open_services()
    run_id = "r-20261128-000000-abcdef"
    blocker = home / "objects" / "runs" / run_id
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("a file where the run's folder goes")  # the data write fails (root ignores modes)
    request = TrainRequest(data=str(data), config=config(epochs=2), workers=1, strategy="data")
    with pytest.raises(LambdanetError):
        Driver(services).start(request, run_id)
    with pytest.raises(RunNotFound):
        services.ledger.get_run(run_id)
    blocker.unlink()
    assert Driver(services).start(request, run_id) == run_id
    res = Driver(services).drive(run_id)
    assert res.run_id == run_id and res.epochs_run == 2
    assert services.ledger.get_run(run_id).status == "completed"
