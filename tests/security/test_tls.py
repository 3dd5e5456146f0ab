"""``rediss://``: training runs over TLS against a real ``redis-server`` started with TLS.

The server gets a certificate from a CA made in ``tmp_path`` (``cryptography``); it listens on
TLS only (``--port 0``). A run trains through ``rediss://…?ssl_ca_certs=ca.pem`` with the process
executor and produces the same weights as an in-memory run; a plain ``redis://`` client and a
``rediss://`` client that does not trust the CA are both refused with one clear error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import RedisServer

from lambdanet import adapters
from lambdanet.errors import StoreUnavailable

LAMBDANET = str(Path(sys.executable).with_name("lambdanet"))
PARAMS = {"epochs": 3, "layers": 2, "activations": {"layer1": "relu", "layer2": "sigmoid"},
          "neurons": {"layer1": 4, "layer2": 1}, "learning_rate": 0.05, "batch_size": 16}

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    assert RedisServer.supports_tls(), "this redis-server is built without TLS (Debian's redis-server has it)"
    with RedisServer(tmp_path_factory.mktemp("tls-redis"), tls=True) as server:
        yield server


def _train(home: Path, tmp: Path, store: str, executor: str, model: str) -> subprocess.CompletedProcess[str]:
    data = tmp / "d.npz"
    if not data.exists():
        rng = np.random.default_rng(1)
        np.savez(data, x=rng.integers(0, 256, (32, 8, 8, 3), dtype=np.uint8), y=np.arange(32) % 2)
        (tmp / "p.json").write_text(json.dumps(PARAMS))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMBDANET_")}
    env["LAMBDANET_HOME"] = str(home)
    return subprocess.run([LAMBDANET, "train", str(data), "--params", str(tmp / "p.json"), "--model", model,
                           "--store", store, "--executor", executor, "--workers", "2", "--json"],
                          env=env, capture_output=True, text=True, timeout=300)


def test_store_roundtrip_over_tls(tls_redis: RedisServer) -> None:
    store = adapters.open_store(tls_redis.url)
    try:
        a = np.arange(20, dtype=np.float32).reshape(4, 5)
        store.put("ln:tls:a", a)
        np.testing.assert_array_equal(store.get("ln:tls:a"), a)
    finally:
        store.delete_prefix("ln:tls:")
        store.close()


def test_plain_and_untrusted_clients_are_refused(tls_redis: RedisServer) -> None:
    plain = adapters.open_store(f"redis://127.0.0.1:{tls_redis.port}/0?socket_timeout=3")
    with pytest.raises(StoreUnavailable) as info:
        plain.put("ln:tls:x", np.zeros(1))
    assert "\n" not in str(info.value)
    untrusted = adapters.open_store(f"rediss://127.0.0.1:{tls_redis.port}/0")
    with pytest.raises(StoreUnavailable) as info:
        untrusted.put("ln:tls:x", np.zeros(1))
    assert "certificate" in str(info.value).lower() or "ssl" in str(info.value).lower()


@pytest.mark.slow
def test_training_over_rediss_matches_memory(tls_redis: RedisServer, tmp_path: Path) -> None:
    over_tls = _train(tmp_path / "home", tmp_path, tls_redis.url, "process", "tls")
    assert over_tls.returncode == 0, over_tls.stderr
    result = json.loads(over_tls.stdout.strip().splitlines()[-1])
    assert result["status"] == "completed" and result["epochs_run"] == PARAMS["epochs"]
    assert result["store_bytes"] > 0
    local = _train(tmp_path / "home", tmp_path, "memory://", "local", "mem")
    assert local.returncode == 0, local.stderr
    from lambdanet.objects.folder import FolderStore
    from lambdanet.registry import ModelRegistry

    registry = ModelRegistry(FolderStore(tmp_path / "home" / "objects"))
    a, b = registry.load("tls:1").weights, registry.load("mem:1").weights
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6)
