"""The cloud adapters in the contract suite: S3, DynamoDB and SNS against ``moto_server``, and
the webhook notifier against a real HTTP receiver on 127.0.0.1 (see conftest.py).

:class:`Receiver` (an ``http.server`` in a thread) is also used by tests/e2e/test_cloud_*.py.
"""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.contract.harness import Factory, NotifierHarness


class Receiver:
    """A local webhook receiver: records JSON bodies; answers ``fail_first`` requests with 503."""

    def __init__(self, fail_first: int = 0, fail_status: int = 503) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.requests = 0
        self.fail_first = fail_first
        self.fail_status = fail_status
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                with receiver._lock:
                    receiver.requests += 1
                    failing = receiver.requests <= receiver.fail_first
                    if not failing:
                        receiver.bodies.append(json.loads(raw))
                self.send_response(receiver.fail_status if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def make_bucket(endpoint: str) -> str:
    import boto3

    bucket = unique("lnb")
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    return bucket


def sns_topic_with_queue(endpoint: str) -> tuple[str, Any]:
    """A moto SNS topic with an SQS queue subscribed; returns (topic_arn, received())."""
    import boto3

    sns = boto3.client("sns", endpoint_url=endpoint, region_name="us-east-1")
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")
    topic_arn = sns.create_topic(Name=unique("lnt"))["TopicArn"]
    queue_url = sqs.create_queue(QueueName=unique("lnq"))["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    seen: list[dict[str, Any]] = []

    def received_envelopes() -> list[dict[str, Any]]:
        while True:
            out = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            msgs = out.get("Messages", [])
            if not msgs:
                return list(seen)
            for m in msgs:
                seen.append(json.loads(m["Body"]))
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])

    return topic_arn, received_envelopes


# ---- factories -----------------------------------------------------------------------------------
def _s3(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    from lambdanet.objects.s3 import S3Store

    endpoint = request.getfixturevalue("moto_server")
    return S3Store.from_url(f"s3://{make_bucket(endpoint)}/prefix/inner")


def _s3_root(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    from lambdanet.objects.s3 import S3Store

    endpoint = request.getfixturevalue("moto_server")
    return S3Store.from_url(f"s3://{make_bucket(endpoint)}?endpoint_url={endpoint}")


def _dynamodb(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    from lambdanet.ledgers.dynamodb import DynamoLedger

    endpoint = request.getfixturevalue("moto_server")
    return DynamoLedger.from_url(f"dynamodb://{unique('lnl')}?region=us-east-1&endpoint_url={endpoint}")


def _sns(request: pytest.FixtureRequest, tmp_path: Path) -> NotifierHarness:
    from lambdanet.notifiers.sns import SnsNotifier

    endpoint = request.getfixturevalue("moto_server")
    topic_arn, envelopes = sns_topic_with_queue(endpoint)
    return NotifierHarness(SnsNotifier.from_url(f"sns://{topic_arn}"),
                           lambda: [e["Message"] for e in envelopes()], extra={"envelopes": envelopes})


def _webhook(request: pytest.FixtureRequest, tmp_path: Path) -> NotifierHarness:
    from lambdanet.notifiers.webhook import WebhookNotifier

    receiver = Receiver()
    request.addfinalizer(receiver.close)
    return NotifierHarness(WebhookNotifier(receiver.url, backoff_s=0.01),
                           lambda: [b["message"] for b in receiver.bodies], extra={"receiver": receiver})


def register(factories: dict[str, dict[str, Factory]]) -> None:
    aws = (pytest.mark.aws,)
    factories["objects"]["s3"] = Factory(_s3, marks=aws)
    factories["objects"]["s3-root"] = Factory(_s3_root, marks=aws)
    factories["ledger"]["dynamodb"] = Factory(_dynamodb, marks=aws)
    factories["notifier"]["sns"] = Factory(_sns, marks=aws)
    factories["notifier"]["webhook"] = Factory(_webhook)
