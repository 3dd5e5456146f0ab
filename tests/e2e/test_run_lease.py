"""The run's lease on real runs: one driver at a time, a replaced driver commits nothing more, a
dead local driver's run can be resumed at once."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest

from lambdanet.engine.driver import Driver, TrainRequest
from lambdanet.engine.session import DriverIdentity
from lambdanet.errors import LeaseHeld, StaleDriver
from tests.e2e.engine_support import config, open_services, reference_run, small_data


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_data(tmp_path_factory.mktemp("lease16"))


CFG = config(epochs=6, batch_size=64, optimizer="adam", learning_rate=0.01)


def _request(data: Path) -> TrainRequest:
    return TrainRequest(data=str(data), config=CFG, model_name="lease", epochs_per_round=2)


def test_a_replaced_driver_commits_nothing_and_the_new_one_finishes_the_run(home: Path, data: Path) -> None:
    services = open_services()
    try:
        driver = Driver(services)
        run_id = driver.start(_request(data))
        old = driver.open_session(run_id, DriverIdentity.invocation("exec-1"))
        assert old.next_round().epochs_done == 2
        # a replay of the same execution (the platform retried a killed invocation) takes over
        new = driver.open_session(run_id, DriverIdentity.invocation("exec-1"))
        with pytest.raises(StaleDriver, match="lost its lease"):
            old.next_round()  # the old invocation, still running, trains a round it may not commit
        assert [r.epoch for r in services.ledger.epochs(run_id)] == [1, 2]  # nothing from the stale one
        old.close()  # a stale driver releases nothing and deletes nothing
        lease = services.ledger.get_lease(run_id)
        assert lease is not None and lease.holder == new.lease.holder and lease.generation == 2
        while not new.next_round().finished:
            pass
        result = new.finish()
        new.close()
        assert services.ledger.get_lease(run_id) is None
        assert [r.epoch for r in services.ledger.epochs(run_id)] == list(range(1, 7))
        weights = services.registry.load(str(result.model)).weights
    finally:
        services.close()
    ref = reference_run(CFG, data).params
    for name, value in ref.items():
        np.testing.assert_allclose(weights[name], value, rtol=1e-5, atol=1e-7, err_msg=name)


def test_a_second_driver_of_a_running_run_is_refused(home: Path, data: Path) -> None:
    services = open_services()
    try:
        driver = Driver(services)
        run_id = driver.start(_request(data))
        first = driver.open_session(run_id, DriverIdentity.invocation("exec-a"))
        with pytest.raises(LeaseHeld, match=f"run {run_id} is driven by exec-a/"):
            driver.resume(run_id)  # `lambdanet resume` while the first driver is alive
        with pytest.raises(LeaseHeld):
            driver.open_session(run_id, DriverIdentity.invocation("exec-b"))  # a duplicate execution
        assert first.next_round().epochs_done == 2  # the owner was not disturbed
        first.close()
    finally:
        services.close()


def test_a_run_whose_local_driver_died_is_resumed_at_once(home: Path, data: Path) -> None:
    services = open_services()
    try:
        driver = Driver(services)
        run_id = driver.start(_request(data))
        # a `lambdanet train` process on this host that was killed: its pid no longer exists
        proc = os.fork()
        if proc == 0:
            os._exit(0)
        os.waitpid(proc, 0)
        dead = f"local:{socket.gethostname()}:{proc}:abc123"
        services.ledger.acquire_lease(run_id, dead, dead, ttl_s=3600)
        result = driver.resume(run_id)
        assert result.status == "completed" and result.epochs_run == 6
    finally:
        services.close()
