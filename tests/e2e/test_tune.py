"""``lambdanet tune`` end to end: real executors (process, Lithops localhost), a real redis-server as
study storage, the real ledger / object store / registry under a private LAMBDANET_HOME.

A tiny itsacat-shaped data set (8x8x3 noise images, the cats with brighter odd rows) keeps every trial at a
fraction of a second of numpy; rounds of 10 epochs are the pruning rungs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from lambdanet.engine import checkpoints
from lambdanet.ports.ledger import RunRecord
from lambdanet.services import Services
from lambdanet.settings import Settings
from tests.conftest import REPO

LONG_EPOCHS = 600  # the kill and Ctrl-C tests: a trial of many rounds (a tiny one ends in well under a second)
BASE = {"epochs": 30, "layers": 3, "activations": {"layer1": "relu", "layer2": "relu", "layer3": "sigmoid"},
        "neurons": {"layer1": 8, "layer2": 4, "layer3": 1}, "learning_rate": 0.05, "batch_size": 32,
        "optimizer": "adam", "report_every": 1000, "dtype": "float64"}
SPACE = {"learning_rate": {"log_uniform": [1e-5, 0.1]}, "neurons.layer1": {"int": [2, 12]},
         "optimizer": {"choice": ["gd", "momentum", "adam"]}, "batch_size": {"choice": [16, 32, 96]}}


def tiny_h5(path: Path, m: int = 120, m_test: int = 30) -> Path:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, m + m_test).astype(np.int64)
    noise = rng.integers(0, 160, (m + m_test, 8, 8, 3))
    x = (noise + 40 * y[:, None, None, None] * (np.arange(8)[None, :, None, None] % 2)).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as fh:
        fh["train_set_x"], fh["train_set_y"] = x[:m], y[:m]
        fh["test_set_x"], fh["test_set_y"] = x[m:], y[m:]
        fh["list_classes"] = np.array([b"non-cat", b"cat"])
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    base, space = tmp_path / "base.json", tmp_path / "space.json"
    base.write_text(json.dumps(BASE))
    space.write_text(json.dumps(SPACE))
    return {"data": tiny_h5(tmp_path / "tiny" / "datasets.h5"), "base": base, "space": space}


def cli(home: Path, *args: str, timeout: float = 240,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**(os.environ if env is None else env), "LAMBDANET_HOME": str(home), "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-m", "lambdanet", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)


def popen(home: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "LAMBDANET_HOME": str(home), "PYTHONPATH": str(REPO / "src")}
    return subprocess.Popen([sys.executable, "-m", "lambdanet", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)


def last_json(stdout: str) -> dict[str, Any]:
    return json.loads(stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def tune_args(files: dict[str, Path], study: str, *extra: str) -> list[str]:
    return ["tune", str(files["data"]), "--params", str(files["base"]), "--space", str(files["space"]),
            "--study", study, "--epochs-per-round", "10", "--startup-trials", "2", "--json", *extra]


def study_runs(home: Path, study: str) -> list[RunRecord]:
    services = Services.open(Settings.from_env())
    try:
        runs = [r for r in services.ledger.list_runs(limit=1000) if r.metrics.get("study") == study]
    finally:
        services.close()
    return sorted(runs, key=lambda r: int(r.metrics["trial"]))


def check_trial_runs(home: Path, study: str, n: int, executor: str) -> list[RunRecord]:
    """Every trial is one run with its study and trial number, trained on the train split only."""
    runs = study_runs(home, study)
    assert [r.metrics["trial"] for r in runs] == list(range(n))  # each trial once
    services = Services.open(Settings.from_env())
    try:
        for r in runs:
            assert r.config["engine"]["executor"] == executor
            assert r.data == str(home / "studies" / study / "train.npz")
            data = checkpoints.read_data(services.objects, r.run_id)  # what the trial's workers load
            assert data.x_test is None and data.y_test is None  # the test set never reaches a trial
            assert len(data.y_train) == 96  # 120 - 20 % validation
            assert r.metrics["outcome"] in ("completed", "pruned", "failed")
            if r.metrics["outcome"] != "failed":
                assert r.metrics["worker_calls"] >= 1 and r.metrics["estimated_cost_usd"] > 0
                assert r.metrics["validation"] and r.metrics["validation"][0][0] == 10
    finally:
        services.close()
    return runs


def check_pruned(runs: list[RunRecord], pruner: str = "median") -> list[RunRecord]:
    pruned = [r for r in runs if r.metrics["outcome"] == "pruned"]
    for r in pruned:
        assert r.status == "completed" and r.stop_reason == "pruned"
        epoch = r.metrics["pruned_at_epoch"]
        assert epoch % 10 == 0 and 10 <= epoch < 30  # at a round boundary, before the end
        assert r.metrics["epochs_done"] == epoch
        assert f"pruned by the {pruner} pruner" in r.metrics["prune_reason"]
        assert [p[0] for p in r.metrics["validation"]] == list(range(10, epoch + 1, 10))
    return pruned


def check_staging(home: Path, result: dict[str, Any]) -> None:
    services = Services.open(Settings.from_env())
    try:
        name, version = result["model"].split(":")
        aliases = services.registry.aliases(name)
        assert aliases.get("staging") == int(version)
        assert "production" not in aliases  # promotion stays a human decision
        best = services.ledger.get_run(result["best_run"])
        assert best.metrics["test_accuracy"] == result["test_accuracy"] is not None
    finally:
        services.close()


@pytest.mark.redis
def test_study_on_the_process_executor_with_redis_as_study_storage(home: Path, files: dict[str, Path],
                                                                   redis_server: Any) -> None:
    import redis

    res = cli(home, *tune_args(files, "proc", "--trials", "8", "--parallel", "2", "--executor", "process",
                               "--store", redis_server.url))
    assert res.returncode == 0, res.stderr
    out = last_json(res.stdout)
    assert out["trials"] == 8 and out["completed"] + out["pruned"] + out["failed"] == 8
    assert out["completed"] >= 1 and out["storage"] == redis_server.url
    runs = check_trial_runs(home, "proc", 8, "process")
    check_pruned(runs)
    check_staging(home, out)
    r = redis.Redis.from_url(redis_server.url)
    entries = r.lrange("ln:study:proc:journal", 0, -1)
    assert len(entries) > 8 and all(isinstance(json.loads(e), dict) for e in entries)  # JSON logs only
    assert not list(r.scan_iter("*snapshot*"))  # no (pickled) snapshot was ever written
    assert not (home / "studies" / "proc.journal").exists()  # the study lives in Redis

    rep = cli(home, "report", "--study", "proc", "--out", str(home / "study.html"), "--json")
    assert rep.returncode == 0, rep.stderr
    payload = json.loads(rep.stdout)
    assert len(payload["trials"]) == 8 and payload["summary"]["best_run"] == out["best_run"]
    html = (home / "study.html").read_text()
    for element in ("id='history'", "id='curves'", "id='best-params'", "id='trials'", "data-outcome="):
        assert element in html


@pytest.mark.redis
def test_study_on_lithops_localhost(home: Path, files: dict[str, Path], redis_server: Any) -> None:
    res = cli(home, *tune_args(files, "lith", "--trials", "3", "--parallel", "2", "--executor", "lithops",
                               "--store", redis_server.url, "--storage", "file", "--pruner", "none"))
    assert res.returncode == 0, res.stderr
    out = last_json(res.stdout)
    assert out["trials"] == 3 and out["completed"] == 3 and out["pruned"] == 0
    check_trial_runs(home, "lith", 3, "lithops")
    check_staging(home, out)
    lines = (home / "studies" / "lith.journal").read_text().splitlines()
    assert lines and all(isinstance(json.loads(line), dict) for line in lines)


def test_pruned_and_diverging_trials_in_one_study(home: Path, files: dict[str, Path]) -> None:
    """A learning rate of 1e30 diverges (NaN cost): that trial is failed with its reason and the
    study goes on; weak trials are pruned at a round boundary with the reason recorded."""
    space = {"learning_rate": {"choice": [0.05, 0.02, 1e-5, 1e30]}, "neurons.layer1": {"int": [2, 12]}}
    files["space"].write_text(json.dumps(space))
    files["base"].write_text(json.dumps({**BASE, "dtype": "float32"}))  # 1e30 overflows float32 to NaN
    res = cli(home, *tune_args(files, "mixed", "--trials", "8", "--startup-trials", "1", "--seed", "0"))
    assert res.returncode == 0, res.stderr
    out = last_json(res.stdout)
    runs = check_trial_runs(home, "mixed", 8, "local")
    by_lr = {lr: [r for r in runs if r.metrics["params"]["learning_rate"] == lr] for lr in (0.05, 0.02, 1e-5, 1e30)}
    assert by_lr[1e30], "the seeded sampler did not try the diverging learning rate"
    for r in by_lr[1e30]:
        assert r.status == "failed" and r.metrics["outcome"] == "failed"
        assert r.error is not None and r.error.startswith("diverged")
    assert out["failed"] == len(by_lr[1e30]) and out["trials"] == 8
    assert out["pruned"] >= 1, [r.metrics.get("outcome") for r in runs]
    check_pruned(runs)
    assert out["best_params"]["learning_rate"] in (0.05, 0.02) and out["completed"] >= 1
    check_staging(home, out)


def test_asha_study_with_a_process_driving_each_trial(home: Path, files: dict[str, Path]) -> None:
    """ASHA (successive halving) in a real study whose two parallel trials are each driven by a
    trial-driver process: its rungs are 10, 30, 90… epochs (one round × 3^k), so with rounds of
    10 and 30 epochs a trial can only be pruned at epoch 10, the one rung before the end; why is
    recorded. The trials' workers ran with the CPU budget the tuner asked for: the cores shared by
    the 2 trials at once (no thread variable set, so the budget is the tuner's, not the user's)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                           "MKL_NUM_THREADS")}
    res = cli(home, *tune_args(files, "asha", "--trials", "8", "--parallel", "2", "--pruner", "asha",
                               "--trial-driver", "process"), env=env)
    assert res.returncode == 0, res.stderr
    out = last_json(res.stdout)
    assert out["trials"] == 8 and out["completed"] + out["pruned"] + out["failed"] == 8 and out["failed"] == 0
    runs = check_trial_runs(home, "asha", 8, "local")
    pruned = check_pruned(runs, "asha")
    assert len(pruned) == out["pruned"] >= 1, [r.metrics.get("outcome") for r in runs]
    for r in pruned:
        assert r.metrics["pruned_at_epoch"] == 10 and "top 1/3" in r.metrics["prune_reason"]
    budget = max(1, len(os.sched_getaffinity(0)) // 2)
    for r in runs:
        assert {w["blas"] for w in r.metrics["worker_threads"]} == {budget}
    check_staging(home, out)


@pytest.mark.parametrize("trial_driver", ["thread", "process"])
def test_resume_after_the_tune_driver_is_killed(home: Path, files: dict[str, Path], trial_driver: str) -> None:
    """kill -9 of the tune driver; with trial-driver processes they go with it (else the resumed
    driver would find the trials' runs driven by a live process)."""
    base = {**BASE, "epochs": LONG_EPOCHS}  # long enough to be caught between rounds, quiet machine or not
    files["base"].write_text(json.dumps(base))
    args = tune_args(files, "kill", "--trials", "6", "--parallel", "2", "--pruner", "none",
                     "--trial-driver", trial_driver)
    proc = popen(home, *args)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # until one trial is done and another is between rounds
            if proc.poll() is not None:
                pytest.fail(f"tune ended before it was killed: {proc.communicate()}")
            with_outcome = [r for r in _quiet_runs(home, "kill") if r.metrics.get("outcome")]
            mid = [r for r in _quiet_runs(home, "kill")
                   if not r.metrics.get("outcome") and 0 < r.metrics.get("epochs_done", 0) < LONG_EPOCHS]
            if with_outcome and mid:
                break
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    before = {r.metrics["trial"]: r.run_id for r in _quiet_runs(home, "kill")}
    assert len(before) < 6
    res = cli(home, "tune", "--study", "kill", "--resume", "--json")
    assert res.returncode == 0, res.stderr
    out = last_json(res.stdout)
    # none counted twice, none lost (a long trial at a large learning rate may diverge: failed, told)
    assert out["trials"] == 6 and out["completed"] + out["failed"] == 6 and out["completed"] >= 1, out
    runs = check_trial_runs(home, "kill", 6, "local")
    after = {r.metrics["trial"]: r.run_id for r in runs}
    assert all(after[t] == run_id for t, run_id in before.items())  # the killed trials' runs were continued
    done = [r for r in runs if r.metrics["outcome"] == "completed"]
    assert len(done) == out["completed"]
    assert all(r.metrics["epochs_done"] == LONG_EPOCHS and r.status == "completed" for r in done)
    check_staging(home, out)


@pytest.mark.parametrize("objective", ["cost", "balanced_accuracy"])
def test_best_trial_is_the_best_completed_trial_and_gets_staging(home: Path, files: dict[str, Path],
                                                                 objective: str) -> None:
    """The study's best trial is the best of its COMPLETED trials by the objective's direction
    (cost: lowest; accuracies: highest), computed here from the trials' own ledger rows, and the
    alias ``staging`` points at that trial's model version (a worst-trial mutant must fail)."""
    space = {"learning_rate": {"log_uniform": [1e-4, 0.1]}, "neurons.layer1": {"int": [2, 12]}}
    files["space"].write_text(json.dumps(space))
    study = f"best-{objective.replace('_', '-')}"
    res = cli(home, *tune_args(files, study, "--trials", "5", "--pruner", "none", "--objective", objective))
    assert res.returncode == 0, res.stderr
    out = last_json(res.stdout)
    runs = check_trial_runs(home, study, 5, "local")
    done = [r for r in runs if r.metrics["outcome"] == "completed"]
    values = {r.run_id: float(r.metrics["objective_value"]) for r in done}
    assert len(set(values.values())) >= 2, f"the trials scored alike ({values}): best and worst are one"
    pick = min if objective == "cost" else max
    best_value = pick(values.values())
    assert out["objective"] == objective and out["completed"] == len(done)
    assert out["best_value"] == pytest.approx(best_value)
    best = next(r for r in runs if r.run_id == out["best_run"])
    assert values[best.run_id] == pytest.approx(best_value)  # the named run is a best one, not just the value
    assert out["best_trial"] == best.metrics["trial"] and out["best_params"] == best.metrics["params"]
    assert out["model"] == best.model
    services = Services.open(Settings.from_env())
    try:
        name, version = best.model.split(":")
        assert services.registry.aliases(name)["staging"] == int(version)
        staged = services.registry.load(f"{name}@staging")
        assert staged.metadata["run_id"] == best.run_id
        assert services.ledger.get_run(best.run_id).metrics["best_of_study"] == study
    finally:
        services.close()


def _quiet_runs(home: Path, study: str) -> list[RunRecord]:
    try:
        return study_runs(home, study)
    except Exception:  # the ledger file is being created by the other process
        return []


@pytest.mark.parametrize(("space", "needle"), [
    ({"learnin_rate": {"log_uniform": [1e-4, 0.1]}}, "unknown key 'learnin_rate'"),
    ({"neurons.layer1": {"int": [64, 8]}}, "empty range"),
    ({"learning_rate": {"log_uniform": [0, 0.1]}}, "must be above 0"),
    ({"activations.layer3": {"choice": ["sigmoid", "relu"]}}, "makes an invalid config"),
])
def test_bad_space_is_one_error_line_exit_2_and_nothing_written(tmp_path: Path, files: dict[str, Path],
                                                                  space: dict[str, Any], needle: str) -> None:
    home = tmp_path / "fresh-home"
    files["space"].write_text(json.dumps(space))
    res = cli(home, *tune_args(files, "bad", "--trials", "2"))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]
    assert "Traceback" not in res.stderr
    assert not home.exists()  # no ledger, no journal, no split files


@pytest.mark.parametrize("trial_driver", ["thread", "process"])
def test_ctrl_c_leaves_the_study_resumable(home: Path, files: dict[str, Path], trial_driver: str) -> None:
    files["base"].write_text(json.dumps({**BASE, "epochs": LONG_EPOCHS}))  # far from its end when Ctrl-C comes
    proc = popen(home, *tune_args(files, "intr", "--trials", "3", "--parallel", "2", "--pruner", "none",
                                  "--trial-driver", trial_driver))
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"tune ended before Ctrl-C: {proc.communicate()}")
            if any(0 < r.metrics.get("epochs_done", 0) <= LONG_EPOCHS // 3 for r in _quiet_runs(home, "intr")):
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("error: study intr interrupted")
    assert "--study intr --resume" in err
    interrupted = [r for r in _quiet_runs(home, "intr") if r.status == "interrupted"]
    assert interrupted and all(r.stop_reason == "interrupted" for r in interrupted)
    res = cli(home, "tune", "--study", "intr", "--resume", "--json")
    assert res.returncode == 0, res.stderr
    assert last_json(res.stdout)["trials"] == 3
    runs = check_trial_runs(home, "intr", 3, "local")
    assert {r.run_id for r in interrupted} <= {r.run_id for r in runs}
