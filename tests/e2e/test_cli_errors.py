"""Errors that say enough: a key typo names itself and the key it misspells, an error about a file
names the file, ``runs show latest`` works as ``report latest`` does, and ``serve`` on a busy
port is one line (exit 3) before anything announces a server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CATVNONCAT, IMAGES, REPO

DATA = str(CATVNONCAT / "datasets.h5")


def cli(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LAMBDANET_HOME": str(home), "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-m", "lambdanet", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=home)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    home = tmp_path_factory.mktemp("errors-home")
    res = cli(home, "train", DATA, "--epochs", "5", "--batch-size", "209", "--json")
    assert res.returncode == 0, res.stderr
    return home, json.loads(res.stdout.splitlines()[-1])["run_id"]


def test_a_key_typo_names_the_key_and_what_it_misspells(tmp_path: Path) -> None:
    params = json.loads((REPO / "examples" / "itsacat" / "parameters.json").read_text())
    params["learnig_rate"] = params.pop("learning_rate")
    (tmp_path / "typo.json").write_text(json.dumps(params))
    res = cli(tmp_path, "train", DATA, "--params", "typo.json")
    assert res.returncode == 2
    assert res.stderr == "error: typo.json: unknown key 'learnig_rate' (did you mean 'learning_rate'?)\n"


def test_predict_on_a_text_file_names_the_file(trained: tuple[Path, str], tmp_path: Path) -> None:
    home, _ = trained
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo\n")
    res = cli(home, "predict", str(IMAGES / "grumpy_cat.jpeg"), str(notes), "--model", "catvnoncat")
    assert res.returncode == 2
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {notes}: not an image"), res.stderr


def test_runs_show_latest_is_the_newest_run(trained: tuple[Path, str]) -> None:
    home, run_id = trained
    latest = cli(home, "runs", "show", "latest", "--json")
    assert latest.returncode == 0, latest.stderr
    by_id = cli(home, "runs", "show", run_id, "--json")
    assert json.loads(latest.stdout) == json.loads(by_id.stdout)
    assert json.loads(latest.stdout)["run"]["run_id"] == run_id
    human = cli(home, "runs", "show", "latest")
    assert human.returncode == 0 and human.stdout.startswith(run_id)


def test_runs_show_latest_on_an_empty_ledger_is_one_line(tmp_path: Path) -> None:
    res = cli(tmp_path, "runs", "show", "latest")
    assert res.returncode == 2
    assert res.stderr == "error: the ledger has no runs yet: train one with 'lambdanet train DATA'\n"


def test_serve_on_a_busy_port_is_one_line_before_any_announcement(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = cli(tmp_path, "serve", "--registry", str(tmp_path / "objects"), "--port", str(port), timeout=60)
    assert res.returncode == 3
    assert res.stdout == ""
    assert res.stderr == (f"error: cannot serve on 127.0.0.1:{port}: the port is already in use (another "
                          "server?); stop it or pick another --port\n")


def test_serve_on_a_host_that_is_not_this_machine_is_one_line(tmp_path: Path) -> None:
    res = cli(tmp_path, "serve", "--registry", str(tmp_path / "objects"), "--host", "192.0.2.1", "--port", "0",
              timeout=60)
    assert res.returncode == 2
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --host 192.0.2.1: not an address of this machine")
