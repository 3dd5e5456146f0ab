"""Webhook retries against a real local HTTP receiver, SNS publish details through moto, the
DynamoDB ledger's number handling, and ``lambdanet watch`` on a plain folder with a webhook."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lambdanet.errors import NotifierUnavailable, URLError
from lambdanet.notifiers.sns import MAX_SUBJECT, SnsNotifier, clean_subject
from lambdanet.notifiers.webhook import WebhookNotifier
from tests.conftest import CATVNONCAT, REPO
from tests.contract.factories_cloud import Receiver, sns_topic_with_queue, unique


@pytest.fixture
def receiver_factory() -> Any:
    made: list[Receiver] = []

    def make(**kw: Any) -> Receiver:
        made.append(Receiver(**kw))
        return made[-1]

    yield make
    for r in made:
        r.close()


def test_webhook_retries_until_the_receiver_accepts(receiver_factory: Any) -> None:
    receiver = receiver_factory(fail_first=2)
    hook = WebhookNotifier(receiver.url, backoff_s=0.01)
    hook.notify("Training update!", "Training update! Cost after epoch 100 = 0.6523", run_id="r-1",
                epoch=100, cost=float("nan"))
    assert receiver.requests == 3 and hook.deliveries == 3
    assert len(receiver.bodies) == 1
    body = receiver.bodies[0]
    assert body["subject"] == "Training update!"
    assert body["message"] == "Training update! Cost after epoch 100 = 0.6523"
    assert body["fields"] == {"run_id": "r-1", "epoch": 100, "cost": "nan"}


def test_webhook_gives_up_after_bounded_attempts(receiver_factory: Any) -> None:
    receiver = receiver_factory(fail_first=100)
    hook = WebhookNotifier(receiver.url, attempts=4, backoff_s=0.01)
    with pytest.raises(NotifierUnavailable, match="after 4 attempt"):
        hook.notify("s", "m")
    assert receiver.requests == 4 and receiver.bodies == []


def test_webhook_does_not_retry_a_client_error(receiver_factory: Any) -> None:
    receiver = receiver_factory(fail_first=100, fail_status=400)
    with pytest.raises(NotifierUnavailable, match="HTTP 400"):
        WebhookNotifier(receiver.url, backoff_s=0.01).notify("s", "m")
    assert receiver.requests == 1


def test_webhook_unreachable_and_bad_urls() -> None:
    from tests.conftest import free_port

    hook = WebhookNotifier(f"http://127.0.0.1:{free_port()}/x", attempts=2, backoff_s=0.01, timeout_s=2)
    with pytest.raises(NotifierUnavailable, match="after 2 attempt"):
        hook.notify("s", "m")
    assert WebhookNotifier("https://user:secret@127.0.0.1/x").url == "https://user:***@127.0.0.1/x"
    with pytest.raises(URLError):
        WebhookNotifier("ftp://127.0.0.1/x")


@pytest.mark.aws
def test_sns_subject_is_cut_and_fields_become_attributes(moto_server: str) -> None:
    topic_arn, envelopes = sns_topic_with_queue(moto_server)
    sns = SnsNotifier.from_url(f"sns://{topic_arn}?endpoint_url={moto_server}")
    long_subject = "Training Completed Successfully! " + "x" * 200 + "\nsecond line"
    sns.notify(long_subject, "Training Completed Successfully! Final Cost = 0.0929", run_id="r-9",
               epoch=2400, cost=0.0929, ok=True, empty="", nothing=None)
    (envelope,) = envelopes()
    assert envelope["Message"] == "Training Completed Successfully! Final Cost = 0.0929"
    assert len(envelope["Subject"]) == MAX_SUBJECT and "\n" not in envelope["Subject"]
    attrs = {k: (v["Type"], v["Value"]) for k, v in envelope["MessageAttributes"].items()}
    assert attrs == {"run_id": ("String", "r-9"), "epoch": ("Number", "2400"), "cost": ("Number", "0.0929"),
                     "ok": ("String", "true")}
    assert clean_subject("café ☕") == "caf? ?"
    with pytest.raises(URLError):
        SnsNotifier.from_url("sns://not-an-arn")


@pytest.mark.aws
def test_sns_unknown_topic_is_notifier_unavailable(moto_server: str) -> None:
    sns = SnsNotifier.from_url("sns://arn:aws:sns:us-east-1:123456789012:no-such-topic")
    with pytest.raises(NotifierUnavailable, match="no-such-topic"):
        sns.notify("s", "m")


@pytest.mark.aws
def test_dynamodb_numbers_nan_and_table_reuse(moto_server: str) -> None:
    from lambdanet.ledgers.dynamodb import DynamoLedger, from_dynamo, to_dynamo
    from lambdanet.ports import EpochRow, RunRecord

    url = f"dynamodb://{unique('lnl')}?region=us-east-1"
    ledger = DynamoLedger.from_url(url)
    ledger.create_run(RunRecord("r-1", "running", "mlp", {"lr": 0.0075}, "x.h5",
                                metrics={"inf": math.inf, "small": 5e-324, "n": 3, "nested": {"a": [0.1, 2]}}))
    ledger.upsert_epochs("r-1", [EpochRow("r-1", 1, math.nan, 0.0075, 0.5)])
    again = DynamoLedger.from_url(url)  # the table exists now: reused, not re-created
    row = again.epochs("r-1")[0]
    assert math.isnan(row.cost) and row.learning_rate == 0.0075
    metrics = again.get_run("r-1").metrics
    assert metrics == {"inf": math.inf, "small": 5e-324, "n": 3, "nested": {"a": [0.1, 2]}}
    assert from_dynamo(to_dynamo(0.1 + 0.2)) == 0.30000000000000004
    with pytest.raises(URLError, match="unknown"):
        DynamoLedger.from_url("dynamodb://t?colour=blue")


@pytest.mark.slow
def test_watch_a_folder_with_a_webhook(tmp_path: Path, receiver_factory: Any) -> None:
    receiver = receiver_factory(fail_first=1)
    watched = tmp_path / "bucket"
    (watched / "training_input").mkdir(parents=True)
    (watched / "training_input" / "parameters.json").write_text(json.dumps({
        "epochs": 1, "layers": 2, "activations": {"layer1": "relu", "layer2": "sigmoid"},
        "neurons": {"layer1": 2, "layer2": 1}, "learning_rate": 0.0075, "batch_size": 64}))
    shutil.copy(CATVNONCAT / "datasets.h5", watched / "training_input" / "datasets.h5")
    env = {**os.environ, "LAMBDANET_HOME": str(tmp_path / "home"), "LAMBDANET_NOTIFIER": receiver.url}
    for var in ("LAMBDANET_LEDGER", "LAMBDANET_OBJECTS", "LAMBDANET_STORE", "LAMBDANET_EXECUTOR"):
        env.pop(var, None)
    exe = str(Path(sys.executable).parent / "lambdanet")
    proc = subprocess.run([exe, "watch", str(watched), "--once", "--model", "folder-cat"], capture_output=True,
                          text=True, timeout=300, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "completed, model folder-cat:1" in proc.stdout
    assert (watched / "predict_input" / "params.h5").is_file()
    results = json.loads((watched / "training_results" / "results.json").read_text())
    assert len(results["costs"]) == 1 and results["model"] == "folder-cat:1"
    assert receiver.bodies[-1]["message"].startswith("Training Completed Successfully! Final Cost = ")
