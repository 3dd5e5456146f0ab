"""The Executor contract for the ``local`` (threads) and ``process`` (one OS process per call)
executors: concurrent calls, one outcome per spec in order, failures as one line, timeouts, and
``on_failure`` for every failed call (once, as it happens)."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from lambdanet import adapters
from lambdanet.cpu_budget import THREAD_VARS
from lambdanet.executors.local import LocalExecutor
from lambdanet.executors.process import ProcessExecutor
from lambdanet.ports import CallOutcome, Executor
from lambdanet.testing import probes as probe
from tests.conftest import RedisServer


@pytest.fixture(params=["local", pytest.param("process", marks=pytest.mark.redis)])
def setup(request: pytest.FixtureRequest) -> Iterator[tuple[Executor, str]]:
    """(executor, a store URL its workers can all reach)."""
    if request.param == "local":
        yield adapters.open_executor("local"), f"memory://exec-{uuid.uuid4().hex[:8]}"
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        yield adapters.open_executor("process"), server.url


def test_calls_run_concurrently_and_outcomes_come_in_spec_order(setup: tuple[Executor, str]) -> None:
    executor, store_url = setup
    prefix = f"ln:exec-{uuid.uuid4().hex[:8]}"
    specs = [{"worker": k, "workers": 3, "store_url": store_url, "prefix": prefix, "timeout_s": 20}
             for k in range(3)]
    outcomes = executor.run(probe.meet, specs, timeout_s=60)
    assert [o.worker for o in outcomes] == [0, 1, 2]
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    assert [o.result["sum"] for o in outcomes] == [3.0, 3.0, 3.0]  # type: ignore[index]
    assert all(o.ended_at >= o.started_at > 0 for o in outcomes)
    pids = {o.result["pid"] for o in outcomes}  # type: ignore[index]
    assert len(pids) == (1 if executor.name == "local" else 3)
    adapters.open_store(store_url).delete_prefix(prefix)


def test_a_raising_call_is_one_failed_outcome(setup: tuple[Executor, str]) -> None:
    executor, _ = setup
    outcomes = executor.run(probe.fail, [{"worker": 0}], timeout_s=60)
    assert not outcomes[0].ok
    assert outcomes[0].error == "ValueError: probe failure in worker 0"
    ok = executor.run(probe.echo, [{"worker": 0, "x": [1, 2]}], timeout_s=60)[0]
    assert ok.ok and ok.result is not None and ok.result["x"] == [1, 2]


def test_a_call_past_the_timeout_is_reported(setup: tuple[Executor, str]) -> None:
    executor, _ = setup
    specs = [{"worker": 0, "seconds": 0.0}, {"worker": 1, "seconds": 30.0}]
    outcomes = executor.run(probe.sleep, specs, timeout_s=3.0)
    assert outcomes[0].ok
    assert not outcomes[1].ok and outcomes[1].error == "timed out after 3 s"


def test_process_worker_killed_with_sigkill_reports_exit_code() -> None:
    executor = adapters.open_executor("process")
    outcomes = executor.run(probe.crash, [{"worker": 0}], timeout_s=60)
    assert not outcomes[0].ok
    assert outcomes[0].error == "exit code -9"


@pytest.mark.parametrize("name", ["local", "process"])
def test_the_budget_is_each_worker_s_share_of_the_cores(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in THREAD_VARS:
        monkeypatch.delenv(var, raising=False)
    executor = adapters.open_executor(name)
    assert isinstance(executor, LocalExecutor | ProcessExecutor)
    cores = len(os.sched_getaffinity(0))  # the CPUs this process may use, written out here
    for k in (1, 2, 4):
        budget = executor.budget([{"worker": i} for i in range(k)])
        assert (budget.threads, budget.source, budget.cores) == (max(1, cores // k), "budget", cores)
    asked = executor.budget([{"worker": 0, "cpu_threads": 3}, {"worker": 1, "cpu_threads": 3}])
    assert (asked.threads, asked.source) == (3, "request")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "5")  # the user's setting wins over both
    user = executor.budget([{"worker": 0, "cpu_threads": 3}])
    assert (user.threads, user.source, user.user_env) == (5, "user env", {"OPENBLAS_NUM_THREADS": "5"})


def test_on_failure_gets_each_failed_call_once_and_never_a_success(setup: tuple[Executor, str]) -> None:
    executor, _ = setup
    seen: list[CallOutcome] = []
    lock = threading.Lock()

    def on_failure(o: CallOutcome) -> None:
        with lock:
            seen.append(o)

    outcomes = executor.run(probe.fail, [{"worker": 0}, {"worker": 1}], timeout_s=60, on_failure=on_failure)
    assert sorted((o.worker, o.error) for o in seen) == [(0, "ValueError: probe failure in worker 0"),
                                                         (1, "ValueError: probe failure in worker 1")]
    assert seen and all(o in outcomes for o in seen)  # the same outcomes run returns
    seen.clear()
    assert executor.run(probe.echo, [{"worker": 0}, {"worker": 1}], timeout_s=60, on_failure=on_failure)[0].ok
    assert seen == []
    executor.run(probe.sleep, [{"worker": 0, "seconds": 0.0}, {"worker": 1, "seconds": 30.0}], timeout_s=3.0,
                 on_failure=on_failure)
    assert [(o.worker, o.error) for o in seen] == [(1, "timed out after 3 s")]


def test_a_failing_on_failure_callback_never_loses_the_outcomes(setup: tuple[Executor, str]) -> None:
    executor, _ = setup

    def broken(o: CallOutcome) -> None:
        raise RuntimeError("callback bug")

    outcomes = executor.run(probe.fail, [{"worker": 0}, {"worker": 1}], timeout_s=60, on_failure=broken)
    assert [o.error for o in outcomes] == ["ValueError: probe failure in worker 0",
                                          "ValueError: probe failure in worker 1"]


def test_local_on_failure_comes_while_the_other_calls_still_run() -> None:
    """Worker 0 raises; workers 1 and 2 wait for an event that only on_failure sets. If the
    failure were reported when the round returns, they would wait out their 30 s guard."""
    release = threading.Event()

    def body(spec: dict[str, Any]) -> dict[str, Any]:
        if spec["worker"] == 0:
            raise ValueError("worker 0 breaks first")
        return {"released": release.wait(30)}

    reported: list[str | None] = []

    def on_failure(o: CallOutcome) -> None:
        reported.append(o.error)
        release.set()

    outcomes = adapters.open_executor("local").run(body, [{"worker": k} for k in range(3)], timeout_s=60,
                                                   on_failure=on_failure)
    assert reported == ["ValueError: worker 0 breaks first"]
    assert [o.result for o in outcomes[1:]] == [{"released": True}, {"released": True}]
