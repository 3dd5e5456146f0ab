"""A study's journal in DynamoDB (``--storage dynamodb://table?region=…``): for trials driven on
AWS without a Redis to share, with JSON logs only — no snapshot, nothing ever unpickled.

Usage::

    backend = DynamoJournal.from_url("dynamodb://lambdanet-studies?region=eu-west-1", "my-study", home)
    storage = optuna.storages.JournalStorage(backend)

One table (created on first use if missing, on-demand billing), partition key ``pk`` (string)
and sort key ``sk`` (number): the study's journal is the items ``pk = "study#<name>"``, ``sk`` =
the log number 0, 1, 2…, each holding one operation as JSON text (``log``).

**Log numbers without a counter.** A writer puts each log at the number it believes is next,
on the condition that no item has it yet (``attribute_not_exists``); when another writer got
there first it counts the items it had not seen and tries the next free number. So numbers are
dense (no gaps: a number exists only once written), every writer agrees on them, and the
journal reads in order with one ``Query`` (consistent read) from a log number on. A batch of
logs from one writer keeps its order; batches of different writers may interleave, which
Optuna's journal allows (each log is one whole operation). boto3 errors become
:class:`~lambdanet.errors.StoreUnavailable`; an item that is not a JSON object is a
:class:`~lambdanet.errors.DataError`, never evaluated.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

from optuna.storages.journal import BaseJournalBackend

from lambdanet.adapters import parse_url
from lambdanet.errors import StoreUnavailable, URLError
from lambdanet.journals import check_study_name, decode_entry

USAGE = "dynamodb://table?region=…"


def study_key(study: str) -> str:
    return f"study#{study}"


class DynamoJournal(BaseJournalBackend):
    """Optuna journal logs as JSON text in DynamoDB items (no snapshots, no pickle)."""

    def __init__(self, table: str, study: str, *, region: str | None = None, endpoint_url: str | None = None) -> None:
        import boto3
        import botocore.exceptions

        if not table:
            raise URLError(f"DynamoDB study storage URL has no table name; use {USAGE}")
        self.table_name = table
        self.region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        self.key = study_key(check_study_name(study))
        self._errors = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)
        self._next = 0  # the log number this writer tries first: all logs below it exist
        self._call(lambda: self._open(boto3, endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None))

    @classmethod
    def from_url(cls, url: str, study: str, home: Path | None = None, *, create: bool = True) -> Self:
        """``home`` and ``create`` are the file journal's (the table is created on first use)."""
        parts = parse_url(url, schemes=("dynamodb",), name="DynamoDB study storage", usage=USAGE,
                          options=("region", "endpoint_url"))
        return cls(parts.netloc or parts.path.strip("/"), study, region=parts.options.get("region"),
                   endpoint_url=parts.options.get("endpoint_url"))

    # ---- plumbing ------------------------------------------------------------------------------
    def _call(self, fn: Any) -> Any:
        try:
            return fn()
        except self._errors as exc:
            text = " ".join(str(exc).split())[:200]
            raise StoreUnavailable(f"the study storage dynamodb://{self.table_name} ({self.region}) failed: "
                                   f"{text}; check credentials, region and endpoint") from exc

    def _open(self, boto3: Any, endpoint_url: str | None) -> None:
        from botocore.config import Config

        # the low-level client: items in DynamoDB's typed JSON ({"S": …}), no conversion of our own
        self.client = boto3.client("dynamodb", region_name=self.region, endpoint_url=endpoint_url,
                                   config=Config(connect_timeout=5, read_timeout=20, retries={"max_attempts": 3}))
        try:
            self.client.describe_table(TableName=self.table_name)
            return
        except self.client.exceptions.ResourceNotFoundException:
            pass
        with contextlib.suppress(self.client.exceptions.ResourceInUseException):  # created by another driver now
            self.client.create_table(
                TableName=self.table_name, BillingMode="PAY_PER_REQUEST",
                AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                      {"AttributeName": "sk", "AttributeType": "N"}],
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}])
        self.client.get_waiter("table_exists").wait(TableName=self.table_name,
                                                    WaiterConfig={"Delay": 1, "MaxAttempts": 60})

    def _items(self, log_number_from: int, *, limit: int | None = None) -> Iterator[dict[str, Any]]:
        """The journal's items from ``log_number_from`` on, in order (consistent reads, all pages)."""
        args: dict[str, Any] = {
            "TableName": self.table_name, "ConsistentRead": True,
            "KeyConditionExpression": "pk = :pk AND sk >= :n",
            "ExpressionAttributeValues": {":pk": {"S": self.key}, ":n": {"N": str(log_number_from)}}}
        if limit is not None:
            args["Limit"] = limit
        while True:
            page = self._call(lambda: self.client.query(**args))
            yield from page.get("Items", [])
            if limit is not None or "LastEvaluatedKey" not in page:
                return
            args["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # ---- BaseJournalBackend --------------------------------------------------------------------
    def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
        for item in self._items(log_number_from):
            yield decode_entry(item.get("log", {}).get("S", ""), f"{self.key}[{item['sk']['N']}]")

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        for log in logs:
            text = json.dumps(log, separators=(",", ":"))
            while not self._put_at(self._next, text):  # another writer has that number: skip what it wrote
                self._next += sum(1 for _ in self._items(self._next))
            self._next += 1

    def _put_at(self, number: int, text: str) -> bool:
        """Put the log at ``number`` unless that number is taken (False)."""
        item = {"pk": {"S": self.key}, "sk": {"N": str(number)}, "log": {"S": text}}

        def put() -> bool:
            try:
                self.client.put_item(TableName=self.table_name, Item=item,
                                     ConditionExpression="attribute_not_exists(sk)")
                return True
            except self.client.exceptions.ConditionalCheckFailedException:
                return False

        return bool(self._call(put))

    def exists(self) -> bool:
        return any(True for _ in self._items(0, limit=1))

    def close(self) -> None:
        """Nothing to release (boto3 clients are pooled)."""
