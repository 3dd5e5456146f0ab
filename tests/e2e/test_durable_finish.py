"""The durable driver's finish step replayed after its invocation was killed between registering the
model and the step's checkpoint: one model version, one "Training Completed" message and one
version of ``training_results/results.json`` — on a VERSIONED bucket, where writing the same
results again would leave a second version. Real parts: moto's server over HTTP and AWS's local
runner for durable functions, which kills the invocation at its timeout as Lambda does."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_durable_execution_sdk_python.execution import InvocationStatus

from tests.e2e.durable_support import (
    Hang,
    completed_messages,
    durable_runner,
    history,
    object_versions,
    the_only_run,
    the_outcome,
    upload,
    versioned,
)

pytestmark = [pytest.mark.aws, pytest.mark.slow]

PARAMS = {"epochs": 600, "layers": 2, "activations": {"layer1": "relu", "layer2": "sigmoid"},
          "neurons": {"layer1": 7, "layer2": 1}, "learning_rate": 0.0075, "batch_size": 209, "seed": 3,
          "report_every": 300}
RESULTS_KEY = "training_results/results.json"
PARAMS_H5_KEY = "predict_input/params.h5"


def _kill_after_registration(hang: Hang, monkeypatch: pytest.MonkeyPatch) -> None:
    """The invocation dies right after the model version is registered (before the run is marked
    completed and before the notification)."""
    from lambdanet.registry import ModelRegistry

    register = ModelRegistry.register

    def killed_after(registry: ModelRegistry, *args: Any, **kwargs: Any) -> Any:
        mv = register(registry, *args, **kwargs)
        hang.here(f"{mv.name}:{mv.version}")
        return mv

    monkeypatch.setattr(ModelRegistry, "register", killed_after)


def _kill_after_results(hang: Hang, monkeypatch: pytest.MonkeyPatch) -> None:
    """The invocation dies right after S3 stored results.json (the step's last write), before the
    step's checkpoint."""
    from lambdanet.objects.s3 import S3Store

    put = S3Store.put

    def killed_after(store: S3Store, key: str, data: bytes) -> None:
        put(store, key, data)
        if key == RESULTS_KEY:
            hang.here(json.loads(data)["run_id"])

    monkeypatch.setattr(S3Store, "put", killed_after)


@pytest.mark.parametrize("kill", [_kill_after_registration, _kill_after_results],
                         ids=["after-registration", "after-results-json"])
def test_a_finish_step_replayed_after_a_kill_registers_notifies_and_publishes_once(
        kill: Any, cloud: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    versioned(cloud)
    monkeypatch.setenv("LAMBDANET_EPOCHS_PER_ROUND", "300")
    monkeypatch.setenv("LAMBDANET_INVOCATION_SECONDS", "2")  # rounds hand off well before the kill at 5 s
    event = upload(cloud, PARAMS)
    hang = Hang()
    kill(hang, monkeypatch)
    try:
        with durable_runner(invocation_timeout=5) as runner:
            arn = runner.run_async(input=json.dumps(event), execution_name="kill-in-the-finish-step")
            result = runner.wait_for_result(arn, timeout=600)
            events = history(runner, arn)
    finally:
        hang.release.set()
    assert hang.hit, "the finish step was never killed: the test proved nothing"
    finish = [i for i, (kind, name) in enumerate(events) if name.endswith("-finish")]
    started, succeeded = finish[0], next(i for i in finish if events[i][0] == "StepSucceeded")
    assert events[started][0] == "StepStarted"
    assert any(kind == "InvocationCompleted" for kind, _ in events[started:succeeded]), (
        f"the finish step was not cut by the end of an invocation: the test proved nothing ({events})")
    assert result.status is InvocationStatus.SUCCEEDED, result.error
    outcome = the_outcome(result)
    assert outcome["status"] == "completed", outcome

    run_id, run, versions = the_only_run(PARAMS["epochs"])
    assert outcome["run_id"] == run_id and run.status == "completed"
    assert versions == [1], versions  # one model version, though registration ran in a killed invocation
    assert len(completed_messages(cloud)) == 1, completed_messages(cloud)
    results = object_versions(cloud, RESULTS_KEY)
    assert len(results) == 1, [(v["VersionId"], v["LastModified"]) for v in results]
    assert len(object_versions(cloud, PARAMS_H5_KEY)) == 1
    body = json.loads(cloud["s3"].get_object(Bucket=cloud["bucket"], Key=RESULTS_KEY)["Body"].read())
    assert body["run_id"] == run_id and len(body["costs"]) == PARAMS["epochs"]
