"""The AWS Lambda entry point for S3 ``ObjectCreated`` events (itsacat's *LaunchLambda*).

Handler: ``lambdanet.aws_lambda.handler``. S3 sends (abridged)::

    {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                  "s3": {"bucket": {"name": "my-bucket"},
                         "object": {"key": "training_input/datasets.h5", "size": 2572022,
                                    "eTag": "d41d8…", "versionId": "3HL4kqtJ…"}}}]}

For every record on ``training_input/*.h5`` the handler runs :class:`lambdanet.trigger.UploadTrigger`
on ``s3://<bucket>`` (key URL-decoded as S3 encodes it: ``+`` is a space); the claim key
uses ``versionId`` (versioned buckets) or ``eTag`` — the same value :meth:`S3Store.info`
reports — so an event delivered twice (Lambda retries async invocations) starts one run.

Configuration comes from the environment (set by ``deploy/template.yaml``):
``LAMBDANET_LEDGER`` (``dynamodb://…``), ``LAMBDANET_OBJECTS`` (``s3://bucket/lambdanet``),
``LAMBDANET_NOTIFIER`` (``sns://arn…``), ``LAMBDANET_STORE`` (``redis://…``),
``LAMBDANET_EXECUTOR`` (``local`` | ``lithops``), ``LAMBDANET_LITHOPS_CONFIG`` (a file in the
image), ``LAMBDANET_WORKERS``, ``LAMBDANET_STRATEGY``, ``LAMBDANET_MODEL``,
``LAMBDANET_EPOCHS_PER_ROUND``; ``LAMBDANET_HOME`` defaults to ``/tmp/lambdanet`` (the only
writable path in Lambda). A bad upload never raises (it is a failed run, recorded and
notified); only an infrastructure error does, so Lambda's retry can try again.
"""

from __future__ import annotations

import logging
import os
from typing import Any
from urllib.parse import unquote_plus

from lambdanet import adapters
from lambdanet.errors import UserInputError
from lambdanet.services import Services
from lambdanet.settings import Settings
from lambdanet.trigger import TriggerResult, UploadTrigger, is_training_input

log = logging.getLogger("lambdanet.aws_lambda")


def parse_records(event: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """(bucket, key, version) of every S3 ObjectCreated record in ``event``."""
    out: list[tuple[str, str, str | None]] = []
    for record in event.get("Records") or []:
        if record.get("eventSource") != "aws:s3" or not str(record.get("eventName", "")).startswith(
                "ObjectCreated"):
            continue
        s3 = record.get("s3") or {}
        bucket = (s3.get("bucket") or {}).get("name")
        obj = s3.get("object") or {}
        key = obj.get("key")
        if not bucket or not key:
            continue
        version = obj.get("versionId") or obj.get("eTag") or None
        out.append((str(bucket), unquote_plus(str(key)), str(version).strip('"') if version else None))
    return out


def _int_env(name: str, default: int | None) -> int | None:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise UserInputError(f"{name}={value!r} is not an integer") from None


def handle_event(event: dict[str, Any], services: Services | None = None) -> list[TriggerResult]:
    """Run the trigger for each training input in ``event`` (used by :func:`handler` and tests)."""
    os.environ.setdefault("LAMBDANET_HOME", "/tmp/lambdanet")
    own = services is None
    services = services or Services.open(Settings.from_env())
    results: list[TriggerResult] = []
    try:
        for bucket, key, version in parse_records(event):
            if not is_training_input(key):
                log.info("ignoring s3://%s/%s (not training_input/*.h5)", bucket, key)
                continue
            trigger = UploadTrigger(
                services, adapters.open_objects(f"s3://{bucket}"),
                workers=_int_env("LAMBDANET_WORKERS", 1) or 1,
                strategy=os.environ.get("LAMBDANET_STRATEGY") or "neuron",
                model_name=os.environ.get("LAMBDANET_MODEL") or None,
                lithops_config=os.environ.get("LAMBDANET_LITHOPS_CONFIG") or None,
                epochs_per_round=_int_env("LAMBDANET_EPOCHS_PER_ROUND", None),
            )
            result = trigger.handle(key, version)
            log.info("s3://%s/%s#%s: %s %s %s", bucket, key, version, result.status, result.run_id,
                     result.error or "")
            results.append(result)
    finally:
        if own:
            services.close()
    return results


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """The Lambda handler: returns ``{"results": [...]}`` (one entry per training input)."""
    logging.getLogger().setLevel(logging.INFO)
    results = handle_event(event)
    return {"results": [r.to_json() for r in results]}
