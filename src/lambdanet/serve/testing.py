"""Helpers for tests and benchmarks of the server: small real models and a uvicorn thread.

Usage::

    registry = ModelRegistry(FolderStore(tmp / "objects"))
    mv = register_catvnoncat_mlp(registry, shared / "datasets/catvnoncat/datasets.h5")
    with UvicornThread(create_app(registry)) as server:
        httpx.get(server.url + "/v2/health/ready")

The models are trained for real (the numpy reference trainer, a few hundred full-batch
iterations on catvnoncat; a few Adam epochs on a CIFAR-10 subset), so their labels mean
something; registered with the metadata of docs/architecture.md.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from lambdanet.config import MLPConfig
from lambdanet.registry import ModelRegistry, ModelVersion

CIFAR_CLASSES = ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _mlp_metadata(name: str, classes: list[str], input_shape: list[int], config: MLPConfig,
                  layer_dims: list[int], activations: list[str], metrics: dict[str, float]) -> dict[str, Any]:
    return {"name": name, "kind": "mlp", "classes": classes, "input_shape": input_shape,
            "dtype": config.dtype,
            "preprocessing": {"resize": "bilinear", "scale": 255.0, "mean": None, "std": None},
            "architecture": {"layer_dims": layer_dims, "activations": activations},
            "config": config.model_dump(), "metrics": metrics, "run_id": "test", "created_at": time.time()}


def _train(config: MLPConfig, x: np.ndarray, y: np.ndarray, n_classes: int) -> tuple[dict, list[int], list[str]]:
    from lambdanet.data.readers import to_matrix, to_targets
    from lambdanet.nn.reference import train

    activations = [config.activations[f"layer{i}"] for i in range(1, config.layers + 1)]
    layer_dims = [int(np.prod(x.shape[1:]))] + [config.neurons[f"layer{i}"] for i in range(1, config.layers + 1)]
    X = to_matrix(x, config.dtype)  # (n_x, m)
    Y = to_targets(y, n_classes, activations[-1], config.dtype)
    result = train(config, X, Y)
    return result.params, layer_dims, activations


def accuracy(mv: ModelVersion, x: np.ndarray, y: np.ndarray) -> float:
    from lambdanet.predictor import load_predictor

    probs = load_predictor(mv).predict_proba(x)  # (m, C)
    return float((probs.argmax(axis=1) == y).mean())


def register_catvnoncat_mlp(registry: ModelRegistry, h5: Path, *, name: str = "itsacat", epochs: int = 400,
                            hidden: int = 7, seed: int = 1) -> ModelVersion:
    """Train a [12288, hidden, 1] sigmoid MLP on catvnoncat (full batch) and register it."""
    from lambdanet.data.readers import load_dataset

    ds = load_dataset(h5)
    config = MLPConfig(epochs=epochs, layers=2, activations={"layer1": "relu", "layer2": "sigmoid"},
                       neurons={"layer1": hidden, "layer2": 1}, learning_rate=0.0075, batch_size=4096,
                       seed=seed, dtype="float32")
    params, dims, acts = _train(config, ds.x_train, ds.y_train, 2)
    meta = _mlp_metadata(name, list(ds.classes), list(ds.x_train.shape[1:]), config, dims, acts, {})
    mv = registry.register(name, params, meta)
    return mv


def load_cifar_subset(npz_dir: Path, n_train: int, n_test: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """A random subset of the shared CIFAR-10 npz files (they are sorted by class):
    uint8 (n, 32, 32, 3) images and int64 labels for train and test."""
    out: list[np.ndarray] = []
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        with np.load(npz_dir / f"cifar10_{split}.npz", allow_pickle=False) as data:
            x, y = data["x"], data["y"]
        idx = np.sort(rng.permutation(len(y))[:n])
        out += [np.ascontiguousarray(x[idx]), y[idx].astype(np.int64)]
    return tuple(out)


def register_cifar_mlp(registry: ModelRegistry, npz_dir: Path, *, name: str = "cifar", n_train: int = 3000,
                       epochs: int = 8, seed: int = 1) -> ModelVersion:
    """Train a [3072, 64, 10] softmax MLP (Adam) on a CIFAR-10 subset and register it."""
    x, y, _, _ = load_cifar_subset(npz_dir, n_train, 0)
    config = MLPConfig(epochs=epochs, layers=2, activations={"layer1": "relu", "layer2": "softmax"},
                       neurons={"layer1": 64, "layer2": 10}, learning_rate=0.002, batch_size=128,
                       optimizer="adam", init="he", seed=seed, dtype="float32")
    params, dims, acts = _train(config, x, y, 10)
    meta = _mlp_metadata(name, CIFAR_CLASSES, [32, 32, 3], config, dims, acts, {})
    return registry.register(name, params, meta)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class UvicornThread:
    """A real uvicorn server for ``app`` on a free loopback port, in a daemon thread."""

    def __init__(self, app: Any, port: int | None = None, **config: Any) -> None:
        import uvicorn

        self.port = port or free_port()
        cfg = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on",
                             **config)
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> UvicornThread:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on 127.0.0.1:{self.port}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self) -> UvicornThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
