"""Shared fixtures: a private LAMBDANET_HOME, the shared data sets, and real servers on loopback
started by the tests themselves on free ports: ``redis-server`` (through :class:`RedisServer`, the
tests' one Redis launcher, with password and TLS options) and ``moto_server``."""

from __future__ import annotations

import os

# One BLAS thread per process: the tests run many worker threads/processes on 2 cores, and
# oversubscribed OpenBLAS threads made training 10-30x slower. (Benchmarks do not set this.)
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
import datetime
import ipaddress
import shutil
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import REPO, SHARED  # one place says where the shared data is
from tests.support.serving import free_port

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


def make_tls_files(folder: Path) -> dict[str, Path]:
    """A self-made CA and a server certificate for 127.0.0.1/localhost (PEM files in ``folder``)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def valid(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
        return (builder.serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1)))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (valid(x509.CertificateBuilder().subject_name(name("lambdanet test CA"))
                     .issuer_name(name("lambdanet test CA")).public_key(ca_key.public_key()))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                            crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
               .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (valid(x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca_cert.subject)
                  .public_key(key.public_key()))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = {"ca": folder / "ca.pem", "cert": folder / "server.pem", "key": folder / "server.key"}
    files["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return files


def _redis_exe() -> str:
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed: run scripts/test.sh (apt-get install redis-server)")
    return exe


class RedisServer:
    """THE way the tests start a real ``redis-server``: a free loopback port, no persistence,
    optionally a password and/or TLS only (a CA and server certificate made in ``workdir``);
    ``stop()`` / ``start()`` / ``restart()`` keep the port (fault tests).

        with RedisServer(tmp) as r:                    # r.url == "redis://127.0.0.1:PORT/0"
        with RedisServer(tmp, password="s3cret") as r: # "redis://:s3cret@127.0.0.1:PORT/0"
        with RedisServer(tmp, tls=True) as r:          # "rediss://127.0.0.1:PORT/0?ssl_ca_certs=…/ca.pem"
    """

    def __init__(self, workdir: Path, *, password: str | None = None, tls: bool = False) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.password = password
        self.tls = make_tls_files(workdir / "tls") if tls else None
        self.log = workdir / f"redis-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def supports_tls() -> bool:
        """Whether this redis-server is built with TLS (Debian's is: it links libssl)."""
        out = subprocess.run(["ldd", _redis_exe()], capture_output=True, text=True).stdout
        return "libssl" in out

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls['ca']}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [_redis_exe(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.workdir), "--logfile", str(self.log)]
        if self.tls:
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.tls["cert"]),
                     "--tls-key-file", str(self.tls["key"]), "--tls-ca-cert-file", str(self.tls["ca"]),
                     "--tls-auth-clients", "no"]
        else:
            args += ["--port", str(self.port)]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)

    def stop(self) -> None:
        """SIGKILL (no shutdown save): the data is gone, as after a crash of a cache node."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


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


def both_outcomes(count: Counter[str], target: str, examples: Callable[[], None]) -> None:
    """Run a fuzz target's examples, then check both answers were exercised (``count`` holds
    ``"<target>.accepted"`` / ``".rejected"``): some inputs accepted — a decoder or parser that
    refuses everything would pass the per-example checks — and some refused."""
    before = Counter(count)
    examples()
    accepted = count[f"{target}.accepted"] - before[f"{target}.accepted"]
    rejected = count[f"{target}.rejected"] - before[f"{target}.rejected"]
    assert accepted > 0, f"{target}: no example was accepted ({rejected} refused)"
    assert rejected > 0, f"{target}: no example was refused ({accepted} accepted)"
