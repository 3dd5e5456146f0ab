"""Faults with real processes and a real redis-server: a worker killed with SIGKILL, a duplicate
delivery, the driver killed and resumed, Redis stopped and restarted, a missed deadline, Ctrl-C.
Every run that completes must hold the single-process network's weights."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from lambdanet.engine.driver import Driver, TrainRequest
from lambdanet.errors import RunFailed
from lambdanet.ports import Executor
from lambdanet.ports.executor import CallOutcome, WorkerFunction
from tests.conftest import REPO, RedisServer
from tests.e2e.engine_support import config, max_rel_diff, open_services, reference_run, small_data, weights_of


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_data(tmp_path_factory.mktemp("cats16"))


CFG = config(epochs=6, batch_size=64, optimizer="adam", learning_rate=0.01)


@pytest.fixture(scope="module")
def ref_params(data: Path) -> dict[str, Any]:
    return reference_run(CFG, data).params


def assert_each_epoch_once(services: Any, run_id: str, epochs: int) -> None:
    rows = services.ledger.epochs(run_id)
    assert [r.epoch for r in rows] == list(range(1, epochs + 1))


class Hook:
    """A ProgressSink that runs ``action`` once when epoch ``at`` is reported."""

    def __init__(self, at: int, action: Any) -> None:
        self.at, self.action, self.fired = at, action, False

    def start(self, total_epochs: int, done_epochs: int) -> None:
        pass

    def update(self, epoch: int, cost: float) -> None:
        if epoch == self.at and not self.fired:
            self.fired = True
            self.action()

    def finish(self) -> None:
        pass


@pytest.mark.redis
def test_worker_killed_mid_round_is_retried_to_the_same_weights(
        home: Path, data: Path, ref_params: dict[str, Any], redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMBDANET_FAULTS", "1")
    services = open_services()
    driver = Driver(services, faults=[{"round": 1, "attempt": 0, "worker": 1, "action": "kill", "after_epochs": 1}],
                    retry_backoff_s=0.05)
    res = driver.train(TrainRequest(data=str(data), config=CFG, workers=2, strategy="neuron",
                                    store_url=redis_server.url, executor="process", epochs_per_round=3,
                                    collective_timeout_s=3.0))
    assert res.status == "completed" and res.retries == 1
    assert max_rel_diff(weights_of(services, res), ref_params) <= 1e-9
    failed = [c for c in services.ledger.calls(res.run_id) if not c.ok]
    assert any(c.worker == 1 and c.error == "exit code -9" and (c.round, c.attempt) == (1, 0) for c in failed)
    assert_each_epoch_once(services, res.run_id, 6)


class DuplicatingExecutor:
    """Delivers every spec twice at once (as Lambda's async retries may), through a real executor;
    keeps every round's outcomes (``answers``)."""

    name = "duplicating"

    def __init__(self, inner: Executor) -> None:
        self.inner = inner
        self.in_process = inner.in_process
        self.answers: list[list[CallOutcome]] = []

    def run(self, fn: WorkerFunction, specs: list[dict[str, Any]], timeout_s: float,
            on_failure: Any = None, liveness: Any = None) -> list[CallOutcome]:
        outcomes = self.inner.run(fn, specs + [dict(s) for s in specs], timeout_s, on_failure=on_failure,
                                  liveness=liveness)
        self.answers.append(list(outcomes))
        return outcomes

    def close(self) -> None:
        self.inner.close()


@pytest.mark.redis
def test_duplicate_delivery_changes_nothing(home: Path, data: Path, ref_params: dict[str, Any],
                                            redis_server: RedisServer) -> None:
    from lambdanet import adapters

    services = open_services()
    executor = DuplicatingExecutor(adapters.open_executor("local"))
    driver = Driver(services, executor=executor)
    res = driver.train(TrainRequest(data=str(data), config=CFG, workers=3, strategy="data",
                                    store_url=redis_server.url, epochs_per_round=3))
    assert res.status == "completed" and res.retries == 0
    assert res.worker_calls == 2 * 2 * 3  # every call delivered twice, all of them counted
    assert max_rel_diff(weights_of(services, res), ref_params) <= 1e-9
    # each round: of the two deliveries of each worker's spec, one trained and one answered "duplicate"
    assert len(executor.answers) == 2
    for outcomes in executor.answers:
        assert all(o.ok for o in outcomes), outcomes
        duplicate = sorted(o.worker for o in outcomes if (o.result or {}).get("duplicate") is True)
        trained = sorted(o.worker for o in outcomes if not (o.result or {}).get("duplicate"))
        assert duplicate == trained == [0, 1, 2], outcomes
        assert all((o.result or {}).get("epochs") == 3 for o in outcomes if not (o.result or {}).get("duplicate"))
    # the ledger's timeline holds the calls that trained, each worker once per round, with their times
    calls = services.ledger.calls(res.run_id)
    assert sorted((c.round, c.worker) for c in calls) == [(r, k) for r in (1, 2) for k in range(3)]
    trained_times = sorted((o.started_at, o.ended_at) for outcomes in executor.answers for o in outcomes
                           if not (o.result or {}).get("duplicate"))
    assert sorted((c.started_at, c.ended_at) for c in calls) == trained_times


DRIVER_SCRIPT = """
import os, signal, sys
from lambdanet.engine.driver import Driver, TrainRequest
from lambdanet.services import Services
from lambdanet.settings import Settings
sys.path.insert(0, {repo!r})
from tests.e2e.engine_support import config

class KillAt:
    def start(self, total, done): pass
    def update(self, epoch, cost):
        if epoch == 4:  # round 2's epoch rows are written, its checkpoint is not
            os.kill(os.getpid(), signal.SIGKILL)
    def finish(self): pass

cfg = config(epochs=6, batch_size=64, optimizer="adam", learning_rate=0.01)
Driver(Services.open(Settings.from_env()), KillAt()).train(
    TrainRequest(data={data!r}, config=cfg, workers=2, strategy="neuron", epochs_per_round=2,
                 store_url={store!r}))
"""


@pytest.mark.redis
def test_driver_killed_then_resumed_gives_the_same_weights(home: Path, data: Path, ref_params: dict[str, Any],
                                                          redis_server: RedisServer) -> None:
    script = DRIVER_SCRIPT.format(repo=str(REPO), data=str(data), store=redis_server.url)
    proc = subprocess.run([sys.executable, "-c", script], env=dict(os.environ), capture_output=True, timeout=300)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    services = open_services()
    run = services.ledger.list_runs()[0]
    assert run.status == "running"  # the driver died without a word
    assert [r.epoch for r in services.ledger.epochs(run.run_id)] == [1, 2, 3, 4]
    res = Driver(services).resume(run.run_id)
    assert res.status == "completed" and res.epochs_run == 6
    assert max_rel_diff(weights_of(services, res), ref_params) <= 1e-9
    assert_each_epoch_once(services, run.run_id, 6)
    assert services.ledger.get_run(run.run_id).status == "completed"
    # round 2 ran twice (before the kill and after the resume) under two different attempt ids
    attempts = sorted({(c.round, c.attempt) for c in services.ledger.calls(run.run_id)})
    assert attempts == [(1, 0), (2, 1), (2, 2), (3, 3)]


@pytest.mark.redis
def test_redis_stopped_and_restarted_mid_run(home: Path, data: Path, ref_params: dict[str, Any],
                                             tmp_path: Path) -> None:
    server = RedisServer(tmp_path)  # a private server: the session one stays up
    server.start()
    try:
        def outage() -> None:
            server.stop()
            threading.Timer(1.0, server.start).start()

        services = open_services()
        res = Driver(services, Hook(2, outage), retry_backoff_s=0.3).train(
            TrainRequest(data=str(data), config=CFG, workers=2, strategy="neuron", store_url=server.url,
                         epochs_per_round=2, max_retries=6, collective_timeout_s=3.0))
        assert res.status == "completed" and res.retries >= 1
        assert max_rel_diff(weights_of(services, res), ref_params) <= 1e-9
        assert_each_epoch_once(services, res.run_id, 6)
    finally:
        server.stop()


def test_missed_deadline_retries_then_fails_clearly_and_resumes(
        home: Path, data: Path, ref_params: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LAMBDANET_FAULTS", "1")
    services = open_services()
    hang = {"round": "*", "attempt": "*", "worker": 1, "action": "hang", "seconds": 1.5, "after_epochs": 1}
    driver = Driver(services, faults=[hang], retry_backoff_s=0.05)
    with pytest.raises(RunFailed) as err:
        driver.train(TrainRequest(data=str(data), config=CFG, workers=2, strategy="neuron", epochs_per_round=3,
                                  max_retries=1, collective_timeout_s=0.5))
    msg = str(err.value)
    assert "round 1 failed after 2 attempt(s)" in msg and "waited 0.5 s" in msg and "resume" in msg
    run = services.ledger.list_runs()[0]
    assert run.status == "failed" and run.stop_reason == "error"
    assert run.error is not None and "DeadlineExceeded" in run.error
    assert run.metrics["retries"] == 1
    assert "Training Failed!" in capfd.readouterr().err
    res = Driver(services).resume(run.run_id)  # the fault is gone: it completes
    assert max_rel_diff(weights_of(services, res), ref_params) <= 1e-9


def test_ctrl_c_marks_the_run_interrupted_and_resume_finishes_it(home: Path, data: Path,
                                                                 ref_params: dict[str, Any]) -> None:
    def interrupt() -> None:
        raise KeyboardInterrupt

    services = open_services()
    with pytest.raises(KeyboardInterrupt):
        Driver(services, Hook(2, interrupt)).train(
            TrainRequest(data=str(data), config=CFG, workers=3, strategy="data", epochs_per_round=2))
    run = services.ledger.list_runs()[0]
    assert run.status == "interrupted" and run.stop_reason == "interrupted"
    res = Driver(services).resume(run.run_id)
    assert res.status == "completed"
    assert max_rel_diff(weights_of(services, res), ref_params) <= 1e-9
    assert_each_epoch_once(services, run.run_id, 6)
