"""Small things the reliability suite seeds its homes with: a registered MLP model and a tiny
data set (no training needed), and a helper to start ``lambdanet serve`` on a free port.

    seed_mlp_model(home / "objects", "corpus", (8, 8, 3))    # version 1, alias production -> 1
    tiny_npz(tmp / "d.npz", m=32)                           # x uint8 (32, 8, 8, 3), y 0/1
    with serve(home, port, "--api-key", "k") as proc: ...
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tests.conftest import wait_for_port

LAMBDANET = str(Path(sys.executable).with_name("lambdanet"))
TINY_PARAMS: dict[str, Any] = {"epochs": 2, "layers": 2, "activations": {"layer1": "relu", "layer2": "sigmoid"},
                               "neurons": {"layer1": 4, "layer2": 1}, "learning_rate": 0.01, "batch_size": 16}


def seed_mlp_model(objects: Path, name: str, shape: tuple[int, int, int] = (8, 8, 3), hidden: int = 4) -> None:
    """Register version 1 of an MLP (H*W*C -> hidden -> 1, sigmoid) exactly as a finished run does."""
    from lambdanet.objects.folder import FolderStore
    from lambdanet.registry import ModelRegistry

    n_x = int(np.prod(shape))
    rng = np.random.RandomState(0)
    weights = {"W1": (rng.randn(hidden, n_x) / np.sqrt(n_x)).astype(np.float32),
               "b1": np.zeros((hidden, 1), np.float32),
               "W2": (rng.randn(1, hidden) / np.sqrt(hidden)).astype(np.float32),
               "b2": np.zeros((1, 1), np.float32)}
    meta = {"kind": "mlp", "classes": ["a", "b"], "input_shape": list(shape), "dtype": "float32",
            "preprocessing": {"resize": "bilinear", "scale": 255.0, "mean": None, "std": None},
            "architecture": {"layer_dims": [n_x, hidden, 1], "activations": ["relu", "sigmoid"]},
            "config": TINY_PARAMS, "metrics": {}, "run_id": "r-seed"}
    registry = ModelRegistry(FolderStore(objects))
    mv = registry.register(name, weights, meta)
    registry.set_alias(name, "production", mv.version)


def tiny_npz(path: Path, m: int = 32, shape: tuple[int, int, int] = (8, 8, 3), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    np.savez(path, x=rng.integers(0, 256, (m, *shape), dtype=np.uint8), y=np.arange(m) % 2,
             classes=np.array(["a", "b"]))
    return path


def write_params(path: Path, **changes: Any) -> Path:
    path.write_text(json.dumps({**TINY_PARAMS, **changes}))
    return path


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMBDANET_")}
    env.update({"LAMBDANET_HOME": str(home), "NO_COLOR": "1"}, **extra)
    return env


@contextlib.contextmanager
def serve(home: Path, port: int, *args: str, log: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """``lambdanet serve --port PORT ARGS…`` on loopback; terminated (SIGTERM) on exit."""
    out = (log or home.parent / f"serve-{port}.log").open("wb")
    proc = subprocess.Popen([LAMBDANET, "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--log-level", "warning", *args], env=cli_env(home), stdout=out,
                            stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, 60)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        out.close()
