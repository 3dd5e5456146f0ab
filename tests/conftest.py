"""Shared fixtures: a private LAMBDANET_HOME, the shared data sets, and real servers on loopback
(a ``redis-server`` and ``moto_server``) started by the tests themselves on free ports."""

from __future__ import annotations

import os

# One BLAS thread per process: the tests run many worker threads/processes on 2 cores, and
# oversubscribed OpenBLAS threads made training 10-30x slower. (Benchmarks do not set this.)
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lambdanet.testing.serving import free_port

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CATVNONCAT = SHARED / "datasets" / "catvnoncat"
CIFAR10 = SHARED / "datasets" / "cifar10"
IMAGES = SHARED / "images"
ARTIFACTS = REPO / "test-artifacts"


def wait_for_port(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh LAMBDANET_HOME with embedded defaults (no stray env URLs)."""
    h = tmp_path / "home"
    monkeypatch.setenv("LAMBDANET_HOME", str(h))
    for var in ("LAMBDANET_LEDGER", "LAMBDANET_OBJECTS", "LAMBDANET_NOTIFIER", "LAMBDANET_STORE",
                "LAMBDANET_EXECUTOR"):
        monkeypatch.delenv(var, raising=False)
    return h


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


class RedisServer:
    """A real redis-server process on a free loopback port (stop/start for fault tests)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed: run scripts/test.sh (apt-get install redis-server)")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's standalone server (ThreadedMotoServer) on loopback; yields its endpoint URL and
    points boto3 at it through AWS_ENDPOINT_URL and dummy credentials."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                                             "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"})
    try:
        yield endpoint
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
