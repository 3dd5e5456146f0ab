"""Secrets never reach logs, the ledger or reports.

A real password-protected ``redis-server`` is started; a run trains through it with the process
executor (so the store URL travels to worker processes) while fake AWS keys sit in the
environment. Then every byte lambdanet wrote — the home folder (ledger.db, objects, checkpoints),
stdout/stderr of ``train``, ``runs show``, ``report`` and the report's HTML/JSON — is searched
for the password and the keys. A wrong password must fail with one line that does not echo it.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import RedisServer

LAMBDANET = str(Path(sys.executable).with_name("lambdanet"))
PASSWORD = "pw" + secrets.token_hex(12)
AWS_ID = "AKIA" + secrets.token_hex(8).upper()
AWS_SECRET = "aws" + secrets.token_hex(16)
PARAMS = {"epochs": 4, "layers": 2, "activations": {"layer1": "relu", "layer2": "sigmoid"},
          "neurons": {"layer1": 4, "layer2": 1}, "learning_rate": 0.01, "batch_size": 16, "report_every": 1}

pytestmark = pytest.mark.redis


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAMBDANET_", "AWS_"))}
    env.update({"LAMBDANET_HOME": str(home), "AWS_ACCESS_KEY_ID": AWS_ID, "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
                "AWS_DEFAULT_REGION": "us-east-1", "NO_COLOR": "1"})
    return subprocess.run([LAMBDANET, *args], env=env, capture_output=True, text=True, timeout=300, cwd=home.parent)


def _leaks(blob: bytes, where: str) -> list[str]:
    return [f"{name} in {where}" for name, secret in (("redis password", PASSWORD), ("AWS key id", AWS_ID),
                                                      ("AWS secret", AWS_SECRET)) if secret.encode() in blob]


def _url(form: str, port: int, password: str) -> str:
    if form == "userinfo":
        return f"redis://:{password}@127.0.0.1:{port}/0"
    if form == "username":
        return f"redis://default:{password}@127.0.0.1:{port}/0"
    return f"redis://127.0.0.1:{port}/0?password={password}"


@pytest.mark.slow
@pytest.mark.parametrize("form", [
    "userinfo",
    "query",
])
def test_redis_password_and_aws_keys_never_leak(form: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    data = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.integers(0, 256, (32, 8, 8, 3), dtype=np.uint8), y=np.arange(32) % 2)
    params = tmp_path / "p.json"
    params.write_text(json.dumps(PARAMS))
    outputs: list[tuple[str, bytes]] = []
    with RedisServer(tmp_path / "redis", password=PASSWORD) as server:
        train = _cli(home, "train", str(data), "--params", str(params), "--model", "secret-test",
                     "--store", _url(form, server.port, PASSWORD), "--executor", "process", "--workers", "2",
                     "--json")
        outputs.append(("train stdout/stderr", (train.stdout + train.stderr).encode()))
        assert train.returncode == 0, train.stderr
        run_id = json.loads(train.stdout.strip().splitlines()[-1])["run_id"]
        wrong = "wrong" + secrets.token_hex(8)
        bad = _cli(home, "train", str(data), "--params", str(params), "--model", "secret-test",
                   "--store", _url(form, server.port, wrong), "--executor", "process", "--json")
        # refused before a run exists: the store is checked first (exit 3), one error line, no traceback
        assert bad.returncode == 3, bad.stderr
        assert "Traceback" not in bad.stderr
        assert bad.stderr.strip().splitlines()[-1].startswith("error:"), bad.stderr
        assert "refused the password" in bad.stderr
        assert wrong not in bad.stderr + bad.stdout, "the wrong password was echoed"
        outputs.append(("failed train stdout/stderr", (bad.stdout + bad.stderr).encode()))
    show = _cli(home, "runs", "show", run_id, "--json")
    assert show.returncode == 0, show.stderr
    outputs.append(("runs show", (show.stdout + show.stderr).encode()))
    listing = _cli(home, "runs", "list", "--json")
    assert [r["run_id"] for r in map(json.loads, listing.stdout.splitlines())] == [run_id]
    outputs.append(("runs list", (listing.stdout + listing.stderr).encode()))
    report = _cli(home, "report", run_id, "--out", str(tmp_path / "report.html"), "--json")
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["run_id"] == run_id  # the metrics, on stdout
    outputs.append(("report stdout/stderr", (report.stdout + report.stderr).encode()))
    files = [p for p in home.rglob("*") if p.is_file()] + [tmp_path / "report.html"]
    assert (home / "ledger.db").exists() and (tmp_path / "report.html").exists()
    for path in files:
        outputs.append((str(path.relative_to(tmp_path)), path.read_bytes()))
    # the store URL did reach the ledger — redacted
    assert b"***" in (home / "ledger.db").read_bytes() or form == "query"
    leaks = [leak for where, blob in outputs for leak in _leaks(blob, where)]
    assert not leaks, leaks
    assert len(outputs) >= 8
