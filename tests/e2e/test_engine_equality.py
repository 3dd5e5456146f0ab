"""The engine gives the single-process network's weights: ``neuron`` and ``data``, K = 1…6,
full batch and mini-batch 64, gd / adam / momentum (in float64 and float32), every activation,
a 3-class softmax, optimizer state carried across round checkpoints (a round per epoch), the
``data`` strategy with more workers than samples in a batch, the ``neuron`` strategy with more
workers than input features; float64 within 1e-9 and float32
within 5e-4; memory store + threads and a real redis-server + one process per worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lambdanet.config import MLPConfig
from lambdanet.engine.driver import Driver, RunResult, TrainRequest
from lambdanet.services import Services
from tests.conftest import RedisServer
from tests.e2e.engine_support import (
    FULL_DATA,
    config,
    few_samples_data,
    max_rel_diff,
    open_services,
    reference_run,
    small_data,
    three_class_data,
    weights_of,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_data(tmp_path_factory.mktemp("cats16"))


@pytest.fixture(scope="module")
def cifar3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return three_class_data(tmp_path_factory.mktemp("cifar3"))


def train_and_compare(data: Path, cfg: MLPConfig, rtol: float, **request: Any) -> tuple[Services, RunResult]:
    """One engine run against the reference: weights and every epoch's cost within ``rtol``."""
    ref = reference_run(cfg, data)
    services = open_services()
    res = Driver(services).train(TrainRequest(data=str(data), config=cfg, model_name="eq",
                                              collective_timeout_s=20, **request))
    assert res.status == "completed" and res.epochs_run == cfg.epochs
    assert res.retries == 0, [c.error for c in services.ledger.calls(res.run_id) if not c.ok]
    diff = max_rel_diff(weights_of(services, res), ref.params)
    assert diff <= rtol, f"weights differ from the reference by {diff:.3g} (relative)"
    rows = services.ledger.epochs(res.run_id)
    assert [r.epoch for r in rows] == list(range(1, cfg.epochs + 1))
    np.testing.assert_allclose([r.cost for r in rows], ref.costs, rtol=rtol)
    return services, res


# float64 pins the logic at 1e-9; float32 checks the dtype path, where the worker's BLAS sums in
# another order than the reference's and Adam's m / sqrt(v) step amplifies the rounding of
# near-zero gradients: 16 Adam steps differed by 1.2e-4 (max|diff| / max|w|) on an AVX2-only
# EPYC, under 1e-4 on an AVX-512 Xeon
FLOAT32_RTOL = 5e-4

CASES = [(s, k, b, o) for s in ("neuron", "data") for k in (1, 2, 3, 4)
         for b, o in ((209, "gd"), (64, "adam"))]
CASES += [("neuron", 3, 209, "adam"), ("data", 3, 64, "gd")]


@pytest.mark.parametrize("strategy,workers,batch,opt", CASES)
def test_memory_local_equals_reference(home: Path, data: Path, strategy: str, workers: int, batch: int,
                                       opt: str) -> None:
    cfg = config(batch_size=batch, optimizer=opt, learning_rate=0.01 if opt == "adam" else 0.0075)
    ref = reference_run(cfg, data)
    services = open_services()
    res = Driver(services).train(TrainRequest(data=str(data), config=cfg, workers=workers, strategy=strategy,
                                              epochs_per_round=2, model_name="eq", collective_timeout_s=20))
    assert res.status == "completed" and res.epochs_run == 3 and res.rounds == 2
    assert res.retries == 0, [c.error for c in services.ledger.calls(res.run_id) if not c.ok]
    assert max_rel_diff(weights_of(services, res), ref.params) <= 1e-9
    rows = services.ledger.epochs(res.run_id)
    assert [r.epoch for r in rows] == [1, 2, 3]
    assert all(abs(r.cost - c) <= 1e-9 * abs(c) for r, c in zip(rows, ref.costs, strict=True))


@pytest.mark.parametrize("workers", [3, 4])
def test_other_activations_softmax_and_momentum(home: Path, data: Path, workers: int) -> None:
    cfg = config(activations={"layer1": "tanh", "layer2": "leaky_relu", "layer3": "sigmoid",
                              "layer4": "softmax"},
                 neurons={"layer1": 20, "layer2": 7, "layer3": 3, "layer4": 2},
                 optimizer="momentum", batch_size=64, init="he")
    ref = reference_run(cfg, data)
    services = open_services()
    for strategy in ("neuron", "data"):
        res = Driver(services).train(TrainRequest(data=str(data), config=cfg, workers=workers,
                                                  strategy=strategy, model_name="soft"))
        assert max_rel_diff(weights_of(services, res), ref.params) <= 1e-9, strategy


@pytest.mark.parametrize("strategy,workers", [("neuron", 2), ("data", 3)])
@pytest.mark.parametrize("opt", ["gd", "momentum", "adam"])
def test_float32_every_optimizer(home: Path, data: Path, strategy: str, workers: int, opt: str) -> None:
    cfg = config(dtype="float32", epochs=4, batch_size=64, optimizer=opt,
                 learning_rate=0.01 if opt == "adam" else 0.05)
    train_and_compare(data, cfg, FLOAT32_RTOL, workers=workers, strategy=strategy, epochs_per_round=2)


@pytest.mark.parametrize("strategy,workers", [("neuron", 3), ("data", 2)])
@pytest.mark.parametrize("opt", ["momentum", "adam"])
def test_optimizer_state_crosses_every_round_checkpoint(home: Path, data: Path, strategy: str, workers: int,
                                                        opt: str) -> None:
    """A round per epoch: the velocity / Adam moments and step count are saved in each round's
    checkpoint and restored by the next round's workers (a reset would change the weights)."""
    cfg = config(epochs=4, batch_size=64, optimizer=opt, learning_rate=0.01 if opt == "adam" else 0.05)
    _, res = train_and_compare(data, cfg, 1e-9, workers=workers, strategy=strategy, epochs_per_round=1)
    assert res.rounds == 4


@pytest.mark.parametrize("strategy,workers", [("neuron", 4), ("data", 3)])
@pytest.mark.parametrize("opt", ["momentum", "adam"])
def test_softmax_three_classes(home: Path, cifar3: Path, strategy: str, workers: int, opt: str) -> None:
    """3 output neurons over 4 neuron-workers: one worker owns no row of the output layer."""
    cfg = config(layers=3, activations={"layer1": "tanh", "layer2": "relu", "layer3": "softmax"},
                 neurons={"layer1": 12, "layer2": 6, "layer3": 3}, batch_size=32, optimizer=opt, init="he",
                 learning_rate=0.005 if opt == "adam" else 0.1, epochs=3)
    services, res = train_and_compare(cifar3, cfg, 1e-9, workers=workers, strategy=strategy, epochs_per_round=2)
    meta = services.registry.load(res.model or "").metadata
    assert meta["classes"] == ["airplane", "automobile", "bird"]
    assert meta["architecture"]["activations"][-1] == "softmax"


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-9), ("float32", FLOAT32_RTOL)])
def test_data_strategy_with_more_workers_than_samples_in_a_batch(home: Path, tmp_path: Path, dtype: str,
                                                                 rtol: float) -> None:
    """24 samples in batches of 5 (the last of 4) over 6 workers: some workers hold no sample."""
    few = few_samples_data(tmp_path, 24)
    cfg = config(dtype=dtype, epochs=3, batch_size=5, optimizer="adam", learning_rate=0.01)
    train_and_compare(few, cfg, rtol, workers=6, strategy="data", epochs_per_round=2)


def test_neuron_strategy_with_more_workers_than_input_features(home: Path, tmp_path: Path) -> None:
    """1x1-pixel images (3 input features) over 5 ``neuron`` workers: two workers own no column
    of W1 and still take part in every all-reduce."""
    ds = np.load(few_samples_data(tmp_path, 40))
    pixel = tmp_path / "pixel.npz"
    np.savez(pixel, x=ds["x"][:, :1, :1, :], y=ds["y"], classes=ds["classes"])
    cfg = config(epochs=4, batch_size=16, optimizer="adam", learning_rate=0.01)
    train_and_compare(pixel, cfg, 1e-9, workers=5, strategy="neuron", epochs_per_round=3)


def test_float32_itsacat_full_size(home: Path) -> None:
    cfg = config(dtype="float32", batch_size=209, epochs=4)
    ref = reference_run(cfg, FULL_DATA)
    services = open_services()
    res = Driver(services).train(TrainRequest(data=str(FULL_DATA), config=cfg, workers=2, strategy="neuron"))
    assert max_rel_diff(weights_of(services, res), ref.params) <= 1e-4
    assert res.train_accuracy is not None and 0.0 <= res.train_accuracy <= 1.0
    meta = services.registry.load(res.model or "").metadata
    assert meta["kind"] == "mlp" and meta["input_shape"] == [64, 64, 3]
    assert meta["architecture"]["layer_dims"] == [12288, 20, 7, 5, 1]
    assert meta["classes"] == ["non-cat", "cat"] and meta["run_id"] == res.run_id


@pytest.mark.redis
@pytest.mark.parametrize("strategy,workers,batch,opt", [("neuron", 3, 64, "adam"), ("data", 2, 209, "gd"),
                                                       ("data", 2, 64, "momentum")])
def test_redis_process_equals_reference(home: Path, data: Path, redis_server: RedisServer, strategy: str,
                                        workers: int, batch: int, opt: str) -> None:
    cfg = config(batch_size=batch, optimizer=opt)
    ref = reference_run(cfg, data)
    services = open_services()
    res = Driver(services).train(TrainRequest(data=str(data), config=cfg, workers=workers, strategy=strategy,
                                              store_url=redis_server.url, executor="process",
                                              epochs_per_round=2))
    assert max_rel_diff(weights_of(services, res), ref.params) <= 1e-9
    assert res.worker_calls == 2 * workers and res.store_bytes > 0
    import redis

    assert redis.Redis(port=redis_server.port).keys(f"ln:{res.run_id}:*") == []  # nothing left behind
