"""Fail fast, lose little: a dead or raising worker aborts its attempt at once (its peers stop at
their next collective, not after the collective deadline), the round's reason names the worker
that failed first, and the retry starts from the newest in-round checkpoint — with every epoch
row once and the weights of an undisturbed run.

Real parts: redis-server, one OS process per worker (``process``), Lithops' localhost backend;
faults are the engine's hook (``LAMBDANET_FAULTS=1``: kill -9 / raise after n epochs). Every
run here uses ``collective_timeout_s=600`` and a pytest timeout far below it, so a test that
waited out a deadline would fail.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lambdanet.config import MLPConfig
from lambdanet.engine.driver import Driver, TrainRequest
from lambdanet.errors import RunFailed
from lambdanet.services import Services
from tests.conftest import RedisServer
from tests.e2e.engine_support import config, max_rel_diff, open_services, reference_run, weights_of

DEADLINE_S = 600.0  # the collective deadline: never waited out here (pytest timeouts are far below)


def _retry_log(services: Services, run_id: str) -> list[dict[str, Any]]:
    return list(services.ledger.get_run(run_id).metrics.get("retry_log") or [])


def _assert_each_epoch_once(services: Services, run_id: str, epochs: int) -> list[float]:
    rows = services.ledger.epochs(run_id)
    assert [r.epoch for r in rows] == list(range(1, epochs + 1))
    return [r.cost for r in rows]


def _assert_aborted_at_once(services: Services, run_id: str, killed: int, workers: int, reason: str) -> None:
    """Attempt 0 failed: the killed worker with ``reason``, every peer with the AttemptAborted echo
    of it, each within seconds of the kill (the deadline is 600 s)."""
    calls = [c for c in services.ledger.calls(run_id) if c.round == 1]
    first = min(c.attempt for c in calls)
    failed = {c.worker: c for c in calls if c.attempt == first}
    assert sorted(failed) == list(range(workers)) and not any(c.ok for c in failed.values())
    assert failed[killed].error == reason.split(": ", 1)[1]
    for k, c in failed.items():
        if k != killed:
            assert c.error == f"AttemptAborted: {reason}", c.error
            assert c.ended_at - failed[killed].ended_at < 10.0  # woken by the abort, not the deadline


KILL_CFG = config(epochs=300, batch_size=64, optimizer="adam", learning_rate=0.01)


def _kill_run(services: Services, data: Path, url: str, executor: str, workers: int, killed: int,
              after: int) -> Any:
    driver = Driver(services, faults=[{"round": 1, "attempt": 0, "worker": killed, "action": "kill",
                                       "after_epochs": after}], retry_backoff_s=0.05)
    return driver.train(TrainRequest(data=str(data), config=KILL_CFG, workers=workers, strategy="neuron",
                                     store_url=url, executor=executor, collective_timeout_s=DEADLINE_S,
                                     checkpoint_seconds=0.5))  # one round of 300 epochs (~10 s)


@pytest.mark.redis
@pytest.mark.timeout(240)
def test_kill_9_of_one_of_four_process_workers_retries_from_an_in_round_checkpoint(
        home: Path, data: Path, redis_server: RedisServer, faults_on: None) -> None:
    services = open_services()
    res = _kill_run(services, data, redis_server.url, "process", workers=4, killed=2, after=150)
    assert res.status == "completed" and res.rounds == 1 and res.retries == 1
    log = _retry_log(services, res.run_id)
    assert len(log) == 1 and log[0]["round"] == 1 and log[0]["reason"] == "worker 2: exit code -9"
    assert 0 < log[0]["from_epoch"] <= 150  # an in-round checkpoint, not the round's first epoch
    _assert_aborted_at_once(services, res.run_id, killed=2, workers=4, reason="worker 2: exit code -9")
    _assert_each_epoch_once(services, res.run_id, 300)
    assert max_rel_diff(weights_of(services, res), reference_run(KILL_CFG, data).params) <= 1e-9


@pytest.mark.redis
@pytest.mark.timeout(240)
def test_kill_9_of_one_of_two_lithops_workers_retries_from_an_in_round_checkpoint(
        home: Path, data: Path, redis_server: RedisServer, faults_on: None) -> None:
    services = open_services()
    res = _kill_run(services, data, redis_server.url, "lithops://localhost", workers=2, killed=1, after=150)
    assert res.status == "completed" and res.rounds == 1 and res.retries == 1
    log = _retry_log(services, res.run_id)
    assert len(log) == 1 and log[0]["reason"] == "worker 1: exit code -9"  # what Lithops' localhost reports
    assert 0 < log[0]["from_epoch"] <= 150
    _assert_aborted_at_once(services, res.run_id, killed=1, workers=2, reason="worker 1: exit code -9")
    _assert_each_epoch_once(services, res.run_id, 300)
    assert max_rel_diff(weights_of(services, res), reference_run(KILL_CFG, data).params) <= 1e-9


@pytest.mark.timeout(60)
def test_a_raising_worker_aborts_its_peers_with_its_own_reason(home: Path, data: Path, faults_on: None) -> None:
    services = open_services()
    driver = Driver(services, faults=[{"round": 1, "worker": 1, "action": "raise", "after_epochs": 2}])
    with pytest.raises(RunFailed) as err:
        driver.train(TrainRequest(data=str(data), config=config(epochs=6, batch_size=64), workers=3,
                                  strategy="neuron", store_url="memory://raise-aborts", max_retries=0,
                                  collective_timeout_s=DEADLINE_S))
    reason = "worker 1: WorkerFailed: injected fault in worker 1 after 2 epochs"
    assert reason in str(err.value)
    run = services.ledger.get_run(services.ledger.list_runs()[0].run_id)
    assert run.status == "failed" and run.error == f"round 1 failed after 1 attempt(s): {reason}"
    _assert_aborted_at_once(services, run.run_id, killed=1, workers=3, reason=reason)


def _memory_run(services: Services, cfg: MLPConfig, data: Path, strategy: str, workers: int, name: str,
                faults: list[dict[str, Any]]) -> Any:
    return Driver(services, faults=faults, retry_backoff_s=0.0).train(
        TrainRequest(data=str(data), config=cfg, workers=workers, strategy=strategy, store_url=f"memory://{name}",
                     executor="local", collective_timeout_s=DEADLINE_S, checkpoint_seconds=1e-6,
                     model_name=name))


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("strategy", "workers"), [("neuron", 2), ("data", 2), ("neuron", 1)])
def test_in_round_checkpoint_resumes_to_identical_weights(home: Path, data: Path, faults_on: None,
                                                          strategy: str, workers: int) -> None:
    """checkpoint_seconds ~0: a checkpoint at every decision (every 8 epochs with K = 2, every
    epoch with K = 1); a raise after epoch 20 resumes from epoch 16 (K = 2) / 19 (K = 1) and ends
    bit-identical to the undisturbed run, with the same cost in every epoch row."""
    cfg = config(epochs=30, batch_size=64, optimizer="adam", learning_rate=0.01)
    services = open_services()
    clean = _memory_run(services, cfg, data, strategy, workers, f"clean-{strategy}-{workers}", [])
    hurt = _memory_run(services, cfg, data, strategy, workers, f"hurt-{strategy}-{workers}",
                       [{"round": 1, "attempt": 0, "worker": workers - 1, "action": "raise", "after_epochs": 20}])
    assert clean.rounds == hurt.rounds == 1 and clean.retries == 0 and hurt.retries == 1
    log = _retry_log(services, hurt.run_id)
    assert [e["from_epoch"] for e in log] == [16 if workers > 1 else 19]
    assert log[0]["reason"] == (f"worker {workers - 1}: WorkerFailed: injected fault in worker {workers - 1} "
                                f"after 20 epochs")
    want, got = weights_of(services, clean), weights_of(services, hurt)
    assert sorted(got) == sorted(want) and all(np.array_equal(got[k], want[k]) for k in want)
    assert _assert_each_epoch_once(services, hurt.run_id, 30) == _assert_each_epoch_once(services, clean.run_id, 30)
    assert max_rel_diff(got, reference_run(cfg, data).params) <= 1e-9


@pytest.mark.timeout(300)
def test_torch_data_strategy_in_round_checkpoint_resumes_to_identical_weights(
        home: Path, tmp_path: Path, faults_on: None) -> None:
    from lambdanet.config import CNNConfig
    from tests.support.cnn import cifar_subset

    x, y, xt, yt = cifar_subset(n_train=200, n_test=100)
    np.savez(tmp_path / "cifar10_train.npz", x=x, y=y.astype(np.uint8))
    np.savez(tmp_path / "cifar10_test.npz", x=xt, y=yt.astype(np.uint8))
    cfg = CNNConfig(model="lenet", epochs=3, batch_size=50, augment=True, seed=3)
    services = open_services()

    def run(name: str, faults: list[dict[str, Any]]) -> Any:
        return Driver(services, faults=faults, retry_backoff_s=0.0).train(
            TrainRequest(data=str(tmp_path / "cifar10_train.npz"), config=cfg, model_name=name, workers=2,
                         strategy="data", store_url=f"memory://{name}", executor="local", epochs_per_round=3,
                         collective_timeout_s=DEADLINE_S, checkpoint_seconds=1e-6))

    clean = run("cnn-clean", [])
    hurt = run("cnn-hurt", [{"round": 1, "attempt": 0, "worker": 1, "action": "raise", "after_epochs": 2}])
    assert clean.rounds == hurt.rounds == 1 and hurt.retries == 1
    assert [e["from_epoch"] for e in _retry_log(services, hurt.run_id)] == [1]
    want, got = weights_of(services, clean), weights_of(services, hurt)
    assert all(np.array_equal(got[k], want[k]) for k in want)
    rows_clean, rows_hurt = services.ledger.epochs(clean.run_id), services.ledger.epochs(hurt.run_id)
    assert [r.epoch for r in rows_hurt] == [1, 2, 3]
    assert [r.cost for r in rows_hurt] == [r.cost for r in rows_clean]
    assert [r.extra["test_accuracy"] for r in rows_hurt] == [r.extra["test_accuracy"] for r in rows_clean]


@pytest.mark.timeout(120)
def test_cli_checkpoint_seconds_reaches_the_run(home: Path, data: Path, tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    params = tmp_path / "parameters.json"
    params.write_text(json.dumps({"epochs": 4, "layers": 2, "activations": {"layer1": "relu", "layer2": "sigmoid"},
                                  "neurons": {"layer1": 5, "layer2": 1}, "learning_rate": 0.01, "batch_size": 64}))

    def train(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "lambdanet", "train", str(data), "-p", str(params), "-k", "2",
                               "--json", *extra], capture_output=True, text=True, env=dict(os.environ), timeout=100)

    bad = train("--checkpoint-seconds", "0")
    assert bad.returncode == 2 and "--checkpoint-seconds must be a positive number of seconds, got 0" in bad.stderr
    ok = train("--checkpoint-seconds", "0.25")
    assert ok.returncode == 0, ok.stderr[-2000:]
    run_id = json.loads(ok.stdout.strip().splitlines()[-1])["run_id"]
    assert open_services().ledger.get_run(run_id).config["engine"]["checkpoint_seconds"] == 0.25
