"""Upload-triggered training against moto_server (real boto3 clients over HTTP on 127.0.0.1):
``lambdanet watch s3://… --once`` and the Lambda entry point with a real S3 event JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import h5py
import numpy as np
import pytest

from tests.conftest import CATVNONCAT, REPO

pytestmark = pytest.mark.aws

PARAMS = {"epochs": 2, "layers": 2, "activations": {"layer1": "relu", "layer2": "sigmoid"},
          "neurons": {"layer1": 3, "layer2": 1}, "learning_rate": 0.0075, "batch_size": 64, "report_every": 1}
LAMBDANET = str(Path(sys.executable).parent / "lambdanet")


def _watch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LAMBDANET, "watch", *args], capture_output=True, text=True, timeout=300,
                          cwd=REPO, env=os.environ.copy())


def _keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))


def _services() -> Any:
    from lambdanet.services import Services
    from lambdanet.settings import Settings

    return Services.open(Settings.from_env())


@pytest.mark.slow
def test_watch_once_trains_writes_outputs_rows_and_publishes(cloud: dict[str, Any], tmp_path: Path) -> None:
    s3, bucket = cloud["s3"], cloud["bucket"]
    s3.put_object(Bucket=bucket, Key="training_input/parameters.json", Body=json.dumps(PARAMS).encode())
    s3.upload_file(str(CATVNONCAT / "datasets.h5"), bucket, "training_input/datasets.h5")

    proc = _watch(f"s3://{bucket}", "--once", "--json")
    assert proc.returncode == 0, proc.stderr
    results = [json.loads(line) for line in proc.stdout.splitlines()]  # one object per upload
    assert [(r["key"], r["status"]) for r in results] == [("training_input/datasets.h5", "completed")]
    run_id, model = results[0]["run_id"], results[0]["model"]

    # outputs beside the upload, as itsacat: params.h5 (W1..WL, b1..bL) and results.json
    assert _keys(s3, bucket, "predict_input/") == ["predict_input/params.h5"]
    params_h5 = tmp_path / "params.h5"
    s3.download_file(bucket, "predict_input/params.h5", str(params_h5))
    services = _services()
    try:
        weights = services.registry.load(model).weights
        rows = services.ledger.epochs(run_id)
        run = services.ledger.get_run(run_id)
    finally:
        services.close()
    with h5py.File(params_h5) as fh:
        assert sorted(fh) == ["W1", "W2", "b1", "b2"]
        for name in fh:
            np.testing.assert_array_equal(fh[name][()], weights[name])
    assert weights["W1"].shape == (3, 12288)
    results_json = json.loads(s3.get_object(Bucket=bucket, Key="training_results/results.json")["Body"].read())
    assert results_json["run_id"] == run_id and results_json["end"] >= results_json["start"] > 0
    assert [c["epoch"] for c in results_json["costs"]] == [1, 2]
    # DynamoDB rows, read back through boto3 and the ledger
    assert run.status == "completed" and [r.cost for r in rows] == [c["cost"] for c in results_json["costs"]]
    table = boto3.resource("dynamodb", region_name="us-east-1").Table(cloud["table"])
    items = table.query(KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": f"run#{run_id}"})
    assert {i["sk"] for i in items["Items"]} >= {"#run", "epoch#000000001", "epoch#000000002"}
    # SNS, read through an SQS queue subscribed to the topic in moto
    messages = [e["Message"] for e in cloud["envelopes"]()]
    assert any(m.startswith("Training update! Cost after epoch 1 = ") for m in messages)
    assert any(m.startswith("Training Completed Successfully! Final Cost = ") for m in messages)

    # the same object again: nothing to do, no second run
    again = _watch(f"s3://{bucket}", "--once")
    assert again.returncode == 0 and "no new training_input" in again.stdout
    services = _services()
    try:
        assert [r.run_id for r in services.ledger.list_runs()] == [run_id]
    finally:
        services.close()


def test_bad_inputs_fail_cleanly_without_outputs(cloud: dict[str, Any]) -> None:
    s3, bucket = cloud["s3"], cloud["bucket"]
    cat = (CATVNONCAT / "datasets.h5").read_bytes()

    def watch_once() -> list[dict[str, Any]]:
        proc = _watch(f"s3://{bucket}", "--once", "--json")
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        return [json.loads(line) for line in proc.stdout.splitlines()]  # one object per upload

    # 1. no parameters.json
    s3.put_object(Bucket=bucket, Key="training_input/a.h5", Body=cat)
    first = watch_once()
    assert [(r["key"], r["status"]) for r in first] == [("training_input/a.h5", "failed")]
    assert "parameters.json: missing" in first[0]["error"]
    # 2. valid parameters, a broken .h5 (a.h5 is claimed already: not retried)
    s3.put_object(Bucket=bucket, Key="training_input/parameters.json", Body=json.dumps(PARAMS).encode())
    s3.put_object(Bucket=bucket, Key="training_input/broken.h5", Body=b"this is not HDF5")
    second = watch_once()
    assert [r["key"] for r in second] == ["training_input/broken.h5"]
    assert "broken.h5" in second[0]["error"]
    # 3. an invalid parameters.json
    s3.put_object(Bucket=bucket, Key="training_input/parameters.json",
                  Body=json.dumps({**PARAMS, "layers": 3}).encode())
    s3.put_object(Bucket=bucket, Key="training_input/c.h5", Body=cat)
    third = watch_once()
    assert [r["key"] for r in third] == ["training_input/c.h5"]
    assert "activations.layer3: missing" in third[0]["error"]
    # 4. parameters valid on their own but not for this data (softmax with 3 outputs, 2 classes):
    #    refused by the engine's validation, still a failed run in the ledger
    softmax = {**PARAMS, "activations": {"layer1": "relu", "layer2": "softmax"},
               "neurons": {"layer1": 3, "layer2": 3}}
    s3.put_object(Bucket=bucket, Key="training_input/parameters.json", Body=json.dumps(softmax).encode())
    s3.put_object(Bucket=bucket, Key="training_input/d.h5", Body=cat)
    fourth = watch_once()
    assert "one neuron per class" in fourth[0]["error"]

    assert _keys(s3, bucket, "predict_input/") == [] and _keys(s3, bucket, "training_results/") == []
    services = _services()
    try:
        runs = {r.run_id: r for r in services.ledger.list_runs()}
    finally:
        services.close()
    assert sorted(runs) == sorted(r[0]["run_id"] for r in (first, second, third, fourth))
    assert all(r.status == "failed" and r.stop_reason == "error" and r.error for r in runs.values())
    assert runs[second[0]["run_id"]].error == second[0]["error"]
    failures = [e["Message"] for e in cloud["envelopes"]() if e["Message"].startswith("Training Failed!")]
    assert len(failures) == 4 and "broken.h5" in failures[1]


def _s3_event(bucket: str, key: str, size: int, etag: str, version: str | None) -> dict[str, Any]:
    """An S3 ObjectCreated:Put notification, exactly as AWS sends it (key URL-encoded)."""
    from urllib.parse import quote_plus

    obj: dict[str, Any] = {"key": quote_plus(key, safe="/"), "size": size, "eTag": etag,
                           "sequencer": "0062E99A88DC407460"}
    if version:
        obj["versionId"] = version
    return {"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-11-25T09:00:00.000Z", "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": "C3D13FE58DE4C810",
                             "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD"},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "lambdanet-training-input",
               "bucket": {"name": bucket, "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                          "arn": f"arn:aws:s3:::{bucket}"},
               "object": obj},
    }]}


@pytest.mark.slow
def test_lambda_handler_takes_a_real_s3_event_once(cloud: dict[str, Any]) -> None:
    from lambdanet.functions import training_function

    s3, bucket = cloud["s3"], cloud["bucket"]
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="training_input/parameters.json", Body=json.dumps(PARAMS).encode())
    body = (CATVNONCAT / "datasets.h5").read_bytes()
    key = "training_input/cats and dogs.h5"  # a space: S3 sends it as '+'
    put = s3.put_object(Bucket=bucket, Key=key, Body=body)
    event = _s3_event(bucket, key, len(body), put["ETag"].strip('"'), put["VersionId"])
    assert "cats+and+dogs.h5" in event["Records"][0]["s3"]["object"]["key"]

    from tests.e2e.durable_support import durable_runner

    with durable_runner() as runner:  # the durable handler under AWS's local runner
        first = json.loads(runner.run(input=json.dumps(event), execution_name="first").result or "{}")
        # Lambda's duplicate delivery, after the first execution ended
        second = json.loads(runner.run(input=json.dumps(event), execution_name="second").result or "{}")
    assert [r["status"] for r in first["results"]] == ["completed"]
    assert first["results"][0]["key"] == key
    assert [r["status"] for r in second["results"]] == ["skipped"]
    assert second["results"][0]["run_id"] == first["results"][0]["run_id"]  # points at the real run
    assert _keys(s3, bucket, "predict_input/") == ["predict_input/params.h5"]
    services = _services()
    try:
        runs = services.ledger.list_runs()
    finally:
        services.close()
    assert len(runs) == 1 and runs[0].status == "completed"
    assert runs[0].data == f"s3://{bucket}/{key}"  # the upload it came from, not a temporary file

    # events that are not training inputs are ignored
    other = _s3_event(bucket, "predict_input/params.h5", 1, "x", None)
    assert training_function.handle_event(other) == []
    assert training_function.parse_records({"Records": [{"eventSource": "aws:sqs"}]}) == []
