"""The worker function on its own (memory store, folder object store): it trains the round it is
given, refuses a fenced-off attempt, ignores a duplicate delivery, honours faults only when
LAMBDANET_FAULTS=1. The Lambda cost arithmetic is tested in test_accounting.py."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lambdanet import adapters
from lambdanet.data.readers import load_dataset
from lambdanet.engine import checkpoints
from lambdanet.engine.strategies import get_strategy, strategy_path
from lambdanet.engine.worker import fence_key, out_key, run_worker
from lambdanet.errors import ConfigError, StaleAttempt, WorkerFailed
from tests.e2e.engine_support import config, reference_run, small_data


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_data(tmp_path_factory.mktemp("cats16"))


def setup_run(tmp_path: Path, data: Path, cfg: Any) -> dict[str, Any]:
    objects_url = str(tmp_path / "objects")
    objects = adapters.open_objects(objects_url)
    run_id = f"r-test-{uuid.uuid4().hex[:6]}"
    ds = load_dataset(data)
    checkpoints.write_data(objects, run_id, ds)
    ptr = checkpoints.write_checkpoint(objects, run_id, 0, 0, get_strategy("mlp", "neuron").initial_state(cfg, ds))
    store_url = f"memory://worker-{uuid.uuid4().hex[:6]}"
    adapters.open_store(store_url).put(fence_key(run_id), np.array([1, 0]))
    return {"run_id": run_id, "round": 1, "attempt": 0, "worker": 0, "workers": 1,
            "strategy": strategy_path("mlp", "neuron"), "config": cfg.model_dump(), "store_url": store_url,
            "objects_url": objects_url, "checkpoint": ptr.file, "start_epoch": 0, "end_epoch": 2,
            "round_seconds": 300, "collective_timeout_s": 5}


def test_worker_trains_its_round_and_a_duplicate_changes_nothing(tmp_path: Path, data: Path) -> None:
    cfg = config(epochs=2)
    spec = setup_run(tmp_path, data, cfg)
    res = run_worker(spec)
    assert res["duplicate"] is False and res["epochs"] == 2
    ref = reference_run(cfg, data)
    np.testing.assert_allclose(res["costs"], ref.costs, rtol=1e-12)
    store = adapters.open_store(spec["store_url"])
    prefix = f"ln:{spec['run_id']}:1:0"
    W1 = store.get(out_key(prefix, 0, "param.W1")).copy()
    np.testing.assert_allclose(W1, ref.params["W1"], rtol=1e-12)
    again = run_worker(dict(spec))
    assert again["worker"] == 0 and again["duplicate"] is True and again["epochs"] == 0
    np.testing.assert_array_equal(store.get(out_key(prefix, 0, "param.W1")), W1)


def test_neuron_workers_own_their_input_features_and_worker_0_the_replicated_layers(tmp_path: Path,
                                                                                   data: Path) -> None:
    """Three ``neuron`` workers (threads, memory store): worker k hands back only its block of
    W1's columns (768 inputs -> 256 each), worker 0 also every replicated array; the blocks side
    by side and worker 0's upper layers equal the plain single-process loop."""
    import threading

    cfg = config(epochs=2, optimizer="adam", learning_rate=0.01)
    spec = setup_run(tmp_path, data, cfg)
    spec.update(workers=3)
    threads = [threading.Thread(target=run_worker, args=(dict(spec, worker=k),)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    ref = reference_run(cfg, data)
    store = adapters.open_store(spec["store_url"])
    prefix = f"ln:{spec['run_id']}:1:0"
    blocks = [store.get(out_key(prefix, k, "param.W1")) for k in range(3)]
    assert [b.shape for b in blocks] == [(20, 256)] * 3
    np.testing.assert_allclose(np.concatenate(blocks, axis=1), ref.params["W1"], rtol=1e-9)
    assert store.get(out_key(prefix, 0, "opt.m.W1")).shape == (20, 256)  # Adam's state follows W1's split
    for name in ("W2", "b2", "W4", "b4", "b1"):
        np.testing.assert_allclose(store.get(out_key(prefix, 0, f"param.{name}")), ref.params[name], rtol=1e-9)
        for k in (1, 2):
            with pytest.raises(KeyError):
                store.get(out_key(prefix, k, f"param.{name}"))


def test_data_workers_each_step_and_hand_back_one_block_of_the_optimizer_state(tmp_path: Path,
                                                                                data: Path) -> None:
    """Three ``data`` workers (threads, memory store) with Adam: worker k hands back only block k
    of every optimizer slot (the flat vector W1, b1, …, b4 and the batch cost, cut in three),
    worker 0 also every parameter and the step count. The blocks side by side equal the moments
    of a plain single-process Adam loop, and worker 0's parameters equal its weights."""
    import threading

    from lambdanet.data.readers import to_matrix, to_targets
    from lambdanet.engine.collectives import block_bounds
    from lambdanet.nn.optimizers import make_optimizer
    from lambdanet.nn.reference import train

    cfg = config(epochs=2, batch_size=64, optimizer="adam", learning_rate=0.01)
    spec = setup_run(tmp_path, data, cfg)
    spec.update(workers=3, strategy=strategy_path("mlp", "data"))
    threads = [threading.Thread(target=run_worker, args=(dict(spec, worker=k),)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    ds = load_dataset(data)
    X, Y = to_matrix(ds.x_train, cfg.dtype), to_targets(ds.y_train, 2, "sigmoid", cfg.dtype)
    adam = make_optimizer(cfg)
    ref = train(cfg, X, Y, optimizer=adam)  # the plain loop, its own Adam
    moments = adam.state_dict()
    keys = [f"{p}{l}" for l in range(1, 5) for p in ("W", "b")]  # noqa: E741
    n = sum(ref.params[key].size for key in keys)
    edges = block_bounds(n + 1, 3)  # the cost is element n, in the last block
    store = adapters.open_store(spec["store_url"])
    prefix = f"ln:{spec['run_id']}:1:0"
    for slot in ("m", "v"):
        blocks = [store.get(out_key(prefix, k, f"opt.{slot}.block")) for k in range(3)]
        assert [b.size for b in blocks] == [edges[1] - edges[0], edges[2] - edges[1], edges[3] - edges[2] - 1]
        want = np.concatenate([moments[f"{slot}.{key}"].reshape(-1) for key in keys])  # (n,)
        np.testing.assert_allclose(np.concatenate(blocks), want, rtol=1e-9, atol=1e-15)
    assert int(store.get(out_key(prefix, 0, "opt.t"))[0]) == int(moments["t"][0])
    for key in keys:
        np.testing.assert_allclose(store.get(out_key(prefix, 0, f"param.{key}")), ref.params[key], rtol=1e-9)
        for k in (1, 2):
            with pytest.raises(KeyError):
                store.get(out_key(prefix, k, f"param.{key}"))


def test_worker_of_a_fenced_off_attempt_refuses_to_start(tmp_path: Path, data: Path) -> None:
    spec = setup_run(tmp_path, data, config(epochs=2))
    adapters.open_store(spec["store_url"]).put(fence_key(spec["run_id"]), np.array([1, 1]))  # a retry began
    with pytest.raises(StaleAttempt, match=r"round 1 attempt 0 of run .* is not current"):
        run_worker(spec)


def test_faults_only_with_the_environment_switch(tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = setup_run(tmp_path, data, config(epochs=2))
    spec["fault"] = {"action": "raise", "after_epochs": 1}
    monkeypatch.delenv("LAMBDANET_FAULTS", raising=False)
    assert run_worker(spec)["epochs"] == 2
    monkeypatch.setenv("LAMBDANET_FAULTS", "1")
    spec2 = setup_run(tmp_path, data, config(epochs=2))
    spec2["fault"] = {"action": "raise", "after_epochs": 1}
    with pytest.raises(WorkerFailed, match="injected fault in worker 0 after 1 epochs"):
        run_worker(spec2)


def test_unknown_strategy_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown strategy 'model' for a mlp model \\(allowed: data, neuron\\)"):
        strategy_path("mlp", "model")


def test_a_raising_worker_aborts_its_peer_with_its_reason(tmp_path: Path, data: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker 1 raises after epoch 1; worker 0 (collective deadline 600 s) stops at its next
    collective with AttemptAborted carrying worker 1's reason, and the reason is in the store."""
    import threading
    import time

    from lambdanet.engine.collectives import abort_reason
    from lambdanet.errors import AttemptAborted

    monkeypatch.setenv("LAMBDANET_FAULTS", "1")
    spec = setup_run(tmp_path, data, config(epochs=4, batch_size=64))
    spec.update(workers=2, end_epoch=4, collective_timeout_s=600)
    specs = [dict(spec, worker=0), dict(spec, worker=1, fault={"action": "raise", "after_epochs": 1})]
    errors: dict[int, BaseException] = {}

    def call(s: dict[str, Any]) -> None:
        try:
            run_worker(s)
        except BaseException as exc:
            errors[s["worker"]] = exc

    t0 = time.monotonic()
    threads = [threading.Thread(target=call, args=(s,)) for s in specs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert time.monotonic() - t0 < 30
    reason = "worker 1: WorkerFailed: injected fault in worker 1 after 1 epochs"
    assert isinstance(errors[1], WorkerFailed)
    assert isinstance(errors[0], AttemptAborted) and str(errors[0]) == reason
    assert abort_reason(adapters.open_store(spec["store_url"]), f"ln:{spec['run_id']}:1:0") == reason


def test_in_round_checkpoints_in_the_store() -> None:
    """K parts make a checkpoint complete; only then is it the newest, and the previous one goes."""
    from lambdanet.engine import round_checkpoints as rc

    store = adapters.open_store(f"memory://ckpt-{uuid.uuid4().hex[:6]}")
    shard = {"param.W1": np.arange(6, dtype=np.float32).reshape(2, 3), "opt.t": np.array(7, dtype=np.int64),
             "empty": np.zeros((0, 4))}
    blob, manifest = rc.pack(shard)
    assert blob.dtype == np.uint8
    back = rc.unpack(blob, manifest)
    assert sorted(back) == sorted(shard)
    assert all(back[k].dtype == shard[k].dtype and np.array_equal(back[k], shard[k]) for k in shard)

    info = {"start_epoch": 10, "epochs": 18, "costs": [0.5] * 8, "seconds": [0.1] * 8, "extras": []}
    assert rc.write(store, "r1", 3, 0, 1, 2, 18, {"param.W1": shard["param.W1"] + 1}) is False
    assert rc.read_latest(store, "r1", 3, 2) is None  # one part of two: not complete
    assert rc.write(store, "r1", 3, 0, 0, 2, 18, shard, info) is True
    ck = rc.read_latest(store, "r1", 3, 2)
    assert ck is not None and (ck.attempt, ck.epochs, ck.start_epoch) == (0, 18, 10) and ck.costs == [0.5] * 8
    assert np.array_equal(ck.shards[1]["param.W1"], shard["param.W1"] + 1)
    rc.write(store, "r1", 3, 0, 0, 2, 26, shard, {**info, "epochs": 26, "costs": [0.4] * 16, "seconds": [0.1] * 16})
    rc.write(store, "r1", 3, 0, 1, 2, 26, shard)
    ck = rc.read_latest(store, "r1", 3, 2)
    assert ck is not None and ck.epochs == 26
    assert store.get_bytes(f"{rc.prefix('r1', 3, 0, 18)}:w0:meta") is None  # the previous one is gone
    assert rc.delete_round(store, "r1", 3) > 0 and rc.read_latest(store, "r1", 3, 2) is None


@pytest.mark.parametrize(("every_s", "written"), [(1e-9, 3), (3600.0, 0)])
def test_the_checkpoint_setting_reaches_the_round_and_the_result_says_what_writing_took(
        tmp_path: Path, data: Path, every_s: float, written: int) -> None:
    """``checkpoint_seconds`` (the run's setting) is how often the round checkpoints: with K = 1 a
    checkpoint is due after every epoch but the last when it is tiny, never in a short round when
    it is an hour; ``checkpoint_write_seconds`` is the time writing them took, a separate figure."""
    spec = setup_run(tmp_path, data, config(epochs=4))
    res = run_worker({**spec, "end_epoch": 4, "checkpoint_seconds": every_s})
    assert res["epochs"] == 4 and res["checkpoints"] == written
    assert (res["checkpoint_write_seconds"] > 0) == (written > 0)
    if written:  # the round's newest complete in-round checkpoint: [attempt, epochs done]
        latest = adapters.open_store(spec["store_url"]).get(f"ln:{spec['run_id']}:1:ckpt:latest")
        assert [int(v) for v in latest] == [0, 3]
