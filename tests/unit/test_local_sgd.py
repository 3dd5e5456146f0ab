"""The pieces of the ``data`` strategy's communication options on their own: the 16-bit wire
forms against rounding written here (fp16 through numpy's half, bf16 through the float32 bits),
error feedback keeps what the rounding drops, ``average`` is the worker-order mean on K threads,
and a bad ``sync_every`` / ``compress`` is one line (the config's, and the CLI's with exit 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest

from lambdanet.config import itsacat_defaults, parse_config
from lambdanet.engine.collectives import Collective, average, block_bounds, compress, decompress, with_feedback
from lambdanet.errors import ConfigError
from lambdanet.stores.memory import MemoryStore
from tests.conftest import CATVNONCAT, REPO


def bf16_by_hand(x: np.ndarray) -> np.ndarray:
    """Nearest bfloat16, ties to even, one float32 at a time through its bit pattern."""
    out = np.empty(x.shape, np.float32)
    for i, v in enumerate(x.astype(np.float32)):
        bits = int(np.array(v, np.float32).view(np.uint32))
        low, high = bits & 0xFFFF, bits >> 16
        if low > 0x8000 or (low == 0x8000 and high & 1):
            high += 1
        out[i] = np.array(high << 16, np.uint32).view(np.float32)
    return out


def values() -> np.ndarray:
    rng = np.random.default_rng(7)
    special = np.array([0.0, -0.0, 1.0, 1.00390625, 1.01171875, 1 + 2**-8 + 2**-20, 3e-5, -7e-8, 60000.0], np.float32)
    return np.concatenate([special, rng.normal(0, 1e-3, 200).astype(np.float32)])


def test_bf16_rounds_to_nearest_even() -> None:
    x = values()
    wire = compress(x, "bf16")
    assert wire.dtype == np.uint16 and wire.nbytes == x.nbytes // 2
    np.testing.assert_array_equal(decompress(wire, "bf16", np.float32), bf16_by_hand(x))
    # 1 + 2^-8 is a tie between 1 and 1 + 2^-7: the even one (1) wins; 1 + 3·2^-8 rounds up to 1 + 2^-6
    assert decompress(compress(np.array([1.00390625, 1.01171875], np.float32), "bf16"), "bf16", np.float64).tolist() \
        == [1.0, 1.015625]


def test_fp16_is_ieee_half_and_float64_keeps_its_dtype() -> None:
    x = values().astype(np.float64)
    wire = compress(x, "fp16")
    assert wire.dtype == np.float16
    back = decompress(wire, "fp16", np.float64)
    assert back.dtype == np.float64
    np.testing.assert_array_equal(back, np.array([float(np.float16(v)) for v in x]))


@pytest.mark.parametrize("kind", ["fp16", "bf16"])
def test_error_feedback_drops_nothing_for_good(kind: str) -> None:
    """Sent so far + the residual == everything that was meant to be sent (to float64 rounding)."""
    rng = np.random.default_rng(3)
    residual = np.zeros(50)
    meant, sent = np.zeros(50), np.zeros(50)
    for _ in range(40):
        x = rng.normal(0, 1e-4, 50)
        meant += x
        sent += decompress(with_feedback(x, residual, kind), kind, np.float64)
    np.testing.assert_allclose(sent + residual, meant, rtol=0, atol=1e-15)
    assert np.max(np.abs(residual)) < 1e-5  # bounded by one rounding step, not growing


@pytest.mark.parametrize(("K", "kind"), [(2, "none"), (3, "fp16"), (4, "bf16")])
def test_average_is_the_worker_order_mean_on_every_worker(K: int, kind: str) -> None:
    rng = np.random.default_rng(K)
    deltas = [rng.normal(0, 1e-2, 37).astype(np.float32) for _ in range(K)]
    store = MemoryStore(f"avg-{uuid.uuid4().hex[:6]}")
    got: dict[int, list[np.ndarray]] = {}
    residuals = [np.full(37, 1e-6, np.float32) for _ in range(K)]  # non-zero: carried into the payload
    bounds = block_bounds(37, K)  # worker k averages block k
    blocks = [np.zeros(bounds[k + 1] - bounds[k], np.float32) for k in range(K)]

    def worker(k: int) -> None:
        comm = Collective(store, "ln:avg:1:0", k, K, timeout_s=20)
        got[k] = [average(comm, deltas[k], kind, residuals[k].copy(), blocks[k].copy()) for _ in range(2)]

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(K)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    rnd = (lambda v: v) if kind == "none" else (lambda v: decompress(compress(v, kind), kind, np.float32))
    sent = [rnd(d + r) if kind != "none" else d for d, r in zip(deltas, residuals, strict=True)]
    total = sent[0] + sent[1]
    for s in sent[2:]:
        total += s
    want = rnd(total / K)  # the block residuals start at zero
    for k in range(K):
        np.testing.assert_array_equal(got[k][0], want)
        np.testing.assert_array_equal(got[k][1], got[0][1])  # the same bits everywhere, call after call


@pytest.mark.parametrize(("key", "value", "message"), [
    ("sync_every", 0, "config: sync_every: must be an integer >= 1 (local steps between averages), got 0"),
    ("sync_every", 2.5, "config: sync_every: must be an integer >= 1 (local steps between averages), got 2.5"),
    ("sync_every", True, "config: sync_every: must be an integer >= 1 (local steps between averages), got True"),
    ("compress", "int8", "config: compress: unknown value 'int8' (allowed: none, fp16, bf16)"),
])
def test_a_bad_value_is_one_config_line(key: str, value: object, message: str) -> None:
    for base in (itsacat_defaults(), {"model": "lenet", "epochs": 1}):
        with pytest.raises(ConfigError) as err:
            parse_config({**base, key: value})
        assert str(err.value) == message


def test_defaults_and_good_values() -> None:
    cfg = parse_config(itsacat_defaults())
    assert (cfg.sync_every, cfg.compress) == (1, "none")
    cfg = parse_config({"model": "fast", "epochs": 1, "sync_every": 8.0, "compress": "bf16"})
    assert (cfg.sync_every, cfg.compress) == (8, "bf16")


@pytest.mark.parametrize(("args", "line"), [
    (["--sync-every", "0"], "sync_every: must be an integer >= 1 (local steps between averages), got 0"),
    (["--sync-every", "four"], "sync_every: must be an integer >= 1 (local steps between averages), got 'four'"),
    (["--compress", "fp8"], "compress: unknown value 'fp8' (allowed: none, fp16, bf16)"),
])
def test_cli_bad_value_exits_2_with_one_line(tmp_path: Path, args: list[str], line: str) -> None:
    (tmp_path / "p.json").write_text(json.dumps({**itsacat_defaults(), "epochs": 1}))
    env = {**os.environ, "LAMBDANET_HOME": str(tmp_path), "PYTHONPATH": str(REPO / "src")}
    res = subprocess.run([sys.executable, "-m", "lambdanet", "train", str(CATVNONCAT / "datasets.h5"),
                          "--params", "p.json", *args], capture_output=True, text=True, env=env, timeout=120,
                         cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr == f"error: p.json: {line}\n"
