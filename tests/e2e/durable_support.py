"""What the durable-driver tests share: a moto-backed cloud (bucket, DynamoDB ledger, SNS topic
read through SQS), an S3 event for an upload, AWS's official local runner for durable functions,
and the reference weights of one uninterrupted ``lambdanet train`` process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from aws_durable_execution_sdk_python_testing.runner import DurableFunctionTestResult, DurableFunctionTestRunner

from tests.conftest import CATVNONCAT, REPO

LAMBDANET = str(Path(sys.executable).parent / "lambdanet")


def upload(cloud: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Upload parameters.json and the cat data set; return the S3 event for the .h5."""
    s3, bucket = cloud["s3"], cloud["bucket"]
    s3.put_object(Bucket=bucket, Key="training_input/parameters.json", Body=json.dumps(params).encode())
    s3.upload_file(str(CATVNONCAT / "datasets.h5"), bucket, "training_input/datasets.h5")
    head = s3.head_object(Bucket=bucket, Key="training_input/datasets.h5")
    return {"Records": [{
        "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": bucket},
               "object": {"key": "training_input/datasets.h5", "size": head["ContentLength"],
                          "eTag": head["ETag"].strip('"')}},
    }]}


@contextmanager
def durable_runner(invocation_timeout: int = 900) -> Iterator[DurableFunctionTestRunner]:
    from lambdanet.functions import training_function

    with DurableFunctionTestRunner(handler=training_function.handler, invocation_timeout=invocation_timeout,
                                   execution_timeout=600) as runner:
        yield runner


def operation_names(result: DurableFunctionTestResult) -> list[str]:
    return [str(op.name) for op in result.get_all_operations() if op.name]


def step_result(result: DurableFunctionTestResult, name: str) -> dict[str, Any]:
    """A step's checkpointed result, decoded as the SDK encoded it (typed JSON, no pickle)."""
    from aws_durable_execution_sdk_python.serdes import ExtendedTypeSerDes

    text = result.get_step(name).result
    assert text is not None, name
    return ExtendedTypeSerDes().deserialize(text)  # type: ignore[no-any-return]


def output(result: DurableFunctionTestResult) -> dict[str, Any]:
    assert result.result is not None, result.error
    return json.loads(result.result)  # type: ignore[no-any-return]


def the_outcome(result: DurableFunctionTestResult) -> dict[str, Any]:
    """The outcome of the event's one upload, in an execution that succeeded."""
    from aws_durable_execution_sdk_python.execution import InvocationStatus

    assert result.status is InvocationStatus.SUCCEEDED, result.error
    [outcome] = output(result)["results"]
    return outcome  # type: ignore[no-any-return]


def run_to_the_end(event: dict[str, Any]) -> tuple[DurableFunctionTestResult, dict[str, Any]]:
    """One durable execution of ``event`` under the local runner: its result and the upload's outcome."""
    with durable_runner() as runner:
        result = runner.run(input=json.dumps(event), execution_timeout=600)
    return result, the_outcome(result)


def services() -> Any:
    from lambdanet.services import Services
    from lambdanet.settings import Settings

    return Services.open(Settings.from_env())


def reference_weights(params: dict[str, Any], tmp_path: Path) -> dict[str, np.ndarray]:
    """The weights of ONE uninterrupted ``lambdanet train`` process (embedded defaults)."""
    params_file = tmp_path / "reference-params.json"
    params_file.write_text(json.dumps(params))
    home = tmp_path / "reference-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMBDANET_")}
    env["LAMBDANET_HOME"] = str(home)
    proc = subprocess.run([LAMBDANET, "train", str(CATVNONCAT / "datasets.h5"), "--params", str(params_file),
                           "--json"], capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr
    model = json.loads(proc.stdout.strip().splitlines()[-1])["model"]
    from lambdanet.objects.folder import FolderStore
    from lambdanet.registry import ModelRegistry

    return dict(ModelRegistry(FolderStore(home / "objects")).load(model).weights)


def messages(cloud: dict[str, Any]) -> list[str]:
    return [str(e["Message"]) for e in cloud["envelopes"]()]


def versioned(cloud: dict[str, Any]) -> None:
    """Turn on S3 versioning for the cloud's bucket (every put of a key becomes a new version)."""
    cloud["s3"].put_bucket_versioning(Bucket=cloud["bucket"], VersioningConfiguration={"Status": "Enabled"})


def object_versions(cloud: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """Every stored version of ``key`` (a versioned bucket)."""
    out = cloud["s3"].list_object_versions(Bucket=cloud["bucket"], Prefix=key)
    return [v for v in out.get("Versions", []) if v["Key"] == key]


def completed_messages(cloud: dict[str, Any]) -> list[str]:
    return [m for m in messages(cloud) if m.startswith("Training Completed Successfully!")]


def the_only_run(epochs: int) -> tuple[str, Any, list[int]]:
    """The ledger's only run: (run id, record, model versions of its model name); asserts each of
    its ``epochs`` epoch rows is there once."""
    svc = services()
    try:
        runs = svc.ledger.list_runs()
        assert len(runs) == 1, [(r.run_id, r.status) for r in runs]
        run = runs[0]
        assert [row.epoch for row in svc.ledger.epochs(run.run_id)] == list(range(1, epochs + 1))
        versions = list(svc.registry.versions(str(run.model).split(":")[0]))
        return run.run_id, run, versions
    finally:
        svc.close()


def history(runner: DurableFunctionTestRunner, arn: str) -> list[tuple[str, str]]:
    """The execution's history as (event type, operation name) pairs, in order."""
    return [(str(getattr(e.event_type, "value", e.event_type)), str(e.name))
            for e in runner.get_execution_history(arn).events]


class Hang:
    """A one-shot 'kill' for the in-process runner: the first call of :meth:`here` blocks until the
    runner's invocation timeout has killed its invocation and the test releases it, then raises —
    the killed invocation does nothing more, as on Lambda (its late checkpoints would be refused
    anyway). ``hit`` says whether (and ``note`` what) it fired."""

    def __init__(self) -> None:
        import threading

        self.release = threading.Event()
        self.hit = False
        self.note: Any = None
        self._lock = threading.Lock()

    def here(self, note: Any = None) -> None:
        with self._lock:
            if self.hit:
                return
            self.hit, self.note = True, note
        self.release.wait(120)
        raise RuntimeError("this invocation was killed (test fault)")
