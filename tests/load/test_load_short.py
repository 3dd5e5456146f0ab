"""A short version of the load test (``benchmarks/load.py --seconds 5``) in the suite.

64 concurrent connections against a real ``lambdanet serve`` on loopback, on the itsacat MLP and
on a LeNet: zero 5xx, zero transport errors, every request answered, the server alive with no
traceback in its log, and its resident memory after the run within 10 % of the memory after the
warm-up. The 60 s figures in the README come from ``python benchmarks/load.py`` (default 60 s).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import REPO
from tests.security.reliability_counts import record

SECONDS = os.environ.get("LAMBDANET_LOAD_SECONDS", "5")


@pytest.mark.slow
def test_short_load_on_mlp_and_lenet(tmp_path: Path) -> None:
    out = REPO / "test-artifacts" / "load-short.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "load.py"), "--seconds", SECONDS,
                           "--warmup", "2", "--concurrency", "64", "--mlp-epochs", "5", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode in (0, 1), proc.stderr
    doc = json.loads(out.read_text())
    assert doc["server_alive_after"] and not doc["traceback_in_server_log"]
    by_model = {m["model"]: m for m in doc["models"]}
    assert sorted(by_model) == ["lenet", "mlp"]
    for m in by_model.values():
        assert m["requests"] > 64, m
        assert m["server_errors_5xx"] == 0 and m["transport_errors"] == 0, m
        assert m["status"] == {"200": m["requests"]}, m
        assert m["sample_label"], m
        assert m["p50_ms"] <= m["p99_ms"] <= m["max_ms"]
        assert m["rss_growth_pct"] <= 10.0, m
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record("load_short", {m["model"]: {k: m[k] for k in ("concurrency", "seconds", "requests", "requests_per_s",
                                                          "p50_ms", "p99_ms", "server_errors_5xx",
                                                          "rss_growth_pct")} for m in doc["models"]}
           | {"command": "pytest tests/load (python benchmarks/load.py --seconds 5)"})
