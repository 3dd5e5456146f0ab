"""The durable Lambda driver under AWS's official local runner (``DurableFunctionTestRunner``),
with moto's server for S3, DynamoDB, SNS and SQS: a run longer than one invocation hands off and
is replayed, a duplicate event starts one run, and an invocation the platform kills mid-round is
replayed — every time with the weights of one uninterrupted ``lambdanet train``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aws_durable_execution_sdk_python.execution import InvocationStatus

from tests.e2e.durable_support import (
    durable_runner,
    messages,
    operation_names,
    output,
    reference_weights,
    run_to_the_end,
    services,
    step_result,
    the_outcome,
    upload,
)

pytestmark = [pytest.mark.aws, pytest.mark.slow]

PARAMS = {"epochs": 2400, "layers": 2, "activations": {"layer1": "relu", "layer2": "sigmoid"},
          "neurons": {"layer1": 7, "layer2": 1}, "learning_rate": 0.0075, "batch_size": 209, "seed": 3,
          "report_every": 600}


def _one_run(epochs_total: int = PARAMS["epochs"]) -> tuple[str, dict[str, np.ndarray], Any]:
    """The only run in the ledger: (run id, registered weights, record); asserts one model version
    and each epoch row once."""
    svc = services()
    try:
        runs = svc.ledger.list_runs()
        assert len(runs) == 1, [r.run_id for r in runs]
        run = runs[0]
        name = str(run.model).split(":")[0]
        assert svc.registry.versions(name) == [1]  # exactly one model version
        weights = dict(svc.registry.load(str(run.model)).weights)
        epochs = [row.epoch for row in svc.ledger.epochs(run.run_id)]
        assert epochs == list(range(1, epochs_total + 1))  # each epoch row once
        return run.run_id, weights, run
    finally:
        svc.close()


def _assert_outputs_once(cloud: dict[str, Any], run_id: str) -> None:
    s3, bucket = cloud["s3"], cloud["bucket"]
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])
                  if not o["Key"].startswith("lambdanet/"))
    assert keys == ["predict_input/params.h5", "training_input/datasets.h5", "training_input/parameters.json",
                    "training_results/results.json"]
    versions = s3.list_object_versions(Bucket=bucket, Prefix="training_results/").get("Versions", [])
    assert len(versions) <= 1 or all(not v.get("VersionId") or v["VersionId"] == "null" for v in versions)
    results = json.loads(s3.get_object(Bucket=bucket, Key="training_results/results.json")["Body"].read())
    assert results["run_id"] == run_id and len(results["costs"]) == PARAMS["epochs"]
    completed = [m for m in messages(cloud) if m.startswith("Training Completed Successfully!")]
    assert len(completed) == 1, completed


def test_a_run_longer_than_three_invocations_hands_off_and_matches_one_process(
        cloud: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMBDANET_INVOCATION_SECONDS", "1.5")  # the function's limit, set low
    monkeypatch.setenv("LAMBDANET_EPOCHS_PER_ROUND", "200")
    event = upload(cloud, PARAMS)
    result, outcome = run_to_the_end(event)
    assert outcome["status"] == "completed", outcome

    names = operation_names(result)
    rounds = sorted((step_result(result, n) for n in names if "-round-" in n),
                    key=lambda step: step["round"])
    handoffs = [n for n in names if "-handoff-" in n]
    # one durable step per round, none run twice, together the whole run
    assert [step["round"] for step in rounds] == list(range(1, len(rounds) + 1))
    assert rounds[-1]["epochs_done"] == PARAMS["epochs"] and rounds[-1]["finished"]
    assert len(handoffs) >= 2  # >= 3 invocations
    run_id, weights, run = _one_run()
    assert outcome["run_id"] == run_id and run.status == "completed"
    _assert_outputs_once(cloud, run_id)

    want = reference_weights(PARAMS, tmp_path)
    assert sorted(weights) == sorted(want)
    for name in want:
        np.testing.assert_array_equal(weights[name], want[name])  # bit-identical


def test_the_same_event_twice_while_the_first_runs_starts_one_run(
        cloud: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMBDANET_EPOCHS_PER_ROUND", "400")
    event = json.dumps(upload(cloud, PARAMS))
    with durable_runner() as runner:
        first = runner.run_async(input=event, execution_name="delivery-1")
        second = runner.run_async(input=event, execution_name="delivery-2")  # S3 delivers it again
        results = [runner.wait_for_result(arn, timeout=600) for arn in (first, second)]
    outcomes = sorted((output(r)["results"][0] for r in results), key=lambda o: o["status"])
    assert [o["status"] for o in outcomes] == ["completed", "skipped"]
    run_id, _, _ = _one_run()
    assert outcomes[0]["run_id"] == outcomes[1]["run_id"] == run_id
    assert f"is already claimed by run {run_id}" in outcomes[1]["error"]  # the lost claim says why, in one line
    _assert_outputs_once(cloud, run_id)


def test_an_invocation_killed_mid_round_is_replayed_with_the_same_weights(
        cloud: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The runner kills every invocation after 3 s, as Lambda does at its timeout; the driver is
    # told nothing of that limit, so it never hands off by itself. Round 1 hangs 10 s in the
    # first attempt that reaches it (a one-shot test fault), so the first invocation is killed in
    # the middle of round 1; the replay must take the run over from the killed one (which, in the
    # in-process runner, goes on as a zombie thread and must not commit anything).
    params = {**PARAMS, "epochs": 1200}
    monkeypatch.setenv("LAMBDANET_EPOCHS_PER_ROUND", "300")
    monkeypatch.setenv("LAMBDANET_FAULTS", "1")
    monkeypatch.setenv("LAMBDANET_FAULTS_JSON", json.dumps(
        [{"round": 1, "worker": 0, "action": "hang", "after_epochs": 5, "seconds": 10, "once": True}]))
    event = upload(cloud, params)
    with durable_runner(invocation_timeout=3) as runner:
        arn = runner.run_async(input=json.dumps(event), execution_name="killed")
        result = runner.wait_for_result(arn, timeout=600)
        history = runner.get_execution_history(arn)
    assert result.status is InvocationStatus.SUCCEEDED, result.error
    events = [(str(getattr(e.event_type, "value", e.event_type)), e.name) for e in history.events]
    # the first invocation ended after `begin` and before round 1 was done: killed mid-round
    first_end = next(i for i, (kind, _) in enumerate(events) if kind == "InvocationCompleted")
    before = events[:first_end]
    assert ("StepSucceeded", "begin-0") in before, events
    assert not any(kind == "StepSucceeded" and str(name).endswith("-round-1") for kind, name in before), (
        f"round 1 finished inside the first invocation: the test proved nothing ({events})")
    assert ("ExecutionSucceeded", "killed") in events[first_end:]
    assert not any("-handoff-" in str(name) for _, name in events)  # every cut was the platform's
    _, weights, _ = _one_run(params["epochs"])
    want = reference_weights(params, tmp_path)
    for name in want:
        np.testing.assert_array_equal(weights[name], want[name])


@pytest.mark.redis
def test_the_full_cloud_chain_upload_to_outputs_on_lithops_and_redis(
        cloud: dict[str, Any], tmp_path: Path, redis_server: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """S3 upload -> the durable entry point -> K = 2 Lithops-localhost workers meeting in a real
    redis-server -> DynamoDB rows, SNS messages (through SQS), params.h5 and results.json, across
    several invocations."""
    import boto3
    import h5py

    params = {**PARAMS, "epochs": 600, "dtype": "float64", "report_every": 150}
    monkeypatch.setenv("LAMBDANET_STORE", redis_server.url)
    monkeypatch.setenv("LAMBDANET_EXECUTOR", "lithops")
    monkeypatch.setenv("LAMBDANET_WORKERS", "2")
    monkeypatch.setenv("LAMBDANET_STRATEGY", "neuron")
    monkeypatch.setenv("LAMBDANET_EPOCHS_PER_ROUND", "150")
    monkeypatch.setenv("LAMBDANET_INVOCATION_SECONDS", "2")
    event = upload(cloud, params)
    result, outcome = run_to_the_end(event)
    assert outcome["status"] == "completed", outcome
    assert len([n for n in operation_names(result) if "-handoff-" in n]) >= 2  # >= 3 invocations

    s3, bucket, run_id = cloud["s3"], cloud["bucket"], outcome["run_id"]
    svc = services()
    try:
        run = svc.ledger.get_run(run_id)
        weights = dict(svc.registry.load(str(run.model)).weights)
        calls = svc.ledger.calls(run_id)
    finally:
        svc.close()
    assert run.config["engine"]["executor"] == "lithops" and run.config["engine"]["workers"] == 2
    assert len(calls) == 2 * run.metrics["rounds"] and all(c.ok for c in calls)  # no retries
    table = boto3.resource("dynamodb", region_name="us-east-1").Table(cloud["table"])
    items = table.query(KeyConditionExpression="pk = :p AND begins_with(sk, :e)",
                        ExpressionAttributeValues={":p": f"run#{run_id}", ":e": "epoch#"})["Items"]
    assert len(items) == params["epochs"]
    sent = messages(cloud)
    updates = sorted(m for m in sent if m.startswith("Training update!"))
    assert [m.split(" = ")[0] for m in updates] == [  # one per report_every epochs, none twice
        f"Training update! Cost after epoch {e}" for e in (150, 300, 450, 600)]
    assert len([m for m in sent if m.startswith("Training Completed Successfully!")]) == 1
    params_h5 = tmp_path / "params.h5"
    s3.download_file(bucket, "predict_input/params.h5", str(params_h5))
    with h5py.File(params_h5) as fh:
        for name in fh:
            np.testing.assert_array_equal(fh[name][()], weights[name])
    results = json.loads(s3.get_object(Bucket=bucket, Key="training_results/results.json")["Body"].read())
    assert results["run_id"] == run_id and len(results["costs"]) == params["epochs"]

    want = reference_weights(params, tmp_path)  # one uninterrupted K = 1 process
    for name in want:  # K = 2 adds the same partial products in another order
        np.testing.assert_allclose(weights[name], want[name], rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.redis
def test_a_round_that_fails_all_its_retries_ends_the_execution_with_the_run_failed(
        cloud: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from tests.conftest import RedisServer

    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis")
    server.start()
    monkeypatch.setenv("LAMBDANET_STORE", server.url)
    monkeypatch.setenv("LAMBDANET_EPOCHS_PER_ROUND", "100")
    monkeypatch.setenv("LAMBDANET_INVOCATION_SECONDS", "1.5")
    event = upload(cloud, PARAMS)
    try:
        with durable_runner() as runner:
            arn = runner.run_async(input=json.dumps(event), execution_name="store-lost")
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # the store goes away once a round is committed
                svc = services()
                try:
                    runs = svc.ledger.list_runs()
                    if runs and svc.ledger.epochs(runs[0].run_id):
                        break
                finally:
                    svc.close()
                time.sleep(0.1)
            server.stop()
            result = runner.wait_for_result(arn, timeout=600)
    finally:
        server.stop()
    outcome = the_outcome(result)
    assert outcome["status"] == "failed" and "cannot reach the tensor store" in outcome["error"]
    svc = services()
    try:
        run = svc.ledger.get_run(outcome["run_id"])
        assert svc.registry.models() == []  # no model from a failed run
    finally:
        svc.close()
    assert run.status == "failed" and "attempt(s)" in str(run.error)
    failed = [m for m in messages(cloud) if m.startswith("Training Failed!")]
    assert len(failed) == 1, failed
    assert not any(m.startswith("Training Completed") for m in messages(cloud))
