"""Faults as a real cloud makes them: a worker that is stopped without exiting (``kill -STOP``,
never resumed: a frozen or hung function) and a worker that starts many seconds after its peers
(a cold start).

Real parts: redis-server, one OS process per worker (``process``), Lithops' localhost backend.
The stop is a real SIGSTOP of the worker's own process (the engine's fault hook,
``LAMBDANET_FAULTS=1``), seen from outside by a watcher that reads the worker's pid from its
claim in Redis and waits until the kernel reports the process stopped. Every run uses a
collective deadline of 600 s and a pytest timeout far below it: only the heartbeat can end the
stopped worker's attempt.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import redis

from lambdanet.engine.collectives import Collective
from lambdanet.engine.driver import Driver, TrainRequest
from lambdanet.engine.liveness import HEARTBEAT_PERIOD_S, AttemptLiveness, Heartbeat
from lambdanet.errors import AttemptAborted
from lambdanet.services import Services
from lambdanet.stores.redis import RedisStore
from tests.conftest import RedisServer
from tests.e2e.engine_support import config, max_rel_diff, open_services, reference_run, weights_of

DEADLINE_S = 600.0  # the collective deadline: never waited out here
LIVENESS_S = 3.0  # the default liveness deadline
CFG = config(epochs=300, batch_size=64, optimizer="adam", learning_rate=0.01)


class StopWatcher(threading.Thread):
    """Finds worker ``worker``'s pid of round 1 attempt 0 (its claim in Redis) and records when
    the kernel first reports that process stopped."""

    def __init__(self, url: str, worker: int) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(url)
        self.worker = worker
        self.pid: int | None = None
        self.stopped_at: float | None = None
        self.done = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + 120
        while self.pid is None and time.monotonic() < deadline and not self.done.is_set():
            keys = self.client.keys(f"ln:*:1:0:claim:w{self.worker}")
            if keys:
                self.pid = int(self.client.get(keys[0]) or 0)
            time.sleep(0.01)
        while self.pid and time.monotonic() < deadline and not self.done.is_set():
            with contextlib.suppress(psutil.Error):
                if psutil.Process(self.pid).status() == psutil.STATUS_STOPPED:
                    self.stopped_at = time.time()
                    return
            time.sleep(0.005)

    def kill(self) -> None:
        """Leave no stopped process behind (Lithops cannot kill one call)."""
        self.done.set()
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


def _stopped_run(services: Services, data: Path, url: str, executor: str, workers: int, stopped: int,
                 after: int) -> tuple[Any, StopWatcher]:
    watcher = StopWatcher(url, stopped)
    watcher.start()
    driver = Driver(services, faults=[{"round": 1, "attempt": 0, "worker": stopped, "action": "stop",
                                       "after_epochs": after}], retry_backoff_s=0.05)
    try:
        res = driver.train(TrainRequest(data=str(data), config=CFG, workers=workers, strategy="neuron",
                                        store_url=url, executor=executor, collective_timeout_s=DEADLINE_S,
                                        checkpoint_seconds=0.5))
    finally:
        watcher.join(timeout=1)
        watcher.kill()
    return res, watcher


def _assert_stall_handled(services: Services, res: Any, watcher: StopWatcher, stopped: int, workers: int,
                          after: int, data: Path) -> None:
    assert watcher.stopped_at is not None, "the worker process was never seen stopped"
    assert res.status == "completed" and res.rounds == 1 and res.retries == 1
    reason = f"worker {stopped}: no heartbeat for {LIVENESS_S:g} s"
    log = list(services.ledger.get_run(res.run_id).metrics.get("retry_log") or [])
    assert len(log) == 1 and log[0]["round"] == 1 and log[0]["reason"] == reason
    assert 0 < log[0]["from_epoch"] <= after  # an in-round checkpoint, not the round's first epoch
    calls = [c for c in services.ledger.calls(res.run_id) if c.round == 1]
    first = {c.worker: c for c in calls if c.attempt == min(c.attempt for c in calls)}
    assert sorted(first) == list(range(workers)) and not any(c.ok for c in first.values())
    assert first[stopped].error == reason.split(": ", 1)[1]
    for k, c in first.items():
        if k != stopped:  # every peer ended by the abort, within the deadline plus one heartbeat period
            assert c.error == f"AttemptAborted: {reason}", c.error
            assert c.ended_at - watcher.stopped_at <= LIVENESS_S + HEARTBEAT_PERIOD_S + 1.5
    assert [r.epoch for r in services.ledger.epochs(res.run_id)] == list(range(1, 301))
    assert max_rel_diff(weights_of(services, res), reference_run(CFG, data).params) <= 1e-9


@pytest.mark.redis
@pytest.mark.timeout(240)
def test_kill_stop_of_one_of_four_process_workers_is_found_by_its_heartbeat(
        home: Path, data: Path, redis_server: RedisServer, faults_on: None) -> None:
    services = open_services()
    res, watcher = _stopped_run(services, data, redis_server.url, "process", workers=4, stopped=2, after=150)
    _assert_stall_handled(services, res, watcher, stopped=2, workers=4, after=150, data=data)
    assert not psutil.pid_exists(watcher.pid or 0) or psutil.Process(watcher.pid).status() == psutil.STATUS_ZOMBIE
    # what a user reads: one line with the reason, in `runs show` and in the report
    log = services.ledger.get_run(res.run_id).metrics["retry_log"]
    line = (f"round 1 attempt {log[0]['attempt']}: worker 2: no heartbeat for 3 s "
            f"(retried from epoch {log[0]['from_epoch']})")
    assert f"retry: {line}" in _cli(home, "runs", "show", res.run_id).splitlines()
    _cli(home, "report", res.run_id, "--out", str(home / "report.html"))
    assert line in (home / "report.html").read_text()


def _cli(home: Path, *args: str) -> str:
    """``lambdanet ARGS`` in a subprocess on the test's home; its stdout (exit code 0 asserted)."""
    done = subprocess.run([sys.executable, "-m", "lambdanet", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "LAMBDANET_HOME": str(home), "COLUMNS": "400"})
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.redis
@pytest.mark.timeout(120)
def test_a_worker_later_than_the_start_deadline_is_retried_with_a_clear_reason(
        home: Path, data: Path, redis_server: RedisServer, faults_on: None) -> None:
    """Worker 1 of attempt 0 starts 6 s late (a cold start) and the start deadline is 2 s: the
    attempt fails with "did not start within 2 s", the retry (no fault) completes the run, and
    `runs show` says why in one line."""
    services = open_services()
    driver = Driver(services, faults=[{"round": 1, "attempt": 0, "worker": 1, "action": "late", "seconds": 6}],
                    retry_backoff_s=0.05)
    cfg = config(epochs=30, batch_size=64)
    res = driver.train(TrainRequest(data=str(data), config=cfg, workers=2, strategy="data", store_url=redis_server.url,
                                    executor="process", collective_timeout_s=DEADLINE_S, start_deadline_s=2.0))
    assert res.status == "completed" and res.retries == 1
    log = services.ledger.get_run(res.run_id).metrics["retry_log"]
    assert [e["reason"] for e in log] == ["worker 1: did not start within 2 s"]
    line = f"retry: round 1 attempt {log[0]['attempt']}: worker 1: did not start within 2 s (retried from epoch 0)"
    assert line in _cli(home, "runs", "show", res.run_id).splitlines()
    assert max_rel_diff(weights_of(services, res), reference_run(cfg, data).params) <= 1e-9


@pytest.mark.redis
@pytest.mark.timeout(240)
def test_kill_stop_of_one_of_two_lithops_workers_is_found_by_its_heartbeat(
        home: Path, data: Path, redis_server: RedisServer, faults_on: None) -> None:
    services = open_services()
    res, watcher = _stopped_run(services, data, redis_server.url, "lithops://localhost", workers=2, stopped=1,
                                after=150)
    _assert_stall_handled(services, res, watcher, stopped=1, workers=2, after=150, data=data)


@pytest.mark.redis
@pytest.mark.timeout(120)
def test_a_late_worker_is_waited_for_and_every_rank_gets_the_same_sum(redis_server: RedisServer) -> None:
    """K = 3, one rank 7 s late and, in other groups at the same time, 20 s late (collective
    deadline 60 s), each with and without a liveness watch (without one a collective hands the
    store a single 60 s wait): the early ranks' waits outlast redis-py's 5 s default socket
    timeout many times over, and every rank still gets the worker-order sum — no abort, no
    missing part."""
    rng = np.random.default_rng(3)
    parts = [rng.standard_normal(5000) for _ in range(3)]
    want = (parts[0] + parts[1]) + parts[2]  # a plain loop: worker order
    results: dict[tuple[int, bool, int], np.ndarray] = {}
    errors: list[BaseException] = []

    def rank(late_s: int, watched: bool, k: int) -> None:
        prefix = f"ln:late-{late_s}-{watched}:1:0"
        store = RedisStore.from_url(redis_server.url)
        try:
            if k == 2:
                time.sleep(late_s)
            watch = AttemptLiveness(store, prefix, 3, start_deadline_s=120, liveness_deadline_s=LIVENESS_S)
            with Heartbeat(redis_server.url, prefix, k, LIVENESS_S):
                comm = Collective(store, prefix, k, 3, timeout_s=60, liveness=watch if watched else None)
                total = comm.all_reduce(parts[k])
                comm.barrier()
            results[(late_s, watched, k)] = total
        except BaseException as exc:
            errors.append(exc)
        finally:
            store.close()

    groups = [(late, watched) for late in (7, 20) for watched in (True, False)]
    threads = [threading.Thread(target=rank, args=(*g, k)) for g in groups for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for g in groups:
        for k in range(3):
            assert np.array_equal(results[(*g, k)], want)


@pytest.mark.redis
def test_an_arrival_sent_twice_counts_once(redis_server: RedisServer) -> None:
    """redis-py sends a pipeline again after a read timeout or a dropped connection — the arrival
    script included. Sent twice, an arrival counts once and the release is pushed once (with a
    counter, the second send of rank 0 would have released a step rank 1 never reached)."""
    store = RedisStore.from_url(redis_server.url)
    client = redis.Redis.from_url(redis_server.url)
    p = "ln:twice:1:0:1"

    def arrive(rank: int) -> int:
        return store.arrive(f"{p}:w{rank}", np.full(2, float(rank)), f"{p}:n", 2, f"{p}:go", b"1", [], rank=rank)

    try:
        assert arrive(0) == 1 and arrive(0) == 1  # the second send: still one rank arrived
        assert client.llen(f"{p}:go") == 0  # not released: rank 1 has not arrived
        assert arrive(1) == 2 and arrive(1) == 2
        assert client.llen(f"{p}:go") == 2  # released once: one token per rank
    finally:
        store.close()


@pytest.mark.redis
@pytest.mark.timeout(60)
def test_a_peer_that_never_starts_fails_by_the_start_deadline(redis_server: RedisServer) -> None:
    """Worker 1 never comes (no heartbeat, no start mark): worker 0's collective aborts the attempt
    with "did not start within …" once the start deadline passes, not at the collective deadline."""
    store = RedisStore.from_url(redis_server.url)
    prefix = "ln:never:1:0"
    try:
        watch = AttemptLiveness(store, prefix, 2, start_deadline_s=2.0, liveness_deadline_s=LIVENESS_S)
        with Heartbeat(redis_server.url, prefix, 0, LIVENESS_S), pytest.raises(AttemptAborted) as err:
            Collective(store, prefix, 0, 2, timeout_s=DEADLINE_S, liveness=watch).barrier()
        assert str(err.value) == "worker 1: did not start within 2 s"
    finally:
        store.close()


@pytest.mark.redis
@pytest.mark.timeout(60)
def test_a_peer_whose_heartbeat_lapses_aborts_the_wait_of_the_others(redis_server: RedisServer) -> None:
    """Worker 1 marked itself started and beat once (time to live 1 s), then nothing — as a process
    stopped right after its start would leave it. Worker 0, blocked in a collective with a 600 s
    deadline and no driver, aborts the attempt itself with worker 1's lapse as the reason."""
    store = RedisStore.from_url(redis_server.url)
    prefix = "ln:lapse:1:0"
    try:
        store.set_expiring(f"{prefix}:hb:w1", b"1", 1.0)  # the one beat worker 1 made
        store.set_if_absent(f"{prefix}:up:w1", b"1")
        watch = AttemptLiveness(store, prefix, 2, start_deadline_s=120, liveness_deadline_s=1.0)
        with Heartbeat(redis_server.url, prefix, 0, 1.0), pytest.raises(AttemptAborted) as err:
            Collective(store, prefix, 0, 2, timeout_s=DEADLINE_S, liveness=watch).barrier()
        assert str(err.value) == "worker 1: no heartbeat for 1 s"
    finally:
        store.close()
