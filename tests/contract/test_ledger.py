"""The Ledger contract: every adapter in FACTORIES["ledger"] must pass these."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from lambdanet.errors import RunNotFound
from lambdanet.ports import CallRow, EpochRow, Ledger, RunRecord


def _run(run_id: str, created_at: float = 0.0, **kw: Any) -> RunRecord:
    return RunRecord(run_id=run_id, status="running", kind="mlp",
                     config={"layers": 4, "neurons": {"layer1": 20}, "learning_rate": 0.0075},
                     data="../shared/datasets/catvnoncat/datasets.h5", created_at=created_at, **kw)


def test_is_a_ledger(ledger: Ledger) -> None:
    assert isinstance(ledger, Ledger)
    assert isinstance(ledger.url, str) and ledger.url


def test_create_and_get_round_trip(ledger: Ledger) -> None:
    run = _run("r-1", created_at=1700000000.25, model="itsacat", started_at=1700000001.5,
               metrics={"final_cost": 0.1 + 0.2, "tiny": 1e-300, "big": 1.7976931348623157e308})
    ledger.create_run(run)
    got = ledger.get_run("r-1")
    assert got == run  # every field, floats bit-exact, nested config
    assert got.metrics["final_cost"] == 0.30000000000000004


def test_created_at_is_filled_when_missing(ledger: Ledger) -> None:
    ledger.create_run(_run("r-1"))
    assert ledger.get_run("r-1").created_at > 1.6e9


def test_unknown_run_is_a_clear_error(ledger: Ledger) -> None:
    with pytest.raises(RunNotFound, match="no run 'nope' in the ledger"):
        ledger.get_run("nope")
    with pytest.raises(RunNotFound, match="nope"):
        ledger.update_run("nope", status="failed")


def test_list_runs_newest_first_with_limit(ledger: Ledger) -> None:
    for i, t in enumerate([100.0, 300.0, 200.0]):
        ledger.create_run(_run(f"r-{i}", created_at=t))
    assert [r.run_id for r in ledger.list_runs()] == ["r-1", "r-2", "r-0"]
    assert [r.run_id for r in ledger.list_runs(limit=2)] == ["r-1", "r-2"]


def test_update_merges_metrics_and_overwrites_fields(ledger: Ledger) -> None:
    ledger.create_run(_run("r-1", metrics={"train_accuracy": 0.5}))
    ledger.update_run("r-1", metrics={"test_accuracy": 0.8})
    ledger.update_run("r-1", status="completed", ended_at=123.5, stop_reason="epoch_limit",
                      model="itsacat:3", metrics={"train_accuracy": 0.98})
    got = ledger.get_run("r-1")
    assert got.metrics == {"train_accuracy": 0.98, "test_accuracy": 0.8}
    assert (got.status, got.ended_at, got.stop_reason, got.model) == ("completed", 123.5, "epoch_limit",
                                                                      "itsacat:3")
    assert got.config == _run("r-1").config  # untouched


def test_upsert_same_epoch_twice_leaves_one_row(ledger: Ledger) -> None:
    ledger.create_run(_run("r-1"))
    ledger.upsert_epochs("r-1", [EpochRow("r-1", 1, 0.7, 0.0075, 0.01)])
    ledger.upsert_epochs("r-1", [EpochRow("r-1", 1, 0.65, 0.0075, 0.02, extra={"test_accuracy": 0.7})])
    rows = ledger.epochs("r-1")
    assert len(rows) == 1
    assert (rows[0].cost, rows[0].seconds, rows[0].extra) == (0.65, 0.02, {"test_accuracy": 0.7})


def test_epochs_ordered_and_many_in_one_call(ledger: Ledger) -> None:
    ledger.create_run(_run("r-1"))
    ledger.create_run(_run("r-2"))
    costs = {e: 1.0 / e for e in range(1, 201)}
    order = list(costs)[::-1]  # written newest first
    ledger.upsert_epochs("r-1", [EpochRow("r-1", e, costs[e], 0.01, 0.001 * e) for e in order])
    ledger.upsert_epochs("r-2", [EpochRow("r-2", 1, 9.0, 0.01, 0.0)])
    rows = ledger.epochs("r-1")
    assert [r.epoch for r in rows] == list(range(1, 201))
    assert [r.cost for r in rows] == [costs[e] for e in range(1, 201)]
    assert all(r.run_id == "r-1" for r in rows)
    assert [r.cost for r in ledger.epochs("r-2")] == [9.0]
    assert ledger.epochs("unknown") == []


def test_concurrent_upserts_from_threads(ledger: Ledger) -> None:
    ledger.create_run(_run("r-1"))

    def write(worker: int) -> None:
        for e in range(worker * 25 + 1, worker * 25 + 26):
            ledger.upsert_epochs("r-1", [EpochRow("r-1", e, float(e), 0.1, 0.0)])

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.cost for r in ledger.epochs("r-1")] == [float(e) for e in range(1, 101)]


def test_calls_round_trip(ledger: Ledger) -> None:
    ledger.create_run(_run("r-1"))
    rows = [CallRow("r-1", 2, 1, w, 10.0 + w, 11.5 + w, ok=w != 1, error="exit code -9" if w == 1 else None)
            for w in (1, 0)]
    rows.append(CallRow("r-1", 1, 1, 0, 1.0, 2.0, ok=True))
    ledger.record_calls("r-1", rows)
    got = ledger.calls("r-1")
    assert [(c.round, c.attempt, c.worker) for c in got] == [(1, 1, 0), (2, 1, 0), (2, 1, 1)]
    assert got[2].ok is False and got[2].error == "exit code -9"
    assert got[1].ok is True and got[1].error is None and (got[1].started_at, got[1].ended_at) == (10.0, 11.5)
    assert ledger.calls("other") == []


def test_claim_is_idempotent(ledger: Ledger) -> None:
    key = "s3://bucket/training_input/datasets.h5#v1"
    assert ledger.claimed_by(key) is None
    assert ledger.claim(key, "r-1") is True
    assert ledger.claim(key, "r-1") is False
    assert ledger.claim(key, "r-2") is False
    assert ledger.claimed_by(key) == "r-1"
    assert ledger.claim(key + "-other", "r-2") is True


def test_claim_race_has_one_winner(ledger: Ledger) -> None:
    results: list[bool] = []
    lock = threading.Lock()

    def grab(i: int) -> None:
        won = ledger.claim("event-42", f"r-{i}")
        with lock:
            results.append(won)

    threads = [threading.Thread(target=grab, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    assert ledger.claimed_by("event-42") in {f"r-{i}" for i in range(8)}


# ---- the run's lease -----------------------------------------------------------------------------
def test_lease_is_exclusive_between_executions(ledger: Ledger) -> None:
    from lambdanet.errors import LeaseHeld

    first = ledger.acquire_lease("r-1", holder="exec-a/inv-1", execution="exec-a", ttl_s=600)
    assert (first.holder, first.generation) == ("exec-a/inv-1", 1)
    with pytest.raises(LeaseHeld, match="driven by exec-a/inv-1"):
        ledger.acquire_lease("r-1", holder="exec-b/inv-1", execution="exec-b", ttl_s=600)
    assert ledger.get_lease("r-1") == first  # the refused acquisition wrote nothing
    assert ledger.get_lease("r-other") is None


def test_a_replay_of_the_same_execution_takes_over_and_fences_the_old_invocation(ledger: Ledger) -> None:
    from lambdanet.errors import StaleDriver

    old = ledger.acquire_lease("r-1", holder="exec-a/inv-1", execution="exec-a", ttl_s=600)
    new = ledger.acquire_lease("r-1", holder="exec-a/inv-2", execution="exec-a", ttl_s=600)
    assert new.generation == old.generation + 1
    with pytest.raises(StaleDriver, match="lost its lease"):
        ledger.renew_lease("r-1", old, ttl_s=600)
    renewed = ledger.renew_lease("r-1", new, ttl_s=1200)
    assert renewed.generation == new.generation and renewed.expires_at > new.expires_at
    ledger.release_lease("r-1", old)  # a stale release removes nothing
    assert ledger.get_lease("r-1") is not None
    ledger.release_lease("r-1", renewed)
    assert ledger.get_lease("r-1") is None


def test_an_expired_or_named_dead_holder_can_be_taken_over(ledger: Ledger) -> None:
    lapsed = ledger.acquire_lease("r-1", holder="local:h:1", execution="local:h:1", ttl_s=-1)
    taken = ledger.acquire_lease("r-1", holder="local:h:2", execution="local:h:2", ttl_s=600)
    assert taken.generation == lapsed.generation + 1
    stolen = ledger.acquire_lease("r-1", holder="local:h:3", execution="local:h:3", ttl_s=600,
                                  steal_from="local:h:2")
    assert stolen.holder == "local:h:3" and stolen.generation == taken.generation + 1


def test_racing_acquisitions_have_one_winner(ledger: Ledger) -> None:
    from lambdanet.errors import LeaseHeld

    wins: list[str] = []
    losses: list[str] = []

    def take(i: int) -> None:
        try:
            ledger.acquire_lease("r-race", holder=f"exec-{i}/inv", execution=f"exec-{i}", ttl_s=600)
            wins.append(f"exec-{i}/inv")
        except LeaseHeld:
            losses.append(f"exec-{i}/inv")

    threads = [threading.Thread(target=take, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(losses) == 5
    lease = ledger.get_lease("r-race")
    assert lease is not None and lease.holder == wins[0] and lease.generation == 1
