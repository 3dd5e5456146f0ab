"""The run's lease is short and kept alive: a holder that stopped renewing it — on another host,
where no pid can be checked — is taken over by ``lambdanet resume`` once its lease lapses (one TTL
at most, said in one line); a live holder, whose thread renews the lease, is never taken over.
Real parts: the ``lambdanet`` CLI in a subprocess and the SQLite ledger it shares with the test;
only the other host's holder string is made up. The TTL is set short (3 s) for the test."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from lambdanet.engine.driver import Driver, TrainRequest
from lambdanet.engine.session import DriverIdentity
from lambdanet.errors import LeaseHeld, StaleDriver
from tests.conftest import REPO
from tests.e2e.engine_support import config, open_services, small_data
from tests.security.seed import LAMBDANET, cli_env

TTL_S = 3
OTHER_HOST = "local:another-host:4242:c0ffee"  # a driver on another machine: its pid means nothing here
CFG = config(epochs=6, batch_size=64, optimizer="adam", learning_rate=0.01)


@pytest.fixture
def short_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMBDANET_LEASE_TTL_S", str(TTL_S))


def _start(tmp_path: Path) -> str:
    services = open_services()
    try:
        return Driver(services).start(TrainRequest(data=str(small_data(tmp_path)), config=CFG, model_name="lease",
                                                   epochs_per_round=2))
    finally:
        services.close()


def _resume(home: Path, run_id: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LAMBDANET, "resume", run_id, "--json"], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env=cli_env(home, LAMBDANET_LEASE_TTL_S=str(TTL_S)))


def _waiting_line(stderr: str) -> int:
    """The one line that says whose lease resume waits for and how long at most; the seconds."""
    lines = [line for line in stderr.splitlines() if "waiting at most" in line]
    assert len(lines) == 1, stderr
    assert OTHER_HOST in lines[0], lines[0]
    match = re.search(r"waiting at most (\d+) s", lines[0])
    assert match, lines[0]
    return int(match.group(1))


def test_a_holder_on_another_host_that_stopped_renewing_is_taken_over_within_the_ttl(
        home: Path, tmp_path: Path, short_lease: None) -> None:
    run_id = _start(tmp_path)
    services = open_services()
    try:  # the other host's driver took the lease, then died: nothing renews it any more
        dead = services.ledger.acquire_lease(run_id, OTHER_HOST, OTHER_HOST, ttl_s=TTL_S)
    finally:
        services.close()
    resumed = _resume(home, run_id)
    finished = time.time()
    assert resumed.returncode == 0, resumed.stderr
    assert _waiting_line(resumed.stderr) <= TTL_S  # it said whom it waited for, and at most one TTL
    assert finished >= dead.expires_at  # it waited for the lease to lapse (no pid to check over there)
    assert finished - dead.expires_at < 60  # then took over at once and trained (generous bound)
    result = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert result["status"] == "completed" and result["epochs_run"] == 6
    services = open_services()
    try:
        assert services.ledger.get_run(run_id).status == "completed"
        assert services.ledger.get_lease(run_id) is None  # released by the driver that finished
    finally:
        services.close()


def test_a_live_holder_that_renews_its_lease_is_never_taken_over(
        home: Path, tmp_path: Path, short_lease: None) -> None:
    run_id = _start(tmp_path)
    services = open_services()
    try:
        identity = DriverIdentity(OTHER_HOST, OTHER_HOST)
        live = Driver(services).open_session(run_id, identity)  # its thread renews every TTL/3
        first = services.ledger.get_lease(run_id)
        assert first is not None and first.holder == OTHER_HOST
        resumed = _resume(home, run_id)
        assert resumed.returncode == 4, (resumed.returncode, resumed.stderr)  # LeaseHeld: an engine refusal
        assert _waiting_line(resumed.stderr) <= TTL_S
        assert any(line.startswith("error: ") and "which is alive" in line and OTHER_HOST in line
                   for line in resumed.stderr.splitlines()), resumed.stderr
        time.sleep(2 * TTL_S)  # two TTLs without a commit: only the renewals keep the lease
        lease = services.ledger.get_lease(run_id)
        assert lease is not None and (lease.holder, lease.generation) == (OTHER_HOST, first.generation)
        assert lease.expires_at > time.time()
        with pytest.raises(LeaseHeld):
            Driver(services).open_session(run_id, DriverIdentity.local())
        assert live.next_round().epochs_done == 2  # the holder was never disturbed
        live.close()
        assert services.ledger.get_lease(run_id) is None
    finally:
        services.close()


def test_a_renewal_that_finds_the_lease_taken_marks_the_driver_stale(
        home: Path, tmp_path: Path, short_lease: None) -> None:
    run_id = _start(tmp_path)
    services = open_services()
    try:
        old = Driver(services).open_session(run_id, DriverIdentity.invocation("exec-1"))
        new = Driver(services).open_session(run_id, DriverIdentity.invocation("exec-1"))  # a replay took over
        deadline = time.monotonic() + 10 * TTL_S  # the keeper renews every TTL/3 (generous bound)
        while not old.stale and time.monotonic() < deadline:
            time.sleep(0.05)
        assert old.stale, "the old driver's keeper never noticed the takeover"  # without a call of its own
        with pytest.raises(StaleDriver):
            old.next_round()
        old.close()  # a stale driver releases nothing
        lease = services.ledger.get_lease(run_id)
        assert lease is not None and lease.holder == new.lease.holder
        assert new.next_round().epochs_done == 2
        new.close()
    finally:
        services.close()
