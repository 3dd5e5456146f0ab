"""The Lithops executor on Lithops' real localhost backend (no fakes): per-call results and
failures, a call killed with SIGKILL reported at once through ``on_failure`` (and a call
whose whole process tree died, which Lithops never reports), and a full training run
(Lithops + a real redis-server) that reproduces the single-process reference weights."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle
import h5py
import numpy as np
import psutil
import pytest

from lambdanet.config import MLPConfig
from lambdanet.errors import ConfigError, URLError
from lambdanet.executors.lithops import LithopsExecutor, fn_reference, load_config_file
from lambdanet.ports import CallOutcome

# The worker functions below run in Lithops' worker processes, which cannot import this test
# module: ship them by value inside Lithops' cloudpickle.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def echo_worker(spec: dict[str, Any]) -> dict[str, Any]:
    import time

    if spec.get("raise"):
        raise ValueError(f"worker {spec['i']} refuses")
    if spec.get("sleep"):
        time.sleep(spec["sleep"])
    return {"i": spec["i"], "square": spec["i"] ** 2}


def barrier_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """All calls must run at once: each waits (BLPOP) for every other one's arrival."""
    import redis

    r = redis.Redis.from_url(spec["url"])
    for other in range(spec["n"]):
        if other != spec["i"]:
            r.rpush(f"{spec['key']}:{other}", spec["i"])
    got = sorted(int(r.blpop([f"{spec['key']}:{spec['i']}"], timeout=30)[1]) for _ in range(spec["n"] - 1))
    return {"i": spec["i"], "met": got}


@pytest.fixture(scope="module")
def executor() -> Any:
    ex = LithopsExecutor.from_url("lithops://localhost")
    yield ex
    ex.close()


def test_calls_run_concurrently_and_return_in_order(executor: LithopsExecutor, redis_server: Any) -> None:
    n = 3
    specs = [{"i": i, "n": n, "url": redis_server.url, "key": "lithops-test-barrier"} for i in range(n)]
    outcomes = executor.run(barrier_worker, specs, timeout_s=60)
    assert [o.worker for o in outcomes] == [0, 1, 2]
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    assert [o.result["met"] for o in outcomes] == [[1, 2], [0, 2], [0, 1]]
    assert all(o.ended_at >= o.started_at > 0 for o in outcomes)


def test_failures_and_timeouts_are_one_line_outcomes(executor: LithopsExecutor) -> None:
    specs = [{"i": 0}, {"i": 1, "raise": True}, {"i": 2, "sleep": 30}]
    outcomes = executor.run(echo_worker, specs, timeout_s=3)
    assert outcomes[0].ok and outcomes[0].result == {"i": 0, "square": 0}
    assert not outcomes[1].ok and outcomes[1].error == "ValueError: worker 1 refuses"
    assert not outcomes[2].ok and outcomes[2].error == "timed out after 3 s"
    assert all("\n" not in (o.error or "") for o in outcomes)


def test_config_is_explicit(tmp_path: Path) -> None:
    ex = LithopsExecutor.from_url("lithops://localhost?version=2&worker_processes=3")
    cfg = ex.config_for(5)
    assert cfg["lithops"]["backend"] == "localhost" and cfg["lithops"]["storage"] == "localhost"
    assert cfg["localhost"]["runtime"] == sys.executable
    assert cfg["localhost"]["version"] == 2
    assert cfg["localhost"]["worker_processes"] >= 5  # every call of a round runs at once
    aws = tmp_path / "lithops.yaml"
    aws.write_text("lithops: {backend: aws_lambda, storage: aws_s3}\naws: {region: eu-west-1}\n"
                   "aws_lambda: {execution_role: 'arn:aws:iam::123456789012:role/x', runtime: img:1}\n")
    ex = LithopsExecutor.from_url("lithops", lithops_config=str(aws))
    assert ex.backend == "aws_lambda" and ex.call_timeout(5000) < 900  # below Lambda's limit
    assert ex.config_for(2)["aws_lambda"]["runtime"] == "img:1"
    inline = load_config_file('{"lithops": {"backend": "aws_lambda"}}')
    assert inline["lithops"]["backend"] == "aws_lambda"
    with pytest.raises(URLError, match="unknown"):
        LithopsExecutor.from_url("lithops://localhost?bogus=1")
    bad = tmp_path / "bad.yaml"
    bad.write_text("lithops: [1, 2")
    with pytest.raises(ConfigError, match=r"bad\.yaml"):
        LithopsExecutor.from_url("lithops", config_file=str(bad))
    assert fn_reference(echo_worker) is None  # test code travels by value
    from lambdanet.executors.lithops import run_call

    assert fn_reference(run_call) == "lambdanet.executors.lithops:run_call"


def _tiny_itsacat_h5(path: Path, m: int = 48, m_test: int = 12) -> Path:
    rng = np.random.default_rng(7)
    with h5py.File(path, "w") as fh:
        fh["train_set_x"] = rng.integers(0, 256, (m, 8, 8, 3), dtype=np.uint8)
        fh["train_set_y"] = rng.integers(0, 2, m).astype(np.int64)
        fh["test_set_x"] = rng.integers(0, 256, (m_test, 8, 8, 3), dtype=np.uint8)
        fh["test_set_y"] = rng.integers(0, 2, m_test).astype(np.int64)
        fh["list_classes"] = np.array([b"non-cat", b"cat"])
    return path


@pytest.mark.slow
def test_full_run_on_lithops_with_redis_matches_reference(home: Path, tmp_path: Path, redis_server: Any) -> None:
    from lambdanet.data.readers import load_dataset, to_matrix, to_targets
    from lambdanet.engine.driver import Driver, TrainRequest
    from lambdanet.nn import reference
    from lambdanet.services import Services
    from lambdanet.settings import Settings

    data = _tiny_itsacat_h5(tmp_path / "tiny.h5")
    config = MLPConfig.model_validate({
        "epochs": 4, "layers": 3, "activations": {"layer1": "relu", "layer2": "relu", "layer3": "sigmoid"},
        "neurons": {"layer1": 6, "layer2": 3, "layer3": 1}, "learning_rate": 0.05, "batch_size": 16,
        "dtype": "float64", "report_every": 2,
    })
    services = Services.open(Settings.from_env())
    try:
        result = Driver(services).train(TrainRequest(
            data=str(data), config=config, model_name="tiny", workers=2, strategy="neuron",
            store_url=redis_server.url, executor="lithops", epochs_per_round=2))
        assert result.status == "completed" and result.rounds == 2 and result.epochs_run == 4
        weights = services.registry.load(result.model).weights
        calls = services.ledger.calls(result.run_id)
    finally:
        services.close()
    assert len(calls) == 4 and all(c.ok for c in calls)  # 2 rounds x 2 Lithops calls

    ds = load_dataset(data)
    X = to_matrix(ds.x_train, "float64")
    Y = to_targets(ds.y_train, 2, "sigmoid", "float64")
    ref = reference.train(config, X, Y)
    assert sorted(weights) == sorted(ref.params)
    for name, value in ref.params.items():  # the plain loop: same numbers up to the sum order
        np.testing.assert_allclose(weights[name], value, rtol=1e-9, atol=1e-12, err_msg=name)
    assert result.final_cost == pytest.approx(ref.costs[-1], rel=1e-9)

    # `lambdanet train` with the same config, K and strategy (threads, memory store): the same bits
    params = tmp_path / "parameters.json"
    params.write_text(config.model_dump_json())
    done = subprocess.run([sys.executable, "-m", "lambdanet", "train", str(data), "--params", str(params),
                           "--workers", "2", "--strategy", "neuron", "--epochs-per-round", "2", "--store",
                           "memory://", "--executor", "local", "--json"],
                          capture_output=True, text=True, timeout=300)  # the same LAMBDANET_HOME
    assert done.returncode == 0, done.stderr
    model = json.loads(done.stdout.strip().splitlines()[-1])["model"]
    cli_services = Services.open(Settings.from_env())
    try:
        cli_weights = cli_services.registry.load(model).weights
    finally:
        cli_services.close()
    assert sorted(cli_weights) == sorted(weights)
    for name, value in cli_weights.items():
        assert np.array_equal(weights[name], value), name  # bit for bit


def pid_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Writes the pid of the process running the call (so the test can kill it), then sleeps."""
    import os
    import time

    tmp = os.path.join(spec["dir"], f"{spec['worker']}.tmp")
    with open(tmp, "w") as f:
        f.write(str(os.getpid()))
    os.replace(tmp, os.path.join(spec["dir"], f"{spec['worker']}.pid"))
    time.sleep(spec["seconds"])
    return {"worker": spec["worker"]}


def _call_pids(folder: Path, n: int, guard_s: float = 60.0) -> list[int]:
    end = time.monotonic() + guard_s
    while time.monotonic() < end:
        files = [folder / f"{k}.pid" for k in range(n)]
        if all(f.exists() for f in files):
            return [int(f.read_text()) for f in files]
        time.sleep(0.02)
    raise AssertionError(f"the {n} calls never started")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _run_and_kill(executor: LithopsExecutor, tmp_path: Path,
                  kill: Callable[[int], None]) -> tuple[CallOutcome, bool, list[CallOutcome], list[int]]:
    """K = 3 calls sleeping 600 s; ``kill(pid of worker 0's call)``; returns the first failure
    reported, whether the other calls were still running then, every outcome, the call pids."""
    specs = [{"worker": k, "seconds": 600.0, "dir": str(tmp_path)} for k in range(3)]
    failures: queue.Queue[tuple[CallOutcome, bool]] = queue.Queue()
    pids: list[int] = []

    def on_failure(o: CallOutcome) -> None:
        failures.put((o, all(_alive(p) for p in pids[1:])))

    done: list[list[CallOutcome]] = []
    runner = threading.Thread(target=lambda: done.append(executor.run(pid_worker, specs, 600, on_failure)),
                              daemon=True)
    runner.start()
    pids.extend(_call_pids(tmp_path, 3))
    kill(pids[0])
    first, others_alive = failures.get(timeout=60)  # the guard: the calls would run for 600 s
    assert runner.is_alive()
    for p in pids[1:]:  # end the others (Lithops reports each as killed with SIGTERM)
        os.kill(p, signal.SIGTERM)
    runner.join(60)
    assert not runner.is_alive()
    return first, others_alive, done[0], pids


def test_a_call_killed_with_sigkill_is_reported_at_once(executor: LithopsExecutor, tmp_path: Path) -> None:
    first, others_alive, outcomes, _ = _run_and_kill(executor, tmp_path, lambda pid: os.kill(pid, signal.SIGKILL))
    assert (first.worker, first.error) == (0, "exit code -9")
    assert others_alive  # reported while the other calls still ran
    assert [o.error for o in outcomes] == ["exit code -9", "exit code -15", "exit code -15"]


def test_a_call_whose_whole_process_tree_died_is_reported_by_the_liveness_check(
        executor: LithopsExecutor, tmp_path: Path) -> None:
    """Killing the call's process AND its Lithops worker process: Lithops never reports the
    call; the executor sees the call's pid gone and reports it (after DEAD_GRACE_S)."""

    def kill_tree(pid: int) -> None:
        parent = psutil.Process(pid).ppid()
        os.kill(parent, signal.SIGKILL)
        os.kill(pid, signal.SIGKILL)

    first, others_alive, outcomes, pids = _run_and_kill(executor, tmp_path, kill_tree)
    assert first.worker == 0
    assert first.error == f"process {pids[0]} died without a report from Lithops (its worker process was killed?)"
    assert others_alive
    assert [o.error for o in outcomes[1:]] == ["exit code -15", "exit code -15"]
    ok = executor.run(echo_worker, [{"i": 2}], timeout_s=60)[0]  # the next round starts afresh
    assert ok.ok and ok.result == {"i": 2, "square": 4}
