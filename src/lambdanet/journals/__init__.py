"""Study journals: where a tuning study lives, as Optuna journal storage over JSON logs only —
no snapshot, nothing ever unpickled. An adapter kind of :mod:`lambdanet.adapters` (opened with
``adapters.open_journal(url, study, home)``), one adapter per module:

* :mod:`lambdanet.journals.file` — ``file``: Optuna's JSON-lines file under ``$LAMBDANET_HOME/studies/``;
* :mod:`lambdanet.journals.redis` — ``redis://…``: a Redis list (trials on functions, drivers on several machines);
* :mod:`lambdanet.journals.dynamodb` — ``dynamodb://table?region=…``: DynamoDB items (AWS without a Redis).

Each is an Optuna ``BaseJournalBackend`` with ``from_url(url, study, home, create=…)``,
``exists()`` (the journal has entries) and ``close()``. This module holds what they share: the
study name's rule and the decoding of one entry.
"""

from __future__ import annotations

import json
import re
from typing import Any

from lambdanet.errors import ConfigError, DataError

STUDY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_study_name(name: str) -> str:
    if not isinstance(name, str) or not STUDY_RE.fullmatch(name):
        raise ConfigError(f"invalid study name {name!r}: use 1-64 letters, digits, '_', '.' or '-', starting "
                          f"with a letter or digit")
    return name


def decode_entry(item: bytes | str, where: str) -> dict[str, Any]:
    """One journal entry: a JSON object, or DataError (nothing else is ever interpreted)."""
    try:
        text = item.decode("utf-8") if isinstance(item, bytes) else item
        value = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise DataError(f"study journal entry {where} is not JSON; the journal holds JSON logs only (was it "
                        f"written by something else?)") from None
    if not isinstance(value, dict):
        raise DataError(f"study journal entry {where} is {type(value).__name__}, not a JSON object")
    return value
