"""``lambdanet plan`` end to end: bad input is one line and exit 2; ``--json`` is one object with
the figures, the assumptions and what is uncertain; and a ``--target local`` prediction of a tiny
MLP at K = 2 lands within ±25 % of a real ``lambdanet train`` of the same run on this machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CATVNONCAT, REPO

DATA = str(CATVNONCAT / "datasets.h5")
TINY = {"epochs": 150, "layers": 3, "activations": {"layer1": "relu", "layer2": "relu", "layer3": "sigmoid"},
        "neurons": {"layer1": 16, "layer2": 8, "layer3": 1}, "learning_rate": 0.0075, "batch_size": 64}


def cli(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LAMBDANET_HOME": str(home), "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-m", "lambdanet", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=home)


@pytest.mark.parametrize(("flags", "says"), [
    (["--memory", "100"], "--memory must be 128 to 10,240 MB"),
    (["--memory", "10241"], "--memory must be 128 to 10,240 MB"),
    (["--workers", "0"], "--workers must be at least 1, got 0"),
    (["--sync-every", "0"], "--sync-every must be at least 1"),
    (["--compress", "zip"], "--compress: unknown compression 'zip' (allowed: none, fp16, bf16)"),
    (["--target", "gcp"], "--target: unknown target 'gcp' (allowed: local, lambda)"),
    (["--arch", "riscv"], "--arch: unknown architecture 'riscv' (allowed: x86_64, arm64)"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, flags: list[str], says: str) -> None:
    args = ["plan", DATA, "--target", "lambda", *flags] if "--target" not in flags else ["plan", DATA, *flags]
    res = cli(tmp_path, *args)
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: ") and says in res.stderr, res.stderr
    assert res.stdout == ""


def test_json_is_one_object_with_figures_assumptions_and_uncertainty(tmp_path: Path) -> None:
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    res = cli(tmp_path, "plan", DATA, "-p", "tiny.json", "-k", "4", "--strategy", "data", "--sync-every", "4",
              "--compress", "bf16", "--target", "lambda", "--memory", "3538", "--arch", "arm64", "--json")
    assert res.returncode == 0, res.stderr
    (line,) = res.stdout.splitlines()
    plan = json.loads(line)
    assert plan["wall_seconds"] > 0 and plan["worker_seconds"] > plan["wall_seconds"] and plan["usd"] > 0
    assert plan["syncs"] == 150 * 4 // 4  # 209 samples / 64 = 4 steps an epoch, a sync every 4
    params = 12288 * 16 + 16 + 16 * 8 + 8 + 8 + 1
    assert plan["bytes"] == plan["syncs"] * (3 * 4 - 2) * params * 2  # bf16 on the wire
    assert plan["assumptions"]["vcpus"] == pytest.approx(2.0)
    assert plan["assumptions"]["lambda"]["gb_second_usd_arm64"] == 0.0000133334
    assert plan["uncertain"] and all(isinstance(u, str) for u in plan["uncertain"])
    # the calibration is cached under LAMBDANET_HOME: a second plan reads it
    assert (tmp_path / "plan" / "calibration.json").is_file()


# GENEROUS, WALL-CLOCK: a prediction against a real run on a shared machine. ±25 % as issue 24 asks.
@pytest.mark.slow
def test_local_prediction_is_within_25_percent_of_a_real_k2_run(tmp_path: Path) -> None:
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    common = [DATA, "-p", "tiny.json", "-k", "2", "--strategy", "data", "--json"]
    plan = cli(tmp_path, "plan", *common, "--target", "local")
    assert plan.returncode == 0, plan.stderr
    predicted = json.loads(plan.stdout.splitlines()[-1])
    run = cli(tmp_path, "train", *common)
    assert run.returncode == 0, run.stderr
    measured = json.loads(run.stdout.splitlines()[-1])
    assert measured["store_bytes"] == pytest.approx(predicted["bytes"], rel=0.01)  # + checkpoints and shards
    ratio = predicted["wall_seconds"] / measured["wall_seconds"]
    assert 0.75 <= ratio <= 1.25, (predicted["wall_seconds"], measured["wall_seconds"], predicted["breakdown"])
