"""The DynamoDB ledger: ``dynamodb://table?region=…&endpoint_url=…``.

Usage::

    ledger = DynamoLedger.from_url("dynamodb://lambdanet-ledger?region=eu-west-1")
    ledger.create_run(RunRecord(run_id="r-1", status="running", kind="mlp", config={}, data="x.h5"))
    ledger.upsert_epochs("r-1", rows)               # batched PutItem; (run, epoch) is the key
    ledger.claim("s3://b/training_input/x.h5#v1", "r-1")   # conditional put: True once

One table (created on first use if missing, on-demand billing) with a string partition key
``pk`` and sort key ``sk``:

=============================  =====================  ==========================================
item                           pk                     sk
=============================  =====================  ==========================================
run                            ``run#<run_id>``       ``#run``   (+ ``gsi1pk="runs"``, ``created_at``)
epoch row                      ``run#<run_id>``       ``epoch#000000042``
worker call                    ``run#<run_id>``       ``call#000003#001#00007`` (round, attempt, worker)
claim (idempotency)            ``claim#<key>``        ``#claim``
the run's lease                ``run#<run_id>``       ``#lease`` (holder, execution, generation, expires_at)
=============================  =====================  ==========================================

The global secondary index ``by_created`` (``gsi1pk``, ``created_at``) lists runs newest first.
Runs are created with ``attribute_not_exists(pk)``; updates require ``attribute_exists(pk)``
and merge ``metrics`` key by key in one UpdateItem (atomic, no read-modify-write); claims are
conditional puts; a lease is read consistently and replaced with a conditional put on the
generation it read (optimistic concurrency: two drivers racing for it, one wins). Floats
become ``Decimal(repr(x))`` (exact round trip); NaN/±inf and magnitudes outside DynamoDB's
range (1e-130…1e126) are stored as NULL in number columns (read back as NaN, as the SQLite
ledger does) and as tagged strings inside maps (exact round trip).
``config`` is kept as JSON text. boto3 errors become :class:`LedgerUnavailable`.
"""

from __future__ import annotations

import json
import math
import os
import time
from decimal import Decimal
from typing import Any, Self

import boto3
import botocore.exceptions
from boto3.dynamodb.conditions import Key

from lambdanet.adapters import parse_url
from lambdanet.errors import (
    LeaseHeld,
    LedgerUnavailable,
    StaleDriver,
    URLError,
    UserInputError,
)
from lambdanet.ledgers import check_status, check_update, float_or_nan, run_not_found
from lambdanet.ports.ledger import CallRow, EpochRow, Lease, RunRecord, lease_refused

RUN_SK = "#run"
CLAIM_SK = "#claim"
LEASE_SK = "#lease"
GSI = "by_created"
_NONFINITE = "__float__:"


# ---- number conversion ---------------------------------------------------------------------------
def _storable(x: float) -> bool:
    """Whether DynamoDB's Number type holds ``x`` (finite, 0 or 1e-130 <= |x| < 1e126)."""
    return math.isfinite(x) and (x == 0.0 or 1e-130 <= abs(x) < 1e126)


def to_dynamo(value: Any) -> Any:
    """Python value -> DynamoDB attribute value (floats exact via ``Decimal(repr(x))``)."""
    if isinstance(value, bool) or value is None or isinstance(value, str | int | Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value)) if _storable(value) else f"{_NONFINITE}{value!r}"
    if isinstance(value, dict):
        return {str(k): to_dynamo(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_dynamo(v) for v in value]
    if hasattr(value, "item"):  # numpy scalar
        return to_dynamo(value.item())
    raise UserInputError(f"cannot store a {type(value).__name__} in the DynamoDB ledger")


def from_dynamo(value: Any) -> Any:
    """DynamoDB attribute value -> Python (Decimal -> int when integral, else float)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and "." not in str(value) \
            and "e" not in str(value).lower() else float(value)
    if isinstance(value, str) and value.startswith(_NONFINITE):
        return float(value[len(_NONFINITE):])
    if isinstance(value, dict):
        return {k: from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_dynamo(v) for v in value]
    return value


def _num(value: float | None) -> Decimal | None:
    """A top-level number attribute: exact, NaN/inf as NULL (read back as NaN)."""
    if value is None:
        return None
    f = float(value)
    return Decimal(repr(f)) if _storable(f) else None


def _opt_f(value: Any) -> float | None:
    return None if value is None else float(value)


class DynamoLedger:
    """A :class:`lambdanet.ports.Ledger` in one DynamoDB table."""

    def __init__(self, table: str, *, region: str | None = None, endpoint_url: str | None = None) -> None:
        if not table:
            raise URLError("DynamoDB URL has no table name; use dynamodb://table?region=…")
        self.table_name = table
        self.region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") \
            or "us-east-1"
        self.endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
        self.url = f"dynamodb://{table}?region={self.region}"
        try:
            self._resource = boto3.resource("dynamodb", region_name=self.region,
                                            endpoint_url=self.endpoint_url)
            self.table = self._resource.Table(table)
            self._ensure_table()
        except botocore.exceptions.BotoCoreError as exc:
            raise self._fail(exc) from exc

    @classmethod
    def from_url(cls, url: str) -> Self:
        parts = parse_url(url, schemes=("dynamodb",), name="DynamoDB", usage="dynamodb://table?region=…",
                          options=("region", "endpoint_url"))
        table = parts.netloc or parts.path.strip("/")
        return cls(table, region=parts.options.get("region"), endpoint_url=parts.options.get("endpoint_url"))

    # ---- plumbing ------------------------------------------------------------------------------
    def _fail(self, exc: BaseException) -> LedgerUnavailable:
        text = " ".join(str(exc).split())[:200]
        return LedgerUnavailable(f"cannot use the DynamoDB ledger '{self.table_name}' "
                                 f"({self.region}): {text}; check credentials, region and endpoint")

    def _call(self, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._fail(exc) from exc

    def _ensure_table(self) -> None:
        client = self._resource.meta.client
        try:
            client.describe_table(TableName=self.table_name)
            return
        except client.exceptions.ResourceNotFoundException:
            pass
        except botocore.exceptions.ClientError as exc:
            raise self._fail(exc) from exc
        try:
            client.create_table(
                TableName=self.table_name,
                BillingMode="PAY_PER_REQUEST",
                AttributeDefinitions=[
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "sk", "AttributeType": "S"},
                    {"AttributeName": "gsi1pk", "AttributeType": "S"},
                    {"AttributeName": "created_at", "AttributeType": "N"},
                ],
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                           {"AttributeName": "sk", "KeyType": "RANGE"}],
                GlobalSecondaryIndexes=[{
                    "IndexName": GSI,
                    "KeySchema": [{"AttributeName": "gsi1pk", "KeyType": "HASH"},
                                  {"AttributeName": "created_at", "KeyType": "RANGE"}],
                    "Projection": {"ProjectionType": "ALL"},
                }],
            )
        except client.exceptions.ResourceInUseException:
            pass  # created concurrently by another process
        except botocore.exceptions.ClientError as exc:
            raise self._fail(exc) from exc
        client.get_waiter("table_exists").wait(TableName=self.table_name,
                                               WaiterConfig={"Delay": 1, "MaxAttempts": 60})

    def close(self) -> None:
        """Nothing to release (boto3 clients are pooled)."""

    @staticmethod
    def _is_conditional(exc: botocore.exceptions.ClientError) -> bool:
        return bool(exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException")

    # ---- runs ----------------------------------------------------------------------------------
    def create_run(self, run: RunRecord) -> None:
        check_status(run.status)
        if not run.created_at:
            run.created_at = time.time()
        try:
            config_json = json.dumps(run.config, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise UserInputError(f"the run's config is not JSON-serialisable: {exc}") from exc
        item = {
            "pk": f"run#{run.run_id}", "sk": RUN_SK, "gsi1pk": "runs", "run_id": run.run_id,
            "status": run.status, "kind": run.kind, "config": config_json, "data": run.data,
            "model": run.model, "created_at": _num(run.created_at), "started_at": _num(run.started_at),
            "ended_at": _num(run.ended_at), "stop_reason": run.stop_reason, "error": run.error,
            "metrics": to_dynamo(dict(run.metrics)),
        }
        try:
            self.table.put_item(Item=item, ConditionExpression="attribute_not_exists(pk)")
        except botocore.exceptions.ClientError as exc:
            if self._is_conditional(exc):
                raise UserInputError(f"a run '{run.run_id}' is already in the ledger") from exc
            raise self._fail(exc) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise self._fail(exc) from exc

    def update_run(self, run_id: str, **fields: Any) -> None:
        check_update(fields)
        sets: list[str] = []
        names: dict[str, str] = {"#pk": "pk"}
        values: dict[str, Any] = {}
        for i, (name, value) in enumerate(fields.items()):
            if name == "metrics":
                for j, (mk, mv) in enumerate((value or {}).items()):
                    names[f"#m{j}"] = str(mk)
                    values[f":m{j}"] = to_dynamo(mv)
                    sets.append(f"#metrics.#m{j} = :m{j}")
                    names["#metrics"] = "metrics"
                continue
            if name == "config":
                value = json.dumps(value, sort_keys=True)
            elif name in ("created_at", "started_at", "ended_at"):
                value = _num(value)
            names[f"#f{i}"] = name
            values[f":f{i}"] = value
            sets.append(f"#f{i} = :f{i}")
        if not sets:
            self.get_run(run_id)  # still raise RunNotFound for an unknown run
            return
        try:
            self.table.update_item(
                Key={"pk": f"run#{run_id}", "sk": RUN_SK},
                UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression="attribute_exists(#pk)",
                ExpressionAttributeNames=names,
                **({"ExpressionAttributeValues": values} if values else {}),
            )
        except botocore.exceptions.ClientError as exc:
            if self._is_conditional(exc):
                raise run_not_found(run_id) from exc
            raise self._fail(exc) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise self._fail(exc) from exc

    @staticmethod
    def _run(item: dict[str, Any]) -> RunRecord:
        return RunRecord(
            run_id=str(item["run_id"]), status=str(item["status"]), kind=str(item["kind"]),
            config=json.loads(item.get("config") or "{}"), data=str(item.get("data") or ""),
            model=item.get("model"), created_at=float_or_nan(item.get("created_at")),
            started_at=_opt_f(item.get("started_at")), ended_at=_opt_f(item.get("ended_at")),
            stop_reason=item.get("stop_reason"), error=item.get("error"),
            metrics=from_dynamo(item.get("metrics") or {}),
        )

    def get_run(self, run_id: str) -> RunRecord:
        out = self._call(self.table.get_item, Key={"pk": f"run#{run_id}", "sk": RUN_SK}, ConsistentRead=True)
        if "Item" not in out:
            raise run_not_found(run_id)
        return self._run(out["Item"])

    def list_runs(self, limit: int = 100) -> list[RunRecord]:
        """Newest first (the ``by_created`` index)."""
        runs: list[RunRecord] = []
        kwargs: dict[str, Any] = {"IndexName": GSI, "KeyConditionExpression": Key("gsi1pk").eq("runs"),
                                  "ScanIndexForward": False}
        while len(runs) < limit:
            out = self._call(self.table.query, **kwargs)
            runs.extend(self._run(item) for item in out.get("Items", []))
            if "LastEvaluatedKey" not in out:
                break
            kwargs["ExclusiveStartKey"] = out["LastEvaluatedKey"]
        return runs[: int(limit)]

    def _query_run(self, run_id: str, sk_prefix: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": Key("pk").eq(f"run#{run_id}") & Key("sk").begins_with(sk_prefix),
            "ConsistentRead": True,
        }
        while True:
            out = self._call(self.table.query, **kwargs)
            items.extend(out.get("Items", []))
            if "LastEvaluatedKey" not in out:
                return items
            kwargs["ExclusiveStartKey"] = out["LastEvaluatedKey"]

    def _batch_put(self, items: list[dict[str, Any]]) -> None:
        try:
            with self.table.batch_writer(overwrite_by_pkeys=["pk", "sk"]) as batch:
                for item in items:
                    batch.put_item(Item=item)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._fail(exc) from exc

    # ---- epochs --------------------------------------------------------------------------------
    def upsert_epochs(self, run_id: str, rows: list[EpochRow]) -> None:
        """Put every row (batched); writing an epoch again replaces its item."""
        self._batch_put([
            {"pk": f"run#{run_id}", "sk": f"epoch#{int(r.epoch):09d}", "run_id": run_id,
             "epoch": int(r.epoch), "cost": _num(r.cost), "learning_rate": _num(r.learning_rate),
             "seconds": _num(r.seconds), "extra": to_dynamo(dict(r.extra))}
            for r in rows
        ])

    def epochs(self, run_id: str) -> list[EpochRow]:
        return [
            EpochRow(run_id, int(it["epoch"]), float_or_nan(it.get("cost")), float_or_nan(it.get("learning_rate")),
                     float_or_nan(it.get("seconds")), from_dynamo(it.get("extra") or {}))
            for it in self._query_run(run_id, "epoch#")
        ]

    def delete_epochs(self, run_id: str, after: int) -> int:
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": Key("pk").eq(f"run#{run_id}")
            & Key("sk").between(f"epoch#{int(after) + 1:09d}", "epoch#999999999"),
            "ConsistentRead": True, "ProjectionExpression": "pk, sk",
        }
        keys: list[dict[str, Any]] = []
        while True:
            out = self._call(self.table.query, **kwargs)
            keys.extend({"pk": it["pk"], "sk": it["sk"]} for it in out.get("Items", []))
            if "LastEvaluatedKey" not in out:
                break
            kwargs["ExclusiveStartKey"] = out["LastEvaluatedKey"]
        try:
            with self.table.batch_writer() as batch:
                for key in keys:
                    batch.delete_item(Key=key)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._fail(exc) from exc
        return len(keys)

    # ---- calls ---------------------------------------------------------------------------------
    def record_calls(self, run_id: str, rows: list[CallRow]) -> None:
        self._batch_put([
            {"pk": f"run#{run_id}", "sk": f"call#{int(r.round):06d}#{int(r.attempt):03d}#{int(r.worker):05d}",
             "round": int(r.round), "attempt": int(r.attempt), "worker": int(r.worker),
             "started_at": _num(r.started_at), "ended_at": _num(r.ended_at), "ok": bool(r.ok),
             "error": r.error}
            for r in rows
        ])

    def calls(self, run_id: str) -> list[CallRow]:
        """Ordered by round, attempt, worker."""
        return [
            CallRow(run_id, int(it["round"]), int(it["attempt"]), int(it["worker"]), float_or_nan(it.get("started_at")),
                    float_or_nan(it.get("ended_at")), bool(it.get("ok")), it.get("error"))
            for it in self._query_run(run_id, "call#")
        ]

    # ---- claims --------------------------------------------------------------------------------
    def claim(self, key: str, run_id: str) -> bool:
        return self._conditional_put({"pk": f"claim#{key}", "sk": CLAIM_SK, "key": key, "run_id": run_id,
                                      "claimed_at": _num(time.time())}, "attribute_not_exists(pk)", {})

    def claimed_by(self, key: str) -> str | None:
        out = self._call(self.table.get_item, Key={"pk": f"claim#{key}", "sk": CLAIM_SK}, ConsistentRead=True)
        item = out.get("Item")
        return None if item is None else str(item["run_id"])

    # ---- the run's lease -----------------------------------------------------------------------
    def get_lease(self, run_id: str) -> Lease | None:
        out = self._call(self.table.get_item, Key={"pk": f"run#{run_id}", "sk": LEASE_SK}, ConsistentRead=True)
        item = out.get("Item")
        if item is None:
            return None
        return Lease(run_id, str(item["holder"]), str(item["execution"]), int(item["generation"]),
                     float(item["expires_at"]))

    def _put_lease(self, lease: Lease, condition: str, values: dict[str, Any]) -> bool:
        """Write ``lease`` if ``condition`` holds; False when it does not."""
        return self._conditional_put({"pk": f"run#{lease.run_id}", "sk": LEASE_SK, "holder": lease.holder,
                                      "execution": lease.execution, "generation": lease.generation,
                                      "expires_at": _num(lease.expires_at)}, condition, values)

    def _conditional_put(self, item: dict[str, Any], condition: str, values: dict[str, Any]) -> bool:
        """PutItem ``item`` if ``condition`` holds; False when it does not (another writer won)."""
        kwargs: dict[str, Any] = {"Item": item, "ConditionExpression": condition}
        if values:
            kwargs["ExpressionAttributeValues"] = values
        try:
            self.table.put_item(**kwargs)
            return True
        except botocore.exceptions.ClientError as exc:
            if self._is_conditional(exc):
                return False
            raise self._fail(exc) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise self._fail(exc) from exc

    def acquire_lease(self, run_id: str, holder: str, execution: str, ttl_s: float,
                      steal_from: str | None = None) -> Lease:
        for _ in range(3):  # lost a race: read again and decide again
            now = time.time()
            current = self.get_lease(run_id)
            refused = lease_refused(current, holder, execution, now, steal_from)
            if refused:
                raise LeaseHeld(refused)
            lease = Lease(run_id, holder, execution, (current.generation if current else 0) + 1, now + ttl_s)
            if current is None:
                done = self._put_lease(lease, "attribute_not_exists(pk)", {})
            else:
                done = self._put_lease(lease, "generation = :g", {":g": current.generation})
            if done:
                return lease
        current = self.get_lease(run_id)
        raise LeaseHeld(lease_refused(current, holder, execution, time.time(), None)
                        or f"run {run_id}: another driver took the lease at the same time")

    def renew_lease(self, run_id: str, lease: Lease, ttl_s: float) -> Lease:
        renewed = Lease(run_id, lease.holder, lease.execution, lease.generation, time.time() + ttl_s)
        if not self._put_lease(renewed, "holder = :h AND generation = :g",
                               {":h": lease.holder, ":g": lease.generation}):
            raise StaleDriver(f"run {run_id}: this driver ({lease.holder}) lost its lease to another one")
        return renewed

    def release_lease(self, run_id: str, lease: Lease) -> None:
        try:
            self.table.delete_item(Key={"pk": f"run#{run_id}", "sk": LEASE_SK},
                                   ConditionExpression="holder = :h AND generation = :g",
                                   ExpressionAttributeValues={":h": lease.holder, ":g": lease.generation})
        except botocore.exceptions.ClientError as exc:
            if not self._is_conditional(exc):
                raise self._fail(exc) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise self._fail(exc) from exc

    def __repr__(self) -> str:
        return f"DynamoLedger({self.url!r})"
