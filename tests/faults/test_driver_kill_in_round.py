"""kill -9 of the driver in the middle of a long round, then ``lambdanet resume``: the round goes
on from the in-round checkpoint the workers left in Redis, not from its first epoch, and the
run ends with the single-process network's weights."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from tests.conftest import REPO, RedisServer
from tests.e2e.engine_support import config, reference_run, small_data
from tests.security.seed import LAMBDANET, cli_env

pytestmark = [pytest.mark.slow, pytest.mark.redis]


@pytest.mark.timeout(300)
def test_a_driver_killed_mid_round_resumes_from_the_in_round_checkpoint(tmp_path: Path) -> None:
    data = small_data(tmp_path)
    cfg = config(epochs=1500, batch_size=209, learning_rate=0.01)
    params = tmp_path / "params.json"
    params.write_text(json.dumps(cfg.model_dump()))
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis")
    server.start()
    env = cli_env(tmp_path / "home")
    try:
        driver = subprocess.Popen(
            [LAMBDANET, "train", str(data), "--params", str(params), "--workers", "2", "--executor", "process",
             "--store", server.url, "--checkpoint-seconds", "0.5", "--json"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        client: Any = redis.Redis.from_url(server.url)
        deadline = time.monotonic() + 120
        latest: list[bytes] = []
        while time.monotonic() < deadline and driver.poll() is None:
            latest = client.keys("ln:*:1:ckpt:latest")
            if latest:
                break
            time.sleep(0.05)
        assert latest, "no in-round checkpoint was written before the run ended: the test proved nothing"
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        run_id = latest[0].decode().split(":")[1]
        resumed = subprocess.run([LAMBDANET, "resume", run_id, "--store", server.url, "--json"], cwd=REPO,
                                 env=env, capture_output=True, text=True, timeout=240)
        assert resumed.returncode == 0, resumed.stderr
        shown = subprocess.run([LAMBDANET, "runs", "show", run_id, "--json"], cwd=REPO, env=env,
                               capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
    finally:
        server.stop()
    run = json.loads(shown.stdout.strip().splitlines()[-1])
    run = run.get("run", run)
    log = run["metrics"].get("retry_log") or []
    continued = [e for e in log if e["attempt"] == -1]
    assert continued and continued[0]["round"] == 1 and continued[0]["from_epoch"] > 0, log
    assert run["metrics"]["epochs_done"] == 1500 and run["status"] == "completed"

    from lambdanet.objects.folder import FolderStore
    from lambdanet.registry import ModelRegistry

    weights = ModelRegistry(FolderStore(tmp_path / "home" / "objects")).load(str(run["model"])).weights
    for name, value in reference_run(cfg, data).params.items():
        np.testing.assert_allclose(weights[name], value, rtol=1e-9, atol=1e-12, err_msg=name)
