"""The Lithops executor on Lithops' real localhost backend (no fakes): per-call results and
failures, and a full training run (Lithops + a real redis-server) that reproduces the
single-process reference weights."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import cloudpickle
import h5py
import numpy as np
import pytest

from lambdanet.config import MLPConfig
from lambdanet.errors import ConfigError, URLError
from lambdanet.executors.lithops import LithopsExecutor, fn_reference, load_config_file

# The worker functions below run in Lithops' worker processes, which cannot import this test
# module: ship them by value inside Lithops' cloudpickle.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def echo_worker(spec: dict[str, Any]) -> dict[str, Any]:
    import time

    if spec.get("raise"):
        raise ValueError(f"worker {spec['i']} refuses")
    if spec.get("sleep"):
        time.sleep(spec["sleep"])
    return {"i": spec["i"], "square": spec["i"] ** 2}


def barrier_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """All calls must run at once: each waits (BLPOP) for every other one's arrival."""
    import redis

    r = redis.Redis.from_url(spec["url"])
    for other in range(spec["n"]):
        if other != spec["i"]:
            r.rpush(f"{spec['key']}:{other}", spec["i"])
    got = sorted(int(r.blpop([f"{spec['key']}:{spec['i']}"], timeout=30)[1]) for _ in range(spec["n"] - 1))
    return {"i": spec["i"], "met": got}


@pytest.fixture(scope="module")
def executor() -> Any:
    ex = LithopsExecutor.from_url("lithops://localhost")
    yield ex
    ex.close()


def test_calls_run_concurrently_and_return_in_order(executor: LithopsExecutor, redis_server: Any) -> None:
    n = 3
    specs = [{"i": i, "n": n, "url": redis_server.url, "key": "lithops-test-barrier"} for i in range(n)]
    outcomes = executor.run(barrier_worker, specs, timeout_s=60)
    assert [o.worker for o in outcomes] == [0, 1, 2]
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    assert [o.result["met"] for o in outcomes] == [[1, 2], [0, 2], [0, 1]]
    assert all(o.ended_at >= o.started_at > 0 for o in outcomes)


def test_failures_and_timeouts_are_one_line_outcomes(executor: LithopsExecutor) -> None:
    specs = [{"i": 0}, {"i": 1, "raise": True}, {"i": 2, "sleep": 30}]
    outcomes = executor.run(echo_worker, specs, timeout_s=3)
    assert outcomes[0].ok and outcomes[0].result == {"i": 0, "square": 0}
    assert not outcomes[1].ok and outcomes[1].error == "ValueError: worker 1 refuses"
    assert not outcomes[2].ok and outcomes[2].error == "timed out after 3 s"
    assert all("\n" not in (o.error or "") for o in outcomes)


def test_config_is_explicit(tmp_path: Path) -> None:
    ex = LithopsExecutor.from_url("lithops://localhost?version=2&worker_processes=3")
    cfg = ex.config_for(5)
    assert cfg["lithops"]["backend"] == "localhost" and cfg["lithops"]["storage"] == "localhost"
    assert cfg["localhost"]["runtime"] == sys.executable
    assert cfg["localhost"]["version"] == 2
    assert cfg["localhost"]["worker_processes"] >= 5  # every call of a round runs at once
    aws = tmp_path / "lithops.yaml"
    aws.write_text("lithops: {backend: aws_lambda, storage: aws_s3}\naws: {region: eu-west-1}\n"
                   "aws_lambda: {execution_role: 'arn:aws:iam::123456789012:role/x', runtime: img:1}\n")
    ex = LithopsExecutor.from_url("lithops", lithops_config=str(aws))
    assert ex.backend == "aws_lambda" and ex.call_timeout(5000) < 900  # below Lambda's limit
    assert ex.config_for(2)["aws_lambda"]["runtime"] == "img:1"
    inline = load_config_file('{"lithops": {"backend": "aws_lambda"}}')
    assert inline["lithops"]["backend"] == "aws_lambda"
    with pytest.raises(URLError, match="unknown"):
        LithopsExecutor.from_url("lithops://localhost?bogus=1")
    bad = tmp_path / "bad.yaml"
    bad.write_text("lithops: [1, 2")
    with pytest.raises(ConfigError, match=r"bad\.yaml"):
        LithopsExecutor.from_url("lithops", config_file=str(bad))
    assert fn_reference(echo_worker) is None  # test code travels by value
    from lambdanet.executors.lithops import run_call

    assert fn_reference(run_call) == "lambdanet.executors.lithops:run_call"


def _tiny_itsacat_h5(path: Path, m: int = 48, m_test: int = 12) -> Path:
    rng = np.random.default_rng(7)
    with h5py.File(path, "w") as fh:
        fh["train_set_x"] = rng.integers(0, 256, (m, 8, 8, 3), dtype=np.uint8)
        fh["train_set_y"] = rng.integers(0, 2, m).astype(np.int64)
        fh["test_set_x"] = rng.integers(0, 256, (m_test, 8, 8, 3), dtype=np.uint8)
        fh["test_set_y"] = rng.integers(0, 2, m_test).astype(np.int64)
        fh["list_classes"] = np.array([b"non-cat", b"cat"])
    return path


@pytest.mark.slow
def test_full_run_on_lithops_with_redis_matches_reference(home: Path, tmp_path: Path, redis_server: Any) -> None:
    from lambdanet.data.readers import load_dataset, to_matrix, to_targets
    from lambdanet.engine.driver import Driver, TrainRequest
    from lambdanet.nn import reference
    from lambdanet.services import Services
    from lambdanet.settings import Settings

    data = _tiny_itsacat_h5(tmp_path / "tiny.h5")
    config = MLPConfig.model_validate({
        "epochs": 4, "layers": 3, "activations": {"layer1": "relu", "layer2": "relu", "layer3": "sigmoid"},
        "neurons": {"layer1": 6, "layer2": 3, "layer3": 1}, "learning_rate": 0.05, "batch_size": 16,
        "dtype": "float64", "report_every": 2,
    })
    services = Services.open(Settings.from_env())
    try:
        result = Driver(services).train(TrainRequest(
            data=str(data), config=config, model_name="tiny", workers=2, strategy="neuron",
            store_url=redis_server.url, executor="lithops", epochs_per_round=2))
        assert result.status == "completed" and result.rounds == 2 and result.epochs_run == 4
        weights = services.registry.load(result.model).weights
        calls = services.ledger.calls(result.run_id)
    finally:
        services.close()
    assert len(calls) == 4 and all(c.ok for c in calls)  # 2 rounds x 2 Lithops calls

    ds = load_dataset(data)
    X = to_matrix(ds.x_train, "float64")
    Y = to_targets(ds.y_train, 2, "sigmoid", "float64")
    ref = reference.train(config, X, Y)
    assert sorted(weights) == sorted(ref.params)
    for name, value in ref.params.items():
        np.testing.assert_allclose(weights[name], value, rtol=1e-9, atol=1e-12, err_msg=name)
    assert result.final_cost == pytest.approx(ref.costs[-1], rel=1e-9)
