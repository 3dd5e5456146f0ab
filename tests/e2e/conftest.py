"""Fixtures of the end-to-end cloud tests (moto's server for S3, DynamoDB, SNS and SQS)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.contract.factories_cloud import make_bucket, sns_topic_with_queue, unique


@pytest.fixture
def cloud(moto_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A bucket, a ledger table, an SNS topic (with an SQS queue to read it) and the env pointing at them."""
    bucket = make_bucket(moto_server)
    table = unique("lnledger")
    topic_arn, envelopes = sns_topic_with_queue(moto_server)
    env = {
        "LAMBDANET_HOME": str(tmp_path / "home"),
        "LAMBDANET_LEDGER": f"dynamodb://{table}?region=us-east-1",
        "LAMBDANET_OBJECTS": f"s3://{bucket}/lambdanet",
        "LAMBDANET_NOTIFIER": f"sns://{topic_arn}",
        "LAMBDANET_STORE": "memory://",
        "LAMBDANET_EXECUTOR": "local",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    return {"bucket": bucket, "table": table, "envelopes": envelopes, "env": env, "s3": s3}
