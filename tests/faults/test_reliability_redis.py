"""Redis stopped and restarted mid-run; duplicate deliveries of worker calls; duplicate S3 events.

* ``redis-server`` is SIGKILLed at a random point of a process-executor run (after 0, 2 or 4 of
  8 epochs are checkpointed, plus 0–0.4 s, while a worker is live) and restarted (empty: no
  persistence) after a random pause: the run completes with the undisturbed weights and each
  epoch once, and at least one attempt failed and was retried (the fault happened).
* Every round, a wrapper executor delivers a random subset of the worker calls twice at the same
  time, and re-delivers the previous round's calls (stale attempts, as a late Lambda retry): the
  weights are unchanged; the duplicates answer "duplicate", the stale ones are fenced off.
* The same S3 ``ObjectCreated`` event is handled by four concurrent Lambda invocations and twice
  more afterwards (moto's S3 server): exactly one run, one model version, one results file.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lambdanet.ports.executor import CallOutcome
from tests.conftest import RedisServer
from tests.security.reliability_counts import record
from tests.security.reliability_kit import CONFIG, Job, Outcome, assert_same_run, live_workers, paused

pytestmark = [pytest.mark.slow, pytest.mark.redis]
TALLY: Counter[str] = Counter()
EPOCHS = 8  # 4 rounds of 2 epochs


@pytest.fixture(scope="module", autouse=True)
def _record() -> Iterator[None]:
    yield
    record("faults", {f"{k}": v for k, v in sorted(TALLY.items())}
           | {"redis_duplicates_command": "pytest tests/faults/test_reliability_redis.py"})


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Job:
    j = Job(tmp_path_factory.mktemp("redis-job"), max_retries=6, retry_backoff_s=0.3)
    j.config = {**j.config, "epochs": EPOCHS}
    return j


@pytest.fixture(scope="module")
def reference(job: Job) -> Outcome:
    return job.reference()  # a plain numpy loop (reliability_kit.numpy_reference)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_redis_restarted_mid_run(seed: int, job: Job, reference: Outcome, tmp_path: Path) -> None:
    rng = random.Random(seed)
    for tries in range(1, 4):
        out = _run_with_a_redis_restart(job, rng, tmp_path / f"try-{tries}")
        TALLY["redis_restarts_injected"] += 1
        assert out.status == "completed"
        assert out.epochs == list(range(1, EPOCHS + 1))
        assert_same_run(out, reference)
        if out.retries >= 1:
            break
        # every worker's writes may already be in the store when it is wiped only in a window of
        # microseconds (after the last collective, before the shard write): then draw again
        TALLY["redis_restarts_without_effect"] += 1
    assert out.retries >= 1, f"redis was restarted {tries} times under a live worker and no attempt failed"
    TALLY["redis_restarts_survived"] += 1


def _run_with_a_redis_restart(job: Job, rng: random.Random, folder: Path) -> Outcome:
    """One run through a private redis-server that is SIGKILLed and restarted empty while a worker
    is live (between its start and its result), after 0, 2 or 4 of the 8 epochs are checkpointed."""
    home = folder / "home"
    with RedisServer(folder / "redis") as server:
        result: dict[str, Any] = {}

        def train() -> None:
            try:
                result["out"] = job.train(server.url, "process", home=home)
            except BaseException as exc:  # reported below
                result["error"] = exc

        thread = threading.Thread(target=train)
        thread.start()
        target = rng.choice([0, 2, 4])  # epochs checkpointed before the restart (of 8)
        deadline = time.monotonic() + 120
        while thread.is_alive() and _epochs_done(home) < target and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.4))  # then anywhere in the next round
        down_s = rng.uniform(0.0, 1.0)
        restarted = False
        while not restarted and thread.is_alive() and time.monotonic() < deadline:
            for worker in live_workers():
                with paused(worker) as live:  # a stopped worker cannot hand its result back meanwhile
                    if live:
                        server.restart(down_s=down_s)
                        restarted = True
                break
            time.sleep(0.005)
        thread.join(timeout=300)
    assert not thread.is_alive()
    assert "error" not in result, f"the run failed: {result.get('error')}"
    assert restarted, "the run ended before redis was restarted under a live worker"
    out: Outcome = result["out"]
    return out


def _epochs_done(home: Path) -> int:
    for pointer in (home / "objects" / "runs").glob("*/checkpoint.json"):
        try:
            return int(json.loads(pointer.read_text())["epochs_done"])
        except (ValueError, KeyError, OSError):
            return -1
    return -1


class Duplicating:
    """An executor that delivers some calls twice at once and replays the last round's calls."""

    name = "process"
    in_process = False

    def __init__(self, seed: int) -> None:
        from lambdanet.executors.process import ProcessExecutor

        self.inner = ProcessExecutor()
        self.rng = random.Random(seed)
        self.previous: list[dict[str, Any]] = []
        self.duplicates = 0
        self.duplicate_answers = 0
        self.stale = 0
        self.stale_refused = 0

    def run(self, fn: Any, specs: list[dict[str, Any]], timeout_s: float,
            on_failure: Any = None, liveness: Any = None) -> list[CallOutcome]:
        twice = [json.loads(json.dumps(s)) for s in self.rng.sample(specs, self.rng.randint(1, len(specs)))]
        replay = self.previous

        def current_only(o: CallOutcome) -> None:  # a refused replay of an old attempt is no failure of this one
            if on_failure is not None and "StaleAttempt" not in (o.error or ""):
                on_failure(o)

        outcomes = self.inner.run(fn, [*specs, *twice, *replay], timeout_s, on_failure=current_only,
                                  liveness=liveness)
        n = len(specs) + len(twice)
        self.duplicates += len(twice)
        self.stale += len(replay)
        self.duplicate_answers += sum(1 for o in outcomes[:n] if o.ok and (o.result or {}).get("duplicate"))
        self.stale_refused += sum(1 for o in outcomes[n:] if not o.ok and "StaleAttempt" in (o.error or ""))
        self.previous = [json.loads(json.dumps(s)) for s in specs]
        return outcomes[:n]

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize("seed", [0, 1])
def test_duplicate_and_late_deliveries_change_nothing(seed: int, job: Job, reference: Outcome,
                                                       tmp_path: Path) -> None:
    executor = Duplicating(seed)
    with RedisServer(tmp_path / "redis") as server:
        out = job.train(server.url, "process", executor_object=executor)
    assert out.status == "completed" and out.epochs == list(range(1, EPOCHS + 1))
    assert_same_run(out, reference)
    assert executor.duplicates >= 3 and executor.duplicate_answers == executor.duplicates
    assert executor.stale >= 2 and executor.stale_refused == executor.stale
    TALLY["duplicate_calls_delivered"] += executor.duplicates
    TALLY["stale_calls_replayed"] += executor.stale
    TALLY["duplicate_or_stale_calls_harmless"] += executor.duplicate_answers + executor.stale_refused


@pytest.mark.aws
def test_duplicate_s3_events_start_one_run(moto_server: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3
    import h5py

    from lambdanet.functions.training_function import handle_event
    from lambdanet.objects.folder import FolderStore
    from lambdanet.registry import ModelRegistry
    from lambdanet.services import Services
    from lambdanet.settings import Settings

    home = tmp_path / "home"
    for var in ("LAMBDANET_LEDGER", "LAMBDANET_OBJECTS", "LAMBDANET_NOTIFIER", "LAMBDANET_STORE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LAMBDANET_HOME", str(home))
    monkeypatch.setenv("LAMBDANET_EXECUTOR", "local")
    monkeypatch.setenv("LAMBDANET_MODEL", "s3dup")
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    bucket = f"dup-{random.Random().randrange(10**9)}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    rng = np.random.default_rng(0)
    h5 = tmp_path / "datasets.h5"
    with h5py.File(h5, "w") as f:
        f["train_set_x"] = rng.integers(0, 256, (24, 8, 8, 3), dtype=np.uint8)
        f["train_set_y"] = np.arange(24) % 2
        f["test_set_x"] = rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
        f["test_set_y"] = np.arange(6) % 2
        f["list_classes"] = np.array([b"non-cat", b"cat"])
    params = {**CONFIG, "epochs": 3}
    s3.put_object(Bucket=bucket, Key="training_input/parameters.json", Body=json.dumps(params).encode())
    put = s3.put_object(Bucket=bucket, Key="training_input/datasets.h5", Body=h5.read_bytes())
    event = {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                          "s3": {"bucket": {"name": bucket},
                                 "object": {"key": "training_input/datasets.h5", "size": h5.stat().st_size,
                                            "eTag": put["ETag"], "versionId": put.get("VersionId")}}}]}
    results: list[Any] = []
    errors: list[BaseException] = []

    def deliver() -> None:
        try:
            results.extend(handle_event(json.loads(json.dumps(event))))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    deliver()
    deliver()  # late re-deliveries
    assert not errors, errors
    statuses = Counter(r.status for r in results)
    TALLY["s3_events_delivered"] += len(results)
    assert len(results) == 6 and statuses == {"completed": 1, "skipped": 5}, statuses
    services = Services.open(Settings.from_env())
    try:
        runs = services.ledger.list_runs()
        assert len(runs) == 1 and runs[0].status == "completed"
    finally:
        services.close()
    assert ModelRegistry(FolderStore(home / "objects")).versions("s3dup") == [1]
    listing = s3.list_object_versions(Bucket=bucket, Prefix="training_results/")
    assert len(listing.get("Versions", [])) == 1, "results.json written more than once"
    TALLY["s3_duplicate_events_harmless"] += statuses["skipped"]
