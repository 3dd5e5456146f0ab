"""`lambdanet serve` as users start it: a subprocess on a free loopback port."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from lambdanet.objects.folder import FolderStore
from lambdanet.registry import ModelRegistry
from tests.conftest import CATVNONCAT, IMAGES, wait_for_port
from tests.support.serving import free_port, register_catvnoncat_mlp

LAMBDANET = [sys.executable, "-m", "lambdanet.cli.main"]


def test_serve_command_serves_the_registry(tmp_path: Path, home: Path) -> None:
    objects = tmp_path / "objects"
    register_catvnoncat_mlp(ModelRegistry(FolderStore(objects)), CATVNONCAT / "datasets.h5")
    port = free_port()
    env = {**os.environ, "LAMBDANET_API_KEY": "from-env"}
    proc = subprocess.Popen([*LAMBDANET, "serve", "--registry", str(objects), "--port", str(port),
                             "--max-batch-size", "8", "--log-level", "warning"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, timeout_s=60)
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(base + "/v2/health/ready", timeout=20).json() == {"ready": True}
        assert httpx.get(base + "/v2/models/itsacat", timeout=20).status_code == 401
        r = httpx.post(base + "/predict", content=(IMAGES / "grumpy_cat.jpeg").read_bytes(), timeout=20,
                       headers={"content-type": "image/jpeg", "Authorization": "Bearer from-env"})
        assert r.status_code == 200 and r.json()["model"] == "itsacat" and r.json()["label"] in ("cat", "non-cat")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert b"Traceback" not in err
    assert f"on http://127.0.0.1:{port}/".encode() in err


@pytest.mark.parametrize("args, needle", [
    (["--registry", "ftp://nowhere/x"], "unknown objects scheme 'ftp'"),
    (["--port", "70000"], "70000"),
    (["--max-batch-size", "0"], "max-batch-size"),
])
def test_serve_command_bad_options_are_one_line(args: list[str], needle: str, home: Path) -> None:
    proc = subprocess.run([*LAMBDANET, "serve", *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]


@pytest.mark.parametrize("flag, logged", [([], False), (["--access-log"], True)])
def test_access_log_is_written_only_when_asked_for(tmp_path: Path, home: Path, flag: list[str],
                                                   logged: bool) -> None:
    """At the default log level (info) a request leaves uvicorn's access line only with
    ``--access-log``; the start-up lines are written either way."""
    objects = tmp_path / "objects"
    register_catvnoncat_mlp(ModelRegistry(FolderStore(objects)), CATVNONCAT / "datasets.h5")
    port = free_port()
    proc = subprocess.Popen([*LAMBDANET, "serve", "--registry", str(objects), "--port", str(port), *flag],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, timeout_s=60)
        r = httpx.post(f"http://127.0.0.1:{port}/predict", content=(IMAGES / "grumpy_cat.jpeg").read_bytes(),
                       headers={"content-type": "image/jpeg"}, timeout=20)
        assert r.status_code == 200
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=20)
    log = (out + err).decode()
    assert "Uvicorn running on" in log  # info level: uvicorn's own lines are there
    assert ('"POST /predict HTTP/1.1" 200' in log) is logged, log
