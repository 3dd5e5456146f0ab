"""The engine gives the single-process network's weights: ``neuron`` and ``data``, K = 1…4,
full batch and mini-batch 64, gd / adam / momentum, every activation; float64 within 1e-9 and
float32 within 1e-4; memory store + threads and a real redis-server + one process per worker."""

from __future__ import annotations

from pathlib import Path

import pytest

from lambdanet.engine.driver import Driver, TrainRequest
from tests.conftest import RedisServer
from tests.e2e.engine_support import (
    FULL_DATA,
    config,
    max_rel_diff,
    open_services,
    reference_run,
    small_data,
    weights_of,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_data(tmp_path_factory.mktemp("cats16"))


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
@pytest.mark.parametrize("strategy,workers,batch,opt", [("neuron", 3, 64, "adam"), ("data", 2, 209, "gd")])
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
