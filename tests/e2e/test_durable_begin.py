"""The durable driver's ``begin`` step is idempotent per execution: after a transient S3 error or a
kill that follows the claim, the SDK runs the step again (steps run at least once) and the retry
continues the run this execution claimed — it does not find the claim "taken" and end the
execution with nothing trained. Real parts: moto's server (S3, DynamoDB, SNS, SQS) over HTTP and
AWS's local runner for durable functions; the S3 faults are injected into the watched bucket's
own botocore client, after the claim."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aws_durable_execution_sdk_python.execution import InvocationStatus

from tests.e2e.durable_support import (
    Hang,
    completed_messages,
    durable_runner,
    history,
    services,
    the_only_run,
    the_outcome,
    upload,
)

pytestmark = [pytest.mark.aws, pytest.mark.slow]

PARAMS = {"epochs": 600, "layers": 2, "activations": {"layer1": "relu", "layer2": "sigmoid"},
          "neurons": {"layer1": 7, "layer2": 1}, "learning_rate": 0.0075, "batch_size": 209, "seed": 3,
          "report_every": 300}
DATA_KEY = "training_input/datasets.h5"
SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
             b"<Message>Please reduce your request rate.</Message></Error>")


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data


class DataGetFaults:
    """Hooks every S3 client of the watched bucket (``before-send.s3.GetObject``) for requests of
    the data set: ``mode="503"`` answers them HTTP 503 SlowDown — as S3 does under load; botocore
    retries it, then it reaches the trigger as ObjectStoreUnavailable — until the first such error
    has left ``S3Store.get`` (one attempt of ``begin`` failed); ``mode="kill"`` hangs the first one
    until the invocation is killed (:class:`Hang`). Each fault records whether the upload was
    already claimed when it struck."""

    def __init__(self, mode: str, bucket: str, claim: str) -> None:
        self.mode, self.bucket, self.claim = mode, bucket, claim
        self.armed = True
        self.answered_503 = 0
        self.errors: list[BaseException] = []
        self.claimed_when_struck: list[str | None] = []
        self.hang = Hang()
        self._lock = threading.Lock()

    def _claimed(self) -> str | None:
        svc = services()
        try:
            return svc.ledger.claimed_by(self.claim)  # type: ignore[no-any-return]
        finally:
            svc.close()

    def before_send(self, request: Any, **_: Any) -> Any:
        if not request.url.split("?")[0].endswith(f"/{self.bucket}/{DATA_KEY}") or not self.armed:
            return None
        if self.mode == "kill":
            if not self.hang.hit:
                self.hang.here(self._claimed())
            return None
        from botocore.awsrequest import AWSResponse

        with self._lock:
            self.answered_503 += 1
            if self.answered_503 == 1:
                self.claimed_when_struck.append(self._claimed())
        return AWSResponse(request.url, 503, {"Content-Type": "application/xml"}, _Body(SLOW_DOWN))

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from lambdanet.errors import ObjectStoreUnavailable
        from lambdanet.objects.s3 import S3Store

        init, get = S3Store.__init__, S3Store.get
        faults = self

        def hooked_init(store: S3Store, *args: Any, **kwargs: Any) -> None:
            init(store, *args, **kwargs)
            if store.bucket == faults.bucket:
                store.client.meta.events.register("before-send.s3.GetObject", faults.before_send)

        def observed_get(store: S3Store, key: str) -> bytes:
            try:
                return get(store, key)
            except ObjectStoreUnavailable as exc:
                if key == DATA_KEY and faults.armed:
                    faults.errors.append(exc)
                    faults.armed = faults.mode == "kill"  # one failed attempt of begin is enough
                raise

        monkeypatch.setattr(S3Store, "__init__", hooked_init)
        monkeypatch.setattr(S3Store, "get", observed_get)


def _claim_key(cloud: dict[str, Any], event: dict[str, Any]) -> str:
    version = event["Records"][0]["s3"]["object"]["eTag"]
    return f"s3://{cloud['bucket']}/{DATA_KEY}#{version}"


def _assert_one_run_one_model_one_message(cloud: dict[str, Any], outcome: dict[str, Any], claim: str) -> None:
    assert outcome["status"] == "completed", outcome  # "skipped" before the fix: nothing trained
    run_id, run, versions = the_only_run(PARAMS["epochs"])
    assert outcome["run_id"] == run_id and run.status == "completed"
    assert versions == [1]  # one model version
    assert len(completed_messages(cloud)) == 1, completed_messages(cloud)
    svc = services()
    try:
        assert svc.ledger.claimed_by(claim) == run_id  # the claim and the run that trained are one
    finally:
        svc.close()


def test_a_transient_s3_error_after_the_claim_is_retried_into_the_same_run(
        cloud: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMBDANET_EPOCHS_PER_ROUND", "300")
    event = upload(cloud, PARAMS)
    claim = _claim_key(cloud, event)
    faults = DataGetFaults("503", cloud["bucket"], claim)
    faults.install(monkeypatch)
    with durable_runner() as runner:
        arn = runner.run_async(input=json.dumps(event), execution_name="s3-slowdown")
        result = runner.wait_for_result(arn, timeout=600)
        events = history(runner, arn)
    # the fault happened, after the claim, and failed one attempt of `begin` (the SDK retried it)
    assert faults.answered_503 >= 1 and faults.errors, "S3 never failed: the test proved nothing"
    assert "reduce your request rate" in str(faults.errors[0]), faults.errors[0]  # S3's SlowDown, mapped
    assert faults.claimed_when_struck and faults.claimed_when_struck[0] is not None, "struck before the claim"
    assert [kind for kind, name in events if name == "begin-0"] == [
        "StepStarted", "StepFailed", "StepStarted", "StepSucceeded"], events
    assert result.status is InvocationStatus.SUCCEEDED, result.error
    outcome = the_outcome(result)
    _assert_one_run_one_model_one_message(cloud, outcome, claim)
    assert faults.claimed_when_struck[0] == outcome["run_id"]


def test_an_invocation_killed_after_the_claim_in_begin_is_replayed_into_the_same_run(
        cloud: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    # The runner kills every invocation after 5 s, as Lambda does at its timeout (the driver hands
    # off well before: LAMBDANET_INVOCATION_SECONDS). The first read of the data set — after the
    # claim, inside `begin` — hangs until then: the invocation dies between the claim and the run.
    monkeypatch.setenv("LAMBDANET_EPOCHS_PER_ROUND", "300")
    monkeypatch.setenv("LAMBDANET_INVOCATION_SECONDS", "2")
    event = upload(cloud, PARAMS)
    claim = _claim_key(cloud, event)
    faults = DataGetFaults("kill", cloud["bucket"], claim)
    faults.install(monkeypatch)
    try:
        with durable_runner(invocation_timeout=5) as runner:
            arn = runner.run_async(input=json.dumps(event), execution_name="killed-in-begin")
            result = runner.wait_for_result(arn, timeout=600)
            events = history(runner, arn)
    finally:
        faults.hang.release.set()
    assert faults.hang.hit and faults.hang.note is not None, "begin was not killed after the claim"
    first_end = next(i for i, (kind, _) in enumerate(events) if kind == "InvocationCompleted")
    assert ("StepSucceeded", "begin-0") not in events[:first_end], (
        f"begin finished inside the first invocation: the test proved nothing ({events})")
    assert ("StepSucceeded", "begin-0") in events[first_end:], events
    assert result.status is InvocationStatus.SUCCEEDED, result.error
    outcome = the_outcome(result)
    _assert_one_run_one_model_one_message(cloud, outcome, claim)
    assert faults.hang.note == outcome["run_id"]  # killed holding the very claim the run trained under
