"""Live progress inside a round: while one long round of K = 2 process workers on a real
redis-server runs, its epochs reach the ledger (provisional rows), the notifier and the progress
sink about a second after the workers did them; the round's commit replaces those rows (one row
per epoch, none provisional), a retried attempt or a resumed run never duplicates a row or a
"Training update!" notification, and a round given up drops its provisional rows.

Each run is one round of 1200 epochs (~8 s); the ledger is read from a second Services, as
``lambdanet runs show`` or the dashboard would, every 0.1 s while the driver runs in a thread.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lambdanet.engine.driver import Driver, RunResult, TrainRequest
from lambdanet.errors import RunFailed
from lambdanet.services import Services
from tests.conftest import RedisServer
from tests.e2e.engine_support import RecordingSink, config, open_services, small_data

EPOCHS = 1200  # one round of them (~8 s here)
EVERY = 25  # report_every: a "Training update!" every 25 epochs
CFG = config(epochs=EPOCHS, batch_size=64, optimizer="adam", learning_rate=0.01, report_every=EVERY)
DEADLINE_S = 600.0  # the collective deadline: never waited out here
# the live rows trail the workers by the in-round checkpoint period (1 s) plus the driver's poll
# (0.25 s) and the K = 2 decision cadence (8 epochs); 3 s leaves room for a loaded machine
MAX_LAG_S = 3.0


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_data(tmp_path_factory.mktemp("cats16"))


class Notes:
    """A notifier that records every message (from the driver's threads)."""

    url = "notes://"

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def notify(self, subject: str, message: str, **fields: Any) -> None:
        with self._lock:
            self.sent.append({"subject": subject, "at": time.time(), **fields})

    def progress_epochs(self) -> list[int]:
        return [int(n["epoch"]) for n in self.sent if n.get("event") == "progress"]


Sink = RecordingSink


@dataclass
class Seen:
    at: float
    epochs: list[int]
    provisional: list[bool]
    committed: int  # the run's metrics.epochs_done: what its commits say


@dataclass
class Watched:
    run_id: str
    seen: list[Seen] = field(default_factory=list)
    result: RunResult | None = None
    error: BaseException | None = None

    def live(self) -> list[Seen]:
        """Reads that found epoch rows past the committed epochs: the running round's."""
        return [s for s in self.seen if s.epochs and s.epochs[-1] > s.committed]


def _request(data: Path, url: str, max_retries: int = 3) -> TrainRequest:
    return TrainRequest(data=str(data), config=CFG, workers=2, strategy="neuron", store_url=url, executor="process",
                        epochs_per_round=EPOCHS, collective_timeout_s=DEADLINE_S, max_retries=max_retries)


def _watch(driver: Driver, req: TrainRequest, run_id: str | None = None) -> Watched:
    """Drive the run in a thread; read the ledger from another Services every 0.1 s meanwhile."""
    if run_id is None:
        run_id = driver.start(req)
    watched = Watched(run_id)

    def drive() -> None:
        try:
            watched.result = driver.drive(run_id, store_url=req.store_url, executor_name=req.executor)
        except BaseException as exc:  # handed to the test
            watched.error = exc

    reader = open_services()
    thread = threading.Thread(target=drive)
    thread.start()
    try:
        while thread.is_alive():
            at = time.time()
            rows = reader.ledger.epochs(run_id)
            committed = int(reader.ledger.get_run(run_id).metrics.get("epochs_done", 0))
            watched.seen.append(Seen(at, [r.epoch for r in rows], [bool(r.extra.get("provisional")) for r in rows],
                                     committed))
            time.sleep(0.1)
    finally:
        thread.join()
        reader.close()
    return watched


def _assert_one_committed_row_per_epoch(services: Services, run_id: str) -> None:
    rows = services.ledger.epochs(run_id)
    assert [r.epoch for r in rows] == list(range(1, EPOCHS + 1))
    assert not any(r.extra.get("provisional") for r in rows)
    assert all(r.extra.get("round") == 1 for r in rows)


def _assert_each_update_once(notes: Notes) -> None:
    counts = Counter(notes.progress_epochs())
    assert counts == Counter(range(EVERY, EPOCHS + 1, EVERY)), counts


@pytest.mark.redis
@pytest.mark.timeout(180)
def test_epoch_rows_reach_the_ledger_while_a_single_long_round_runs(home: Path, data: Path,
                                                                   redis_server: RedisServer) -> None:
    services = open_services()
    notes, sink = Notes(), Sink()
    services.notifier = notes  # type: ignore[assignment]
    req = _request(data, redis_server.url)
    watched = _watch(Driver(services, sink), req)
    assert watched.error is None and watched.result is not None
    assert watched.result.status == "completed" and watched.result.rounds == 1 and watched.result.retries == 0

    # while round 1 ran (nothing committed), its rows grew in the ledger: provisional, from epoch 1 on
    live = watched.live()
    assert live, f"no epoch row before the round's commit ({len(watched.seen)} reads)"
    assert all(s.committed == 0 for s in live)
    assert len({s.epochs[-1] for s in live}) >= 3, [s.epochs[-1] for s in live]  # it moved, not once
    for s in live:
        assert s.epochs == list(range(1, s.epochs[-1] + 1)) and all(s.provisional)
        assert s.epochs[-1] < EPOCHS

    # ... at most about a second behind the workers: every epoch worker 0 had finished MAX_LAG_S
    # before a read was in that read (epoch end times from the call's end and the rows'
    # per-epoch seconds)
    call = next(c for c in services.ledger.calls(watched.run_id) if c.worker == 0 and c.ok)
    rows = services.ledger.epochs(watched.run_id)
    after = np.cumsum([r.seconds for r in rows][::-1])[::-1]  # after[i]: seconds of epochs i+1 … the last
    finished = [call.ended_at - (after[i] - rows[i].seconds) for i in range(EPOCHS)]  # epoch i+1's end
    for s in watched.seen:
        if s.at > call.ended_at - 0.5 or s.committed:
            continue
        due = sum(1 for f in finished if f <= s.at - MAX_LAG_S)
        got = s.epochs[-1] if s.epochs else 0
        assert got >= due, f"a read {call.ended_at - s.at:.2f} s before the round's end saw {got} epochs; " \
                           f"{due} were done {MAX_LAG_S} s before it"

    # the commit replaced them: one row per epoch, none provisional; every epoch once to the sink
    # and every tenth epoch's notification once
    _assert_one_committed_row_per_epoch(services, watched.run_id)
    assert sink.epochs == list(range(1, EPOCHS + 1))
    _assert_each_update_once(notes)
    live_notes = [n for n in notes.sent if n.get("event") == "progress" and n["at"] < live[-1].at]
    assert live_notes, "no notification was sent while the round ran"


@pytest.mark.redis
@pytest.mark.timeout(180)
def test_a_retried_round_leaves_one_row_and_one_notification_per_epoch(
        home: Path, data: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMBDANET_FAULTS", "1")  # inherited by the worker processes
    services = open_services()
    notes = Notes()
    services.notifier = notes  # type: ignore[assignment]
    driver = Driver(services, faults=[{"round": 1, "attempt": 0, "worker": 1, "action": "raise",
                                       "after_epochs": 700}], retry_backoff_s=0.05)
    req = _request(data, redis_server.url)
    watched = _watch(driver, req)
    assert watched.error is None and watched.result is not None
    assert watched.result.status == "completed" and watched.result.rounds == 1 and watched.result.retries == 1
    retry = services.ledger.get_run(watched.run_id).metrics["retry_log"]
    assert len(retry) == 1 and 0 < retry[0]["from_epoch"] <= 700

    # attempt 0 published rows and sent notifications before it failed; the retry re-trained the
    # epochs after its in-round checkpoint and the commit wrote every row of the round again
    sent = [n.get("event") for n in notes.sent]
    assert "retry" in sent and "progress" in sent[:sent.index("retry")], sent
    assert watched.live()
    _assert_one_committed_row_per_epoch(services, watched.run_id)
    _assert_each_update_once(notes)


@pytest.mark.redis
@pytest.mark.timeout(240)
def test_a_failed_round_drops_its_live_rows_and_the_resumed_run_notifies_each_epoch_once(
        home: Path, data: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMBDANET_FAULTS", "1")
    services = open_services()
    notes = Notes()
    services.notifier = notes  # type: ignore[assignment]
    driver = Driver(services, faults=[{"round": 1, "attempt": 0, "worker": 1, "action": "raise",
                                       "after_epochs": 700}])
    req = _request(data, redis_server.url, max_retries=0)
    failed = _watch(driver, req)
    assert isinstance(failed.error, RunFailed)
    run = services.ledger.get_run(failed.run_id)
    assert run.status == "failed" and run.metrics["epochs_done"] == 0
    assert failed.live(), "no live row while the failing round ran"
    assert services.ledger.epochs(failed.run_id) == []  # nothing committed: no row stays
    before = notes.progress_epochs()
    assert before and run.metrics["notified_epoch"] == before[-1]

    resumed = _watch(Driver(services), req, failed.run_id)
    assert resumed.error is None and resumed.result is not None and resumed.result.status == "completed"
    _assert_one_committed_row_per_epoch(services, failed.run_id)
    _assert_each_update_once(notes)  # the resumed driver did not send the failed round's again


def _ledger(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    from lambdanet.ledgers.sqlite import SqliteLedger

    if kind == "sqlite":
        return SqliteLedger.from_url(f"sqlite:///{tmp_path / 'ledger.db'}")
    from lambdanet.ledgers.dynamodb import DynamoLedger

    endpoint = request.getfixturevalue("moto_server")
    return DynamoLedger.from_url(f"dynamodb://live{time.time_ns()}?region=us-east-1&endpoint_url={endpoint}")


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("dynamodb", marks=pytest.mark.aws)])
def test_delete_epochs_drops_the_rows_past_an_epoch_of_one_run_only(kind: str, request: pytest.FixtureRequest,
                                                                     tmp_path: Path) -> None:
    from lambdanet.ports.ledger import EpochRow, RunRecord

    ledger = _ledger(kind, request, tmp_path)
    for run in ("r-a", "r-b"):
        ledger.create_run(RunRecord(run_id=run, status="running", kind="mlp", config={}, data="d"))
        ledger.upsert_epochs(run, [EpochRow(run, e, 1.0 / e, 0.01, 0.1, {"provisional": True}) for e in range(1, 31)])
    assert ledger.delete_epochs("r-a", after=12) == 18
    assert [r.epoch for r in ledger.epochs("r-a")] == list(range(1, 13))
    assert [r.epoch for r in ledger.epochs("r-b")] == list(range(1, 31))  # another run's rows stay
    assert ledger.delete_epochs("r-a", after=12) == 0
    ledger.close()
