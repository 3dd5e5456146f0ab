"""The SNS notifier: itsacat's e-mails, published to an SNS topic (``sns://<topic-arn>``).

Usage::

    notifier = SnsNotifier.from_url("sns://arn:aws:sns:eu-west-1:123456789012:lambdanet-alerts")
    notifier = SnsNotifier.from_url("sns://arn:aws:sns:us-east-1:123456789012:t?endpoint_url=http://127.0.0.1:5000")
    notifier.notify("Training update!", "Training update! Cost after epoch 100 = 0.6523",
                    run_id="r-1", event="progress", epoch=100, cost=0.6523)

Each call is one ``Publish``: ``Subject`` (the subject, made one line of printable ASCII and
cut to SNS' 100 characters — it is the e-mail subject), ``Message`` (the full text) and up to
10 ``MessageAttributes`` from the fields (numbers as ``Number``, the rest as ``String``;
attribute names outside ``[A-Za-z0-9_.-]`` are cleaned). The region comes from the ARN, the
endpoint from ``?endpoint_url=`` or ``AWS_ENDPOINT_URL``. boto3 retries throttling itself;
a failure afterwards raises :class:`NotifierUnavailable`.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any, Self

import boto3
import botocore.config
import botocore.exceptions

from lambdanet.adapters import parse_url
from lambdanet.errors import NotifierUnavailable, URLError

MAX_SUBJECT = 100
MAX_ATTRIBUTES = 10
_ARN = re.compile(r"^arn:aws[a-zA-Z-]*:sns:([a-z0-9-]+):(\d{12}):([A-Za-z0-9_-]{1,256})(\.fifo)?$")
_ATTR_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def clean_subject(subject: str) -> str:
    """One line of printable ASCII, at most 100 characters (SNS' Subject rules)."""
    text = " ".join(str(subject).split())
    text = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in text)
    if len(text) > MAX_SUBJECT:
        text = text[: MAX_SUBJECT - 3] + "..."
    return text or "lambdanet"


def message_attributes(fields: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Fields -> SNS MessageAttributes (first 10, non-empty values)."""
    out: dict[str, dict[str, str]] = {}
    for name, value in fields.items():
        if len(out) >= MAX_ATTRIBUTES or value is None:
            continue
        key = _ATTR_NAME.sub("_", str(name)).strip(".")[:256] or "field"
        if key.lower().startswith(("aws.", "amazon.")):
            key = f"x_{key}"
        if hasattr(value, "item") and not isinstance(value, str | bytes):
            value = value.item()
        if isinstance(value, bool):
            out[key] = {"DataType": "String", "StringValue": str(value).lower()}
        elif isinstance(value, int | float) and math.isfinite(float(value)):
            out[key] = {"DataType": "Number", "StringValue": repr(value)}
        else:
            text = str(value)
            if text:
                out[key] = {"DataType": "String", "StringValue": text[:1024]}
    return out


class SnsNotifier:
    """A :class:`lambdanet.ports.Notifier` that publishes to one SNS topic."""

    def __init__(self, topic_arn: str, *, endpoint_url: str | None = None) -> None:
        match = _ARN.match(topic_arn)
        if match is None:
            raise URLError(f"not an SNS topic ARN: {topic_arn!r} "
                           "(use sns://arn:aws:sns:REGION:ACCOUNT:TOPIC)")
        self.topic_arn = topic_arn
        self.region = match.group(1)
        self.url = f"sns://{topic_arn}"
        self.endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
        try:
            self.client = boto3.client(
                "sns", region_name=self.region, endpoint_url=self.endpoint_url,
                config=botocore.config.Config(retries={"max_attempts": 5, "mode": "standard"},
                                              connect_timeout=5, read_timeout=10),
            )
        except botocore.exceptions.BotoCoreError as exc:
            raise NotifierUnavailable(f"cannot create an SNS client for {self.url}: {exc}") from exc

    @classmethod
    def from_url(cls, url: str) -> Self:
        parts = parse_url(url, schemes=("sns",), name="SNS", article="an",
                          usage="sns://arn:aws:sns:REGION:ACCOUNT:TOPIC", options=("endpoint_url",))
        return cls((parts.netloc + parts.path).strip("/"), endpoint_url=parts.options.get("endpoint_url"))

    def notify(self, subject: str, message: str, **fields: Any) -> None:
        kwargs: dict[str, Any] = {"TopicArn": self.topic_arn, "Subject": clean_subject(subject),
                                  "Message": str(message) or str(subject)}
        attributes = message_attributes(fields)
        if attributes:
            kwargs["MessageAttributes"] = attributes
        try:
            self.client.publish(**kwargs)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            text = " ".join(str(exc).split())[:200]
            raise NotifierUnavailable(f"cannot publish to {self.url}: {text}") from exc

    def __repr__(self) -> str:
        return f"SnsNotifier({self.url!r})"
