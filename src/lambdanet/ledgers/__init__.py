"""The ledger adapters (:mod:`.sqlite`, :mod:`.dynamodb`) and the checks they share, so that both
refuse the same bad input with the same message and read missing numbers back the same way."""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

from lambdanet.errors import PortMisuse, RunNotFound, UserInputError
from lambdanet.ports.ledger import RUN_STATUSES, RunRecord

RUN_FIELDS = tuple(f.name for f in fields(RunRecord))
UPDATABLE_FIELDS = RUN_FIELDS[1:]  # every field but run_id


def check_status(status: str) -> None:
    if status not in RUN_STATUSES:
        raise UserInputError(f"unknown run status {status!r} (allowed: {', '.join(RUN_STATUSES)})")


def check_update(fields: dict[str, Any]) -> None:
    """The fields ``update_run`` was given: known, writable, and a known status."""
    unknown = sorted(set(fields) - set(UPDATABLE_FIELDS))
    if unknown:
        raise PortMisuse(f"update_run: unknown or read-only fields {unknown} (allowed: {list(UPDATABLE_FIELDS)})")
    if "status" in fields:
        check_status(fields["status"])


def run_not_found(run_id: str) -> RunNotFound:
    return RunNotFound(f"no run '{run_id}' in the ledger; `lambdanet runs list` shows the runs")


def float_or_nan(value: Any) -> float:
    """A number read back: both ledgers store NaN as NULL (SQLite has no NaN, DynamoDB no
    non-finite numbers), so NULL reads back as NaN and a diverged cost survives the round trip."""
    return math.nan if value is None else float(value)
