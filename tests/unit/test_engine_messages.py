"""The engine's typed messages and settings: every setting is checked once when a request is made,
reaches the worker spec and the recorded settings under its own name, and every message survives
a JSON round trip (no pickle)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from lambdanet import adapters
from lambdanet.config import itsacat_defaults, parse_config
from lambdanet.cpu_budget import plan_budget
from lambdanet.engine import checkpoints
from lambdanet.engine.messages import CheckpointPointer, Fault, RoundStep, WorkerResult, WorkerSpec
from lambdanet.engine.requests import (
    EngineSettings,
    RunSettings,
    TrainRequest,
    WorkerSettings,
    engine_settings,
    request_from_record,
)
from lambdanet.engine.rounds import RoundPlan, _specs
from lambdanet.engine.strategies import get_strategy, strategy_path
from lambdanet.errors import ConfigError
from lambdanet.ports.ledger import RunRecord
from lambdanet.tune.request import TrialState

CONFIG = parse_config({**itsacat_defaults(), "epochs": 3}, source="test")
# a value unlike its default for every worker setting (so a setting that is dropped or swapped shows)
ODD = {"workers": 3, "store_url": "redis://:pw@host:6379/2", "round_seconds": 41.0, "collective_timeout_s": 7.0,
       "checkpoint_seconds": 0.25, "cpu_threads": 2, "start_deadline_s": 33.0, "liveness_deadline_s": 4.5}


def odd_request(**more: object) -> TrainRequest:
    return TrainRequest.model_validate({"data": "d.h5", "config": CONFIG, **ODD, "strategy": "data",
                                        "executor": "process", "epochs_per_round": 5, "max_retries": 1,
                                        "lambda_memory_mb": 1024, "model_name": "cats", **more})


def test_every_worker_setting_of_the_request_reaches_every_worker_spec_under_its_name() -> None:
    assert set(ODD) == set(WorkerSettings.model_fields)  # the test covers every worker setting
    req = odd_request()
    plan = RoundPlan(run_id="r-1", req=req, strategy=get_strategy("mlp", "data"),
                     strategy_target=strategy_path("mlp", "data"), objects_url="/objects",
                     faults=[Fault(action="kill", round=2, worker=1)])
    specs = _specs(plan, 2, 9, "runs/r-1/checkpoints/round-00001.safetensors", 10, 15, 0, True)
    assert [s.worker for s in specs] == [0, 1, 2]
    for spec in specs:
        for name, value in ODD.items():
            assert getattr(spec, name) == value, name
        assert (spec.round, spec.attempt, spec.start_epoch, spec.end_epoch, spec.heartbeat) == (2, 9, 10, 15, True)
        again = WorkerSpec.from_json(json.loads(json.dumps(spec.to_json())))  # what crosses the executor
        assert again == spec and again.config == CONFIG
    assert [s.fault for s in specs] == [None, Fault(action="kill", round=2, worker=1), None]
    assert req.round_timeout_s == 41.0 + 2 * 7.0 + 120.0


def test_the_recorded_settings_give_back_the_same_request() -> None:
    req = odd_request(device="cpu")
    record = engine_settings(req, strategy_path("mlp", "data"), 1024, plan_budget("local", req.workers))
    assert record["store_url"] == "redis://:***@host:6379/2"  # no secret in the ledger
    rec = RunRecord(run_id="r-1", status="running", kind="mlp", config={**CONFIG.model_dump(), "engine": record},
                    data="d.h5", model="cats", created_at=0.0)
    with pytest.raises(ConfigError, match="pass the full URL with --store"):
        request_from_record(rec)
    back = request_from_record(rec, store_url=req.store_url)
    for name in RunSettings.model_fields:
        assert getattr(back, name) == getattr(req, name), name
    assert (back.data, back.config, back.model_name) == (req.data, req.config, req.model_name)
    assert EngineSettings.of_run(rec).cpu_budget.workers == 3  # the budget the executor applies, recorded


@pytest.mark.parametrize(("change", "message"), [
    ({"workers": 0}, "--workers must be at least 1, got 0"),
    ({"cpu_threads": 0}, "--cpu-threads must be at least 1, got 0"),
    ({"checkpoint_seconds": 0}, "--checkpoint-seconds must be a positive number of seconds, got 0"),
    ({"round_seconds": math.nan}, "--round-seconds must be a positive number of seconds, got nan"),
    ({"liveness_deadline_s": 601}, "--liveness-deadline must be a positive number of seconds of at most 600"),
    ({"max_retries": -1}, "--max-retries must be at least 0, got -1"),
    ({"wrkers": 2}, "unknown key 'wrkers' (did you mean 'workers'?)"),
])
def test_a_bad_setting_is_one_line_wherever_it_is_set(change: dict[str, object], message: str) -> None:
    for make in (lambda: RunSettings.model_validate(change), lambda: odd_request(**change),
                 lambda: RunSettings().replace(**change)):
        with pytest.raises(ConfigError) as caught:
            make()
        assert message in str(caught.value) and "\n" not in str(caught.value)
    spec = {"run_id": "r", "round": 1, "attempt": 0, "worker": 0, "strategy": "m:C", "config": CONFIG.model_dump(),
            "objects_url": "/o", "checkpoint": "f", "start_epoch": 0, "end_epoch": 1}
    assert WorkerSpec.from_json(spec).checkpoint_seconds == RunSettings().checkpoint_seconds  # absent: the default
    if set(change) <= set(WorkerSettings.model_fields):  # a worker setting: a worker checks it the same way
        with pytest.raises(ConfigError, match=re.escape(message)):
            WorkerSpec.from_json({**spec, **change})


def test_messages_read_back_what_they_wrote_and_ignore_what_they_do_not_know() -> None:
    result = WorkerResult(worker=1, epochs=2, costs=[0.5, 0.25], seconds=[0.1, 0.2], extras=[{"a": 1}, {}],
                          shard_keys=["param.W1"], checkpoints=1, checkpoint_write_seconds=0.01,
                          threads={"blas": 1, "openmp": None})
    assert WorkerResult.from_json(json.loads(json.dumps(result.to_json()))) == result
    step = RoundStep(round=3, epochs_done=30, epochs=40, finished=False, seconds=1.5, last_cost=0.3, handoff=True)
    assert RoundStep.from_json({**json.loads(json.dumps(step.to_json())), "from_a_newer_writer": 1}) == step


def test_a_checkpoint_pointer_keeps_a_diverged_cost(tmp_path: Path) -> None:
    objects = adapters.open_objects(str(tmp_path / "objects"))
    state = get_strategy("mlp", "neuron").initial_state(CONFIG, _dataset())
    written = checkpoints.write_checkpoint(objects, "r-1", 2, 7, state, stop_reason=None, last_cost=math.nan)
    read = checkpoints.read_pointer(objects, "r-1")
    assert read is not None and (read.round, read.epochs_done, read.file) == (2, 7, written.file)
    assert read.last_cost is not None and math.isnan(read.last_cost)
    assert isinstance(read, CheckpointPointer) and checkpoints.read_pointer(objects, "r-2") is None


def test_a_trial_state_is_a_partial_update_of_its_runs_metrics() -> None:
    metrics: dict[str, object] = {"epochs_done": 4, "worker_seconds": 1.0}  # the engine's own metrics
    for update in (TrialState(study="s", trial=3, params={"learning_rate": 0.01}, objective="cost"),
                   TrialState(validation=[(4, None, 0.5)], validation_cost=None),
                   TrialState(outcome="pruned", prune_reason="worse than the median")):
        metrics.update(json.loads(json.dumps(update.metrics())))  # as the ledger merges and stores them
    assert metrics["epochs_done"] == 4 and metrics["validation_cost"] is None and "fail_reason" not in metrics
    state = TrialState.of_metrics(metrics)
    assert (state.study, state.trial, state.outcome, state.prune_reason) == ("s", 3, "pruned", "worse than the median")
    assert state.validation == [(4, None, 0.5)] and state.params == {"learning_rate": 0.01}


def _dataset():  # type: ignore[no-untyped-def]
    import numpy as np

    from lambdanet.data.dataset import Dataset

    rng = np.random.default_rng(0)
    return Dataset(x_train=rng.integers(0, 255, (6, 64, 64, 3), dtype=np.uint8), y_train=np.array([0, 1] * 3),
                   x_test=None, y_test=None, classes=["non-cat", "cat"], source="")
