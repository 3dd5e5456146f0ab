"""Helpers for tests and benchmarks of the server: small real models and a uvicorn thread.

Usage::

    registry = ModelRegistry(FolderStore(tmp / "objects"))
    mv = register_catvnoncat_mlp(registry, shared / "datasets/catvnoncat/datasets.h5")
    with UvicornThread(create_app(registry)) as server:
        httpx.get(server.url + "/v2/health/ready")

The models are trained for real (the numpy reference trainer, 250 full-batch
momentum epochs on catvnoncat; 60 full-batch Adam epochs on 2,000 CIFAR-10 images), so their labels mean
something; registered with the metadata of docs/architecture.md.
"""

from __future__ import annotations

import functools
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


def register_catvnoncat_mlp(registry: ModelRegistry, h5: Path, *, name: str = "itsacat", epochs: int = 250,
                            hidden: int = 7, seed: int = 1) -> ModelVersion:
    """Train a [12288, hidden, 1] sigmoid MLP on catvnoncat (full batch, momentum; train accuracy
    about 0.83 after 250 epochs) and register it."""
    params, meta = _catvnoncat(str(h5), epochs, hidden, seed)
    return registry.register(name, params, {**meta, "name": name})


@functools.lru_cache(maxsize=4)
def _catvnoncat(h5: str, epochs: int, hidden: int, seed: int) -> tuple[dict, dict]:
    """Trained once per process (several test modules share it)."""
    from lambdanet.data.readers import load_dataset

    name = "itsacat"
    ds = load_dataset(h5)
    config = MLPConfig(epochs=epochs, layers=2, activations={"layer1": "relu", "layer2": "sigmoid"},
                       neurons={"layer1": hidden, "layer2": 1}, learning_rate=0.01, batch_size=4096,
                       optimizer="momentum", seed=seed, dtype="float32")
    params, dims, acts = _train(config, ds.x_train, ds.y_train, 2)
    meta = _mlp_metadata(name, list(ds.classes), list(ds.x_train.shape[1:]), config, dims, acts, {})
    return params, meta


def load_cifar_subset(npz_dir: Path, n_train: int, n_test: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Two disjoint random subsets of the shared ``cifar10_test.npz`` (small and quick to load;
    the file is sorted by class): uint8 (n, 32, 32, 3) images and int64 labels."""
    with np.load(npz_dir / "cifar10_test.npz", allow_pickle=False) as data:
        x, y = data["x"], data["y"]
    idx = np.random.default_rng(seed).permutation(len(y))
    tr, te = np.sort(idx[:n_train]), np.sort(idx[n_train:n_train + n_test])
    return x[tr], y[tr].astype(np.int64), x[te], y[te].astype(np.int64)


def register_cifar_mlp(registry: ModelRegistry, npz_dir: Path, *, name: str = "cifar", n_train: int = 2000,
                       epochs: int = 60, seed: int = 1) -> ModelVersion:
    """Train a [3072, 32, 10] softmax MLP (full-batch Adam) on a CIFAR-10 subset and register it."""
    params, meta = _cifar(str(npz_dir), n_train, epochs, seed)
    return registry.register(name, params, {**meta, "name": name})


@functools.lru_cache(maxsize=2)
def _cifar(npz_dir: str, n_train: int, epochs: int, seed: int) -> tuple[dict, dict]:
    name = "cifar"
    x, y, _, _ = load_cifar_subset(Path(npz_dir), n_train, 0)
    config = MLPConfig(epochs=epochs, layers=2, activations={"layer1": "relu", "layer2": "softmax"},
                       neurons={"layer1": 32, "layer2": 10}, learning_rate=0.001, batch_size=4096,
                       optimizer="adam", init="he", seed=seed, dtype="float32")
    params, dims, acts = _train(config, x, y, 10)
    meta = _mlp_metadata(name, CIFAR_CLASSES, [32, 32, 3], config, dims, acts, {})
    return params, meta


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
