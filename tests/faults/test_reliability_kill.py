"""kill -9 of a worker at random points of a round, in the process and the Lithops localhost
executors: every run completes with the weights and epoch costs of a plain numpy training loop
(``reliability_kit.numpy_reference``, float32 tolerance), each epoch once.

Seeds (``LAMBDANET_FAULT_SEEDS``, default 10 per executor) pick where the kill lands:

* the engine's fault hook (``LAMBDANET_FAULTS=1``): worker k SIGKILLs itself after epoch 1 or 2
  of round 1 or 2 (after the last epoch = before its shard is written), sometimes again in the
  retry;
* for the process executor, half of the seeds use an outside killer instead: a thread SIGKILLs a
  random worker process at a random moment (setup, a collective, the shard write …) — one that
  has not handed its result back yet, so the kill is a fault the run must recover from.

Every run asserts the fault happened: at least one retry, and the killed call's row in the ledger
(its round, try and worker) failed with ``exit code -9`` — the process died of SIGKILL.

The counts (faults injected, runs survived) go to ``test-artifacts/reliability-counts.json``.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import RedisServer
from tests.security.reliability_counts import record
from tests.security.reliability_kit import (
    CONFIG,
    EPOCHS_PER_ROUND,
    WORKER_MARKER,
    Job,
    Killer,
    Outcome,
    assert_same_run,
    call_of_try,
)

pytestmark = [pytest.mark.slow, pytest.mark.redis]
SEEDS = list(range(int(os.environ.get("LAMBDANET_FAULT_SEEDS", "10"))))
ROUNDS = CONFIG["epochs"] // EPOCHS_PER_ROUND
TALLY: Counter[str] = Counter()


@pytest.fixture(scope="module", autouse=True)
def _faults_env() -> Iterator[None]:
    old = os.environ.get("LAMBDANET_FAULTS")
    os.environ["LAMBDANET_FAULTS"] = "1"  # inherited by worker processes and Lithops' runners
    yield
    if old is None:
        os.environ.pop("LAMBDANET_FAULTS", None)
    else:
        os.environ["LAMBDANET_FAULTS"] = old
    record("faults", {f"worker_kill_{k}": v for k, v in sorted(TALLY.items())}
           | {"worker_kill_command": "pytest tests/faults/test_reliability_kill.py"})


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Job:
    return Job(tmp_path_factory.mktemp("kill-job"))


@pytest.fixture(scope="module")
def reference(job: Job) -> Outcome:
    return job.reference()  # a plain numpy loop (reliability_kit.numpy_reference)


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("kill-redis")) as server:
        yield server


def hook_faults(seed: int, workers: int) -> list[dict[str, Any]]:
    """The kills a seed asks the engine's fault hook for (round, worker, epoch within the round)."""
    rng = random.Random(seed)
    rnd = rng.randint(1, ROUNDS)
    faults = [{"round": rnd, "attempt": 0, "worker": rng.randrange(workers), "action": "kill",
               "after_epochs": rng.randint(1, EPOCHS_PER_ROUND)}]
    if rng.random() < 0.3:  # the retry is killed too
        faults.append({"round": rnd, "attempt": 1, "worker": rng.randrange(workers), "action": "kill",
                       "after_epochs": rng.randint(1, EPOCHS_PER_ROUND)})
    return faults


def _check(out: Outcome, reference: Outcome, kills: int, executor: str) -> None:
    TALLY[f"{executor}_runs"] += 1
    assert out.status == "completed", out
    assert out.epochs == list(range(1, CONFIG["epochs"] + 1)), f"epochs in the ledger: {out.epochs}"
    assert_same_run(out, reference)
    if kills:
        assert out.retries >= 1 and out.failed_calls, "a worker was killed but no attempt failed"
    TALLY[f"{executor}_faults_injected"] += kills
    TALLY[f"{executor}_runs_survived"] += 1


def assert_killed(out: Outcome, faults: list[dict[str, Any]], error: str | None) -> None:
    """Each kill the hook was asked for happened: the call of its round, try and worker is in the
    ledger, failed (with ``error`` when given). A kill in try 1 always runs: try 0 was killed."""
    for f in faults:
        row = call_of_try(out.calls, f["round"], f["attempt"], f["worker"])
        assert row is not None and not row.ok, (f, out.calls)
        if error is not None:
            assert row.error == error, (f, row)


@pytest.mark.parametrize("seed", SEEDS)
def test_process_worker_killed(seed: int, job: Job, reference: Outcome, redis: RedisServer) -> None:
    if seed % 2 == 0:
        faults = hook_faults(seed, job.workers)
        out = job.train(redis.url, "process", faults=faults)
        _check(out, reference, len(faults), "process")
        assert_killed(out, faults, "exit code -9")
    else:
        killer = Killer(WORKER_MARKER, seed, max_delay_s=0.25)  # a round's workers live ~1 s on a quiet machine
        killer.start()
        try:
            out = job.train(redis.url, "process")
        finally:
            killer.stop()
        # the killer only kills a worker that has not handed its result back (checked while the
        # worker is stopped), so every kill must show as a failed call and a retry
        assert killer.killed, "the run ended before the killer found a live worker"
        _check(out, reference, len(killer.killed), "process")
        killed = [c for c in out.calls if not c.ok and c.error == "exit code -9"]
        assert len(killed) >= len(killer.killed), out.calls  # each victim's call: failed, died of SIGKILL


@pytest.mark.parametrize("seed", SEEDS)
def test_lithops_worker_killed(seed: int, job: Job, reference: Outcome, redis: RedisServer) -> None:
    faults = hook_faults(seed, job.workers)
    out = job.train(redis.url, "lithops", faults=faults)
    _check(out, reference, len(faults), "lithops")
    assert_killed(out, faults, None)

