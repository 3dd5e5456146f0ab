"""The worker function on its own (memory store, folder object store): it trains the round it is
given, refuses a fenced-off attempt, ignores a duplicate delivery, honours faults only when
LAMBDANET_FAULTS=1; and the Lambda cost arithmetic."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lambdanet import adapters
from lambdanet.data.readers import load_dataset
from lambdanet.engine import checkpoints
from lambdanet.engine.accounting import GB_SECOND_USD, Accounting
from lambdanet.engine.strategies import get_strategy, strategy_path
from lambdanet.engine.worker import fence_key, out_key, run_worker
from lambdanet.errors import ConfigError, StaleAttempt, WorkerFailed
from tests.e2e.engine_support import config, reference_run, small_data


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_data(tmp_path_factory.mktemp("cats16"))


def setup_run(tmp_path: Path, data: Path, cfg: Any) -> dict[str, Any]:
    objects_url = str(tmp_path / "objects")
    objects = adapters.open_objects(objects_url)
    run_id = f"r-test-{uuid.uuid4().hex[:6]}"
    ds = load_dataset(data)
    checkpoints.write_data(objects, run_id, ds)
    ptr = checkpoints.write_checkpoint(objects, run_id, 0, 0, get_strategy("mlp", "neuron").initial_state(cfg, ds))
    store_url = f"memory://worker-{uuid.uuid4().hex[:6]}"
    adapters.open_store(store_url).put(fence_key(run_id), np.array([1, 0]))
    return {"run_id": run_id, "round": 1, "attempt": 0, "worker": 0, "workers": 1,
            "strategy": strategy_path("mlp", "neuron"), "config": cfg.model_dump(), "store_url": store_url,
            "objects_url": objects_url, "checkpoint": ptr["file"], "start_epoch": 0, "end_epoch": 2,
            "round_seconds": 300, "collective_timeout_s": 5}


def test_worker_trains_its_round_and_a_duplicate_changes_nothing(tmp_path: Path, data: Path) -> None:
    cfg = config(epochs=2)
    spec = setup_run(tmp_path, data, cfg)
    res = run_worker(spec)
    assert res["duplicate"] is False and res["epochs"] == 2
    ref = reference_run(cfg, data)
    np.testing.assert_allclose(res["costs"], ref.costs, rtol=1e-12)
    store = adapters.open_store(spec["store_url"])
    prefix = f"ln:{spec['run_id']}:1:0"
    W1 = store.get(out_key(prefix, 0, "param.W1")).copy()
    np.testing.assert_allclose(W1, ref.params["W1"], rtol=1e-12)
    again = run_worker(dict(spec))
    assert again == {"worker": 0, "duplicate": True}
    np.testing.assert_array_equal(store.get(out_key(prefix, 0, "param.W1")), W1)


def test_worker_of_a_fenced_off_attempt_refuses_to_start(tmp_path: Path, data: Path) -> None:
    spec = setup_run(tmp_path, data, config(epochs=2))
    adapters.open_store(spec["store_url"]).put(fence_key(spec["run_id"]), np.array([1, 1]))  # a retry began
    with pytest.raises(StaleAttempt, match=r"round 1 attempt 0 of run .* is not current"):
        run_worker(spec)


def test_faults_only_with_the_environment_switch(tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = setup_run(tmp_path, data, config(epochs=2))
    spec["fault"] = {"action": "raise", "after_epochs": 1}
    monkeypatch.delenv("LAMBDANET_FAULTS", raising=False)
    assert run_worker(spec)["epochs"] == 2
    monkeypatch.setenv("LAMBDANET_FAULTS", "1")
    spec2 = setup_run(tmp_path, data, config(epochs=2))
    spec2["fault"] = {"action": "raise", "after_epochs": 1}
    with pytest.raises(WorkerFailed, match="injected fault in worker 0 after 1 epochs"):
        run_worker(spec2)


def test_unknown_strategy_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown strategy 'model' for a mlp model \\(allowed: data, neuron\\)"):
        strategy_path("mlp", "model")


def test_lambda_cost_estimate() -> None:
    acc = Accounting(memory_mb=1024)
    acc.add_call(1.0)
    acc.add_call(0.0004)  # billed as 1 ms
    assert acc.worker_calls == 2 and acc.billed_ms == 1001
    expected = 1.001 * 1.0 * GB_SECOND_USD + 2 * 0.20 / 1e6
    assert acc.estimated_cost_usd() == pytest.approx(expected, rel=1e-12)
    again = Accounting.from_metrics(acc.to_metrics(), memory_mb=2048)
    assert again.memory_mb == 1024 and again.billed_ms == 1001 and again.worker_calls == 2
