"""CPU budgets per worker (issue 12): on the local (threads), process and Lithops-localhost executors each of K
workers runs with ``cores // K`` BLAS / OpenMP / torch threads (at least 1) — read back *inside
the worker* (threadpoolctl, torch) and recorded by the run's engine settings; a thread variable
the user set wins; a request's ``cpu_threads`` replaces the share.

tests/conftest.py sets ``OPENBLAS_NUM_THREADS=1`` … in this process, so every case runs its
training in a fresh interpreter whose environment the test writes (the thread variables removed
or set on purpose), on a tiny slice of catvnoncat; the figures come back through the ledger: the
run's ``config["engine"]["cpu_budget"]`` and the metric ``worker_threads`` (each worker's own
threadpoolctl / torch reading)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from lambdanet.engine.requests import EngineSettings
from lambdanet.services import Services
from lambdanet.settings import Settings
from tests.conftest import REPO, RedisServer
from tests.e2e.engine_support import small_data

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS")
CORES = len(os.sched_getaffinity(0))  # the CPUs these processes may use (the test's own reading)

# Trains the cases of argv[2] (JSON: [[workers, cpu_threads], …]) on argv[1] with the executor and
# store of argv[3], argv[4], 2 epochs each; with argv[5] == "torch", torch is loaded first (as a CNN
# run's driver has it). Prints the run ids and this process's own thread counts before and after.
TRAIN = """
import json, sys
if sys.argv[5] == "torch":
    import torch
from lambdanet.config import itsacat_defaults, parse_config
from lambdanet.engine.driver import Driver, TrainRequest
from lambdanet.cpu_budget import observed_threads
from lambdanet.services import Services
from lambdanet.settings import Settings
services = Services.open(Settings.from_env())
before = observed_threads()
cfg = parse_config({**itsacat_defaults(), "epochs": 2, "dtype": "float64", "threshold": 0.0})
ids = []
for workers, cpu_threads in json.loads(sys.argv[2]):
    res = Driver(services).train(TrainRequest(data=sys.argv[1], config=cfg, workers=workers, strategy="neuron",
                                              store_url=sys.argv[4], executor=sys.argv[3],
                                              cpu_threads=cpu_threads))
    ids.append(res.run_id)
print(json.dumps({"runs": ids, "before": before, "after": observed_threads()}))
"""


def clean_env(home: Path, user_env: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without thread variables (but ``user_env``'s) nor service URLs,
    with LAMBDANET_HOME = ``home``: what a user's fresh shell would give a command."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    env.update(user_env or {})
    env.update({"LAMBDANET_HOME": str(home), "LAMBDANET_NOTIFIER": "console://stderr",
                "PYTHONPATH": str(REPO / "src")})
    for var in ("LAMBDANET_LEDGER", "LAMBDANET_OBJECTS", "LAMBDANET_STORE", "LAMBDANET_EXECUTOR"):
        env.pop(var, None)
    return env


def ledger_runs(home: Path, run_ids: list[str]) -> list[Any]:
    """The ledger records of ``run_ids`` in ``home`` (the embedded SQLite ledger)."""
    old = os.environ.get("LAMBDANET_HOME")
    os.environ["LAMBDANET_HOME"] = str(home)
    try:
        ledger = Services.open(Settings.from_env()).ledger
        return [ledger.get_run(run_id) for run_id in run_ids]
    finally:
        if old is None:
            os.environ.pop("LAMBDANET_HOME")
        else:
            os.environ["LAMBDANET_HOME"] = old


def train(home: Path, data: Path, cases: list[tuple[int, int | None]], executor: str, store: str,
          user_env: dict[str, str], torch: bool = False) -> tuple[list[Any], dict[str, Any]]:
    """Run the cases in a fresh interpreter whose only thread variables are ``user_env``; return
    their ledger records and that process's thread counts before and after the runs."""
    env = clean_env(home, user_env)
    proc = subprocess.run([sys.executable, "-c", TRAIN, str(data), json.dumps(cases), executor, store,
                           "torch" if torch else "-"], capture_output=True, text=True, env=env, timeout=300,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return ledger_runs(home, out["runs"]), out


def seen(run: Any) -> list[dict[str, Any]]:
    """What each worker read inside its own call, in worker order."""
    rows = run.metrics["worker_threads"]
    assert [r["worker"] for r in rows] == list(range(len(rows)))
    return rows


@pytest.fixture(params=["local", pytest.param("process", marks=pytest.mark.redis),
                        pytest.param("lithops://localhost", marks=[pytest.mark.redis, pytest.mark.slow])])
def executor_and_store(request: pytest.FixtureRequest) -> tuple[str, str]:
    """Each executor whose calls share this machine: threads, child processes, Lithops' localhost
    processes (they get the process executor's share)."""
    if request.param == "local":
        return "local", "memory://"
    server: RedisServer = request.getfixturevalue("redis_server")
    return str(request.param), server.url


def test_each_of_k_workers_gets_its_share_of_the_cores(executor_and_store: tuple[str, str],
                                                       tmp_path: Path) -> None:
    executor, store = executor_and_store
    in_process = executor == "local"
    runs, driver = train(tmp_path / "home", small_data(tmp_path), [(1, None), (2, None), (4, None)], executor, store,
                        user_env={}, torch=in_process)
    for k, run in zip((1, 2, 4), runs, strict=True):
        share = max(1, CORES // k)
        budget = EngineSettings.of_run(run).cpu_budget
        assert (budget.threads, budget.source, budget.workers, budget.cores) == (share, "budget", k, CORES)
        assert run.config["engine"]["cpu_budget"]["threads"] == share  # as stored in the ledger row
        workers = seen(run)
        assert len(workers) == k
        for w in workers:
            assert w["blas"] == share, (k, w)
            if in_process:  # torch was loaded by the driver: its count and this thread's OpenMP pool too
                assert w["torch"] == share and w["openmp"] == share, (k, w)
            else:  # a fresh worker process of an MLP run never loads torch
                assert w["torch"] is None, (k, w)
    if in_process:  # the driver's process gets its pools back as they were after the runs
        assert driver["after"] == driver["before"] and driver["before"]["torch"] is not None


def test_a_thread_variable_the_user_set_is_respected_and_recorded(executor_and_store: tuple[str, str],
                                                                  tmp_path: Path) -> None:
    executor, store = executor_and_store
    # the budget would give K = 1 every core (and the request 2 threads): the user's 1 wins over both
    runs, _ = train(tmp_path / "home", small_data(tmp_path), [(1, None), (1, 2)], executor, store,
                    user_env={"OPENBLAS_NUM_THREADS": "1"})
    for run in runs:
        budget = EngineSettings.of_run(run).cpu_budget
        assert (budget.threads, budget.source) == (1, "user env")
        assert budget.user_env == {"OPENBLAS_NUM_THREADS": "1"}
        assert [w["blas"] for w in seen(run)] == [1]


def test_cpu_threads_replaces_the_share(executor_and_store: tuple[str, str], tmp_path: Path) -> None:
    if CORES < 2:
        pytest.skip("one core: the share and the request are both 1 thread")
    executor, store = executor_and_store
    runs, _ = train(tmp_path / "home", small_data(tmp_path), [(1, 1), (2, 1)], executor, store, user_env={})
    for k, run in zip((1, 2), runs, strict=True):
        engine = EngineSettings.of_run(run)
        assert engine.cpu_threads == 1
        assert (engine.cpu_budget.threads, engine.cpu_budget.source) == (1, "request")
        assert [w["blas"] for w in seen(run)] == [1] * k


def test_old_engine_settings_rows_read_back_with_defaults() -> None:
    """A run recorded before the CPU budget existed reads back (resume, report) without it."""
    old = {"workers": 2, "strategy": "data", "strategy_target": "lambdanet.engine.strategies.data:DataStrategy",
           "store_url": "memory://", "executor": "local", "epochs_per_round": None, "round_seconds": 300.0,
           "max_retries": 3, "collective_timeout_s": 60.0, "lambda_memory_mb": 2048, "model_name": "cats"}
    engine = EngineSettings.from_config({"epochs": 3, "engine": old}, source="old row")
    assert (engine.workers, engine.strategy, engine.model_name) == (2, "data", "cats")
    assert engine.checkpoint_seconds == 1.0 and engine.cpu_threads is None
    assert (engine.cpu_budget.threads, engine.cpu_budget.source) == (None, "none")
    assert "cpu_budget" not in engine.model_fields_set


def test_overlapping_runs_in_one_process_never_restore_each_other_s_limits() -> None:
    """A tuner runs trials side by side in one process: the BLAS pool stays at the smallest budget
    of the runs still active, and gets its first value back only when the last one leaves."""
    if CORES < 2:
        pytest.skip("one core: every budget is 1 thread")
    from threadpoolctl import threadpool_info, threadpool_limits

    from lambdanet.cpu_budget import CpuBudget, process_limits

    def blas() -> int:
        return min(lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas")

    with threadpool_limits(limits=2, user_api="blas"):  # the process's own pool before the runs
        first = process_limits(CpuBudget(threads=1, source="request"))
        second = process_limits(CpuBudget(threads=2, source="request"))
        first.__enter__()
        assert blas() == 1
        second.__enter__()
        assert blas() == 1  # the smallest active budget
        third = process_limits(CpuBudget(threads=1, source="request"))
        third.__enter__()
        first.__exit__(None, None, None)
        assert blas() == 1  # the first run's exit does not undo the third's limit
        third.__exit__(None, None, None)
        assert blas() == 2  # only the second (2 threads) is left
        second.__exit__(None, None, None)
        assert blas() == 2  # the last one out restores the pool as it was
        with process_limits(CpuBudget(threads=1, source="request")):
            assert blas() == 1
        assert blas() == 2


def test_the_cli_flag_sets_threads_per_worker_and_the_report_shows_them(tmp_path: Path) -> None:
    home, data = tmp_path / "home", small_data(tmp_path)
    env = clean_env(home)
    base = [sys.executable, "-m", "lambdanet"]
    bad = subprocess.run([*base, "train", str(data), "--cpu-threads", "0"], capture_output=True, text=True,
                         env=env, timeout=120, cwd=REPO)
    assert bad.returncode == 2 and "--cpu-threads" in bad.stderr and "Traceback" not in bad.stderr
    proc = subprocess.run([*base, "train", str(data), "--epochs", "2", "--workers", "2", "--cpu-threads", "1",
                           "--json"], capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_id = json.loads(proc.stdout.strip().splitlines()[-1])["run_id"]
    report = subprocess.run([*base, "report", run_id, "--json", "--out", str(tmp_path / "r.html")],
                            capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert report.returncode == 0, report.stderr[-3000:]
    summary = json.loads(report.stdout)["summary"]
    assert (summary["cpu_threads"], summary["cpu_threads_source"]) == (1, "request"), summary
    assert "CPU threads per worker" in (tmp_path / "r.html").read_text()
    (run,) = ledger_runs(home, [run_id])
    assert [w["blas"] for w in seen(run)] == [1, 1]


CNN_TRAIN = """
import json, sys
from lambdanet.config import CNNConfig
from lambdanet.engine.driver import Driver, TrainRequest
from lambdanet.services import Services
from lambdanet.settings import Settings
services = Services.open(Settings.from_env())
cfg = CNNConfig(model="lenet", epochs=1, batch_size=50, seed=3)
res = Driver(services).train(TrainRequest(data=sys.argv[1], config=cfg, workers=1, strategy="data",
                                          cpu_threads=1))
print(json.dumps({"run_id": res.run_id}))
"""


@pytest.mark.skipif(CORES < 2, reason="one core: the share and the request are the same figure")
def test_a_cnn_worker_runs_torch_with_the_requested_threads(tmp_path: Path) -> None:
    """The CNN strategy sets torch's threads itself (a new thread may not inherit them): it must use
    the request's ``cpu_threads``, not the share (K = 1: all the cores)."""
    from tests.support.cnn import write_cifar_subset

    data = write_cifar_subset(tmp_path / "data", 100, 50)
    home = tmp_path / "home"
    env = clean_env(home)
    proc = subprocess.run([sys.executable, "-c", CNN_TRAIN, str(data)],
                          capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = ledger_runs(home, [json.loads(proc.stdout.strip().splitlines()[-1])["run_id"]])
    assert [(w["torch"], w["blas"]) for w in seen(run)] == [(1, 1)]
    assert run.metrics["evaluation"]["train_accuracy_method"] == "all_training_images"  # 100 images: all


def _competitors(n: int) -> list[subprocess.Popen[bytes]]:
    """``n`` CPU-bound programs (a busy loop each), as a busy laptop has them."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def test_free_cores_counts_the_cores_other_programs_keep_busy() -> None:
    """One busy program leaves at most CORES - 1 free; as many as there are cores leave the floor
    of 1. This process's own work never counts (a busy thread here leaves the cores free)."""
    from lambdanet.cpu_budget import free_cores

    procs = _competitors(1)
    try:
        time.sleep(0.3)
        one = free_cores()
        procs += _competitors(CORES - 1)
        time.sleep(0.3)
        every = free_cores()
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert one is not None and one <= max(1, CORES - 1)
    assert every == 1


def test_a_round_on_a_busy_machine_runs_with_the_free_cores_only(tmp_path: Path) -> None:
    """The main job's shape (K = 1, local executor, no thread variables) beside one CPU-bound
    program: the worker runs with the cores left free (1 on 2 cores), not with every core — a
    multithreaded BLAS whose thread has no core spins (the main job took 3x as long)."""
    procs = _competitors(1)
    try:
        time.sleep(0.3)
        runs, _ = train(tmp_path / "home", small_data(tmp_path), [(1, None)], "local", "memory://", user_env={})
    finally:
        for p in procs:
            p.kill()
            p.wait()
    worker = seen(runs[0])[0]
    assert worker["blas"] is not None and worker["blas"] <= max(1, CORES - 1), worker
