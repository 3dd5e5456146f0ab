"""At K = 2 the driver that takes a run over aborts the replaced driver's in-flight round attempt:
the old workers, busy in a long round under a 600 s collective deadline, stop at their next
collective within seconds instead of training on (and writing in-round checkpoints of the very
round the new owner continues) until their round ends. Real parts: redis-server, the local
executor's worker threads, the SQLite ledger."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from lambdanet.engine.collectives import abort_attempt
from lambdanet.engine.driver import Driver, TrainRequest
from lambdanet.engine.session import DriverIdentity
from lambdanet.engine.worker import attempt_prefix, fence_key
from lambdanet.errors import StaleDriver
from tests.conftest import RedisServer
from tests.e2e.engine_support import config, open_services, small_data

pytestmark = [pytest.mark.redis, pytest.mark.slow]

DEADLINE_S = 600.0  # the collective deadline: never what ends a worker here
WITHIN_S = 10.0  # "within seconds" of the takeover (the round itself would run for minutes)


@pytest.mark.timeout(300)
def test_a_takeover_at_k2_aborts_the_replaced_drivers_workers_within_seconds(
        home: Path, tmp_path: Path, redis_server: RedisServer) -> None:
    data = small_data(tmp_path)
    cfg = config(epochs=200_000, batch_size=209, learning_rate=0.01)  # one round of minutes
    services = open_services()
    client: Any = redis.Redis.from_url(redis_server.url)
    old_error: list[BaseException] = []
    old_thread: threading.Thread | None = None
    run_id = ""
    try:
        driver = Driver(services)
        run_id = driver.start(TrainRequest(
            data=str(data), config=cfg, workers=2, strategy="neuron", store_url=redis_server.url,
            executor="local", epochs_per_round=200_000, round_seconds=600.0, collective_timeout_s=DEADLINE_S,
            checkpoint_seconds=0.5))
        old = driver.open_session(run_id, DriverIdentity.invocation("exec-1"))

        def drive_old() -> None:
            try:
                old.next_round()
            except BaseException as exc:  # the test looks at it
                old_error.append(exc)

        old_thread = threading.Thread(target=drive_old, daemon=True)
        old_thread.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not client.keys(f"ln:{run_id}:1:ckpt:latest"):
            time.sleep(0.05)
        assert client.keys(f"ln:{run_id}:1:ckpt:latest"), "round 1 never got going: the test proved nothing"
        assert old_thread.is_alive()

        taken = time.time()
        new = driver.open_session(run_id, DriverIdentity.invocation("exec-1"))  # a replay takes over
        old_thread.join(timeout=60)
        assert not old_thread.is_alive(), "the replaced driver's round went on"
        assert old_error and isinstance(old_error[0], StaleDriver), old_error  # it stopped, committed nothing
        calls = [c for c in services.ledger.calls(run_id) if c.round == 1]
        assert len(calls) == 2, calls
        for call in calls:  # both workers ended with the new owner's abort, within seconds
            assert not call.ok and "was replaced by" in str(call.error), call
            assert call.ended_at - taken < WITHIN_S, (call, call.ended_at - taken)
        # committed nothing: the only rows are the live progress the old driver wrote before it was
        # replaced (provisional, about once a second — how many depends on timing; the new owner's
        # first round replaces them), never a committed epoch
        rows = services.ledger.epochs(run_id)
        assert all(r.extra.get("provisional") is True and r.extra.get("round") == 1 for r in rows), rows[:3]
        new.close()
    finally:
        if old_thread is not None and old_thread.is_alive():  # stop a broken run's workers
            fence = client.get(fence_key(run_id))
            if fence is not None:
                from lambdanet.adapters import open_store

                store = open_store(redis_server.url)
                rnd, attempt = (int(x) for x in store.get(fence_key(run_id))[:2])
                abort_attempt(store, attempt_prefix(run_id, rnd, attempt), "test teardown", 2)
                store.close()
            old_thread.join(timeout=60)
        services.close()
