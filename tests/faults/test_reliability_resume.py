"""kill -9 of the driver (``lambdanet train``) at random points, then ``lambdanet resume``: the
weights and epoch costs of a plain numpy training loop (``reliability_kit.numpy_reference``), and
every epoch exactly once in the ledger.

Each seed (``LAMBDANET_DRIVER_SEEDS``, default 4) trains through the real CLI with a checkpoint
every epoch, waits until a random number of epochs is checkpointed, waits a further random
0–30 ms (so the kill lands anywhere: inside a round, while the checkpoint, the ledger rows or
the pointer are written) and SIGKILLs the driver. Even seeds use the local executor (workers
die with it), odd seeds the process executor over Redis (the workers are orphaned and keep
running: the resumed run must fence them off — the test reads the killed driver's fence
(round, attempt) from Redis right after the kill, and every call of the resumed driver must run
under a newer attempt id, so an orphan can neither start in it nor write into its keys).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from lambdanet.adapters import open_store
from lambdanet.engine.worker import fence_key
from tests.conftest import RedisServer
from tests.security.reliability_counts import record
from tests.security.reliability_kit import Job, Outcome, assert_same_run, numpy_reference, outcome
from tests.security.seed import LAMBDANET, cli_env

pytestmark = [pytest.mark.slow, pytest.mark.redis]
SEEDS = list(range(int(os.environ.get("LAMBDANET_DRIVER_SEEDS", "4"))))
EPOCHS = {"local": 24, "process": 8}  # local rounds are fast: more of them, so a kill lands mid-run
TALLY: Counter[str] = Counter()


@pytest.fixture(scope="module", autouse=True)
def _record() -> Iterator[None]:
    yield
    record("faults", {f"driver_kill_{k}": v for k, v in sorted(TALLY.items())}
           | {"driver_kill_command": "pytest tests/faults/test_reliability_resume.py"})


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Job:
    return Job(tmp_path_factory.mktemp("resume-job"))


@pytest.fixture(scope="module")
def references(job: Job) -> dict[int, Outcome]:
    """What each epoch count must train: a plain numpy loop (reliability_kit.numpy_reference)."""
    return {epochs: numpy_reference(job.data, {**job.config, "epochs": epochs}) for epochs in set(EPOCHS.values())}


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("resume-redis")) as server:
        yield server


def _epochs_checkpointed(home: Path) -> int:
    for pointer in (home / "objects" / "runs").glob("*/checkpoint.json"):
        try:
            return int(json.loads(pointer.read_text())["epochs_done"])
        except (ValueError, KeyError, OSError):
            return 0
    return 0


@pytest.mark.parametrize("seed", SEEDS)
def test_driver_killed_then_resumed(seed: int, job: Job, references: dict[int, Outcome], redis: RedisServer,
                                    tmp_path: Path) -> None:
    rng = random.Random(seed)
    home = tmp_path / "home"
    store, executor = ("memory://", "local") if seed % 2 == 0 else (redis.url, "process")
    epochs = EPOCHS[executor]
    params = tmp_path / "params.json"
    params.write_text(json.dumps({**job.config, "epochs": epochs}))
    target = rng.randint(1, epochs // 2)
    proc = subprocess.Popen([LAMBDANET, "train", str(job.data), "--params", str(params), "--model", "fault",
                             "--workers", "2", "--store", store, "--executor", executor, "--epochs-per-round", "1",
                             "--json"], env=cli_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while _epochs_checkpointed(home) < target and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, 0.03))
    killed = proc.poll() is None
    if killed:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()  # type: ignore[union-attr]
    proc.stderr.close()  # type: ignore[union-attr]
    assert killed, f"the run finished before epoch {target} was checkpointed (exit {proc.returncode})"
    TALLY["injected"] += 1
    runs = list((home / "objects" / "runs").iterdir())
    assert len(runs) == 1
    run_id = runs[0].name
    orphans = None  # the attempt the killed driver's workers run under (process executor: they live on)
    if executor == "process":
        store = open_store(redis.url)
        try:
            orphans = int(store.get(fence_key(run_id))[1])
        finally:
            store.close()
    services = job.services(home)
    try:
        before = {(c.round, c.attempt, c.worker) for c in services.ledger.calls(run_id)}
    finally:
        services.close()
    resumed = subprocess.run([LAMBDANET, "resume", run_id, "--json"], env=cli_env(home), capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "Traceback" not in resumed.stderr
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["status"] == "completed"
    services = job.services(home)
    try:
        out = outcome(services, run_id)
        after = [c for c in services.ledger.calls(run_id) if (c.round, c.attempt, c.worker) not in before]
    finally:
        services.close()
    assert out.status == "completed"
    assert out.epochs == list(range(1, epochs + 1)), f"ledger epochs {out.epochs}"
    assert_same_run(out, references[epochs])
    if orphans is not None:  # the resumed driver fenced the orphans' attempt off: all its calls run under newer ones
        assert after and min(c.attempt for c in after) > orphans, (orphans, sorted({c.attempt for c in after}))
        TALLY["orphans_fenced"] += 1
    TALLY["survived"] += 1
