"""The user's path for a CNN: `lambdanet train … --strategy data -k 2` on a CIFAR-10 subset, then
`lambdanet predict` on a CIFAR test image; bad CNN configs end in one line and exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lambdanet.torchnet.data import CIFAR10_CLASSES
from tests.support.cnn import cifar_subset

LAMBDANET = [sys.executable, "-m", "lambdanet"]


def _cli(args: list[str], home: Path, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LAMBDANET, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "LAMBDANET_HOME": str(home), **env})


@pytest.fixture
def workdir(tmp_path: Path, home: Path) -> Path:
    x, y, xt, yt = cifar_subset(n_train=200, n_test=100)
    np.savez(tmp_path / "c_train.npz", x=x, y=y.astype(np.uint8))
    np.savez(tmp_path / "c_test.npz", x=xt, y=yt.astype(np.uint8))
    Image.fromarray(xt[0]).save(tmp_path / "test0.png")
    (tmp_path / "cnn.json").write_text(json.dumps({"model": "lenet", "epochs": 2, "batch_size": 50}))
    return tmp_path


def test_train_k2_then_predict(workdir: Path, home: Path) -> None:
    r = _cli(["train", "c_train.npz", "-p", "cnn.json", "--strategy", "data", "-k", "2", "--model", "cifar",
              "--json"], home, workdir)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["status"] == "completed" and result["model"] == "cifar:1"
    assert result["workers"] == 2 and result["strategy"] == "data" and result["epochs_run"] == 2
    assert 0.0 <= result["test_accuracy"] <= 1.0

    p = _cli(["predict", "test0.png", "--model", "cifar", "--json"], home, workdir)
    assert p.returncode == 0, p.stderr[-2000:]
    (line,) = p.stdout.strip().splitlines()  # one JSON object per image, one per line
    pred = json.loads(line)
    assert pred["label"] in CIFAR10_CLASSES and pred["model"] == "cifar:1"
    assert sum(pred["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert pred["label"] == max(pred["probabilities"], key=pred["probabilities"].get)


@pytest.mark.parametrize(("config", "message"), [
    ({"model": "resnet", "epochs": 1}, "model"),
    ({"model": "lenet", "epochs": 1, "dropout": 0.5}, "unknown key 'dropout'"),
    ({"model": "lenet", "epochs": 0}, "epochs"),
])
def test_bad_cnn_config_is_one_line_exit_2(workdir: Path, home: Path, config: dict, message: str) -> None:
    (workdir / "bad.json").write_text(json.dumps(config))
    r = _cli(["train", "c_train.npz", "-p", "bad.json", "--strategy", "data"], home, workdir)
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in r.stderr


def test_device_cuda_without_cuda_is_one_line_exit_2(workdir: Path, home: Path) -> None:

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    r = _cli(["train", "c_train.npz", "-p", "cnn.json", "--strategy", "data", "--device", "cuda"], home, workdir)
    assert r.returncode == 2 and "CUDA is not available" in r.stderr
