"""Where a study lives: Optuna's journal storage over JSON logs only — a file under
``LAMBDANET_HOME`` (embedded) or a Redis list (trials on functions, drivers on several machines).

Usage::

    backend = open_journal("file", "my-study", home)            # ~/.lambdanet/studies/my-study.journal
    backend = open_journal("redis://127.0.0.1:6379/0", "my-study", home)
    backend = open_journal("dynamodb://lambdanet-studies?region=eu-west-1", "my-study", home)
    storage = optuna.storages.JournalStorage(backend)

Optuna's own :class:`optuna.storages.journal.JournalRedisBackend` also saves *pickled* snapshots
of the study (``BaseJournalSnapshot``) and unpickles whatever it finds under the snapshot key —
on a store others may write, that runs their code. :class:`RedisJournal` is a plain
:class:`~optuna.storages.journal.BaseJournalBackend`: the journal is the Redis list
``ln:study:<name>:journal`` of JSON objects, one per operation, appended with one ``RPUSH`` (atomic,
so the log numbers of all writers agree) and read with ``LRANGE key n -1``. An entry that is not a
JSON object is refused with a :class:`~lambdanet.errors.DataError`, never evaluated. The file
backend is Optuna's :class:`~optuna.storages.journal.JournalFileBackend` (JSON lines, with an
``open``-lock for writers in several processes), which has no snapshots either.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from optuna.storages.journal import BaseJournalBackend, JournalFileBackend, JournalFileOpenLock

from lambdanet import adapters
from lambdanet.errors import ConfigError, DataError

STUDY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_study_name(name: str) -> str:
    if not isinstance(name, str) or not STUDY_RE.fullmatch(name):
        raise ConfigError(f"invalid study name {name!r}: use 1-64 letters, digits, '_', '.' or '-', starting "
                          f"with a letter or digit")
    return name


def journal_key(study: str) -> str:
    return f"ln:study:{study}:journal"


class RedisJournal(BaseJournalBackend):
    """Optuna journal logs as JSON strings in one Redis list (no snapshots, no pickle)."""

    def __init__(self, url: str, study: str) -> None:
        from lambdanet.stores.redis import connect  # redis stays an optional extra

        self.url = adapters.redact(url)
        self.key = journal_key(check_study_name(study))
        self._r = connect(url)  # the tensor store's client settings and one-line URL errors

    def _call(self, fn: Any) -> Any:
        from lambdanet.stores.redis import call

        return call(fn, self.url, "the study storage")

    def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
        raw: list[bytes] = self._call(lambda: self._r.lrange(self.key, log_number_from, -1))
        for i, item in enumerate(raw, start=log_number_from):
            yield decode_entry(item, f"{self.key}[{i}]")

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        if logs:
            lines = [json.dumps(log, separators=(",", ":")) for log in logs]
            self._call(lambda: self._r.rpush(self.key, *lines))

    def exists(self) -> bool:
        return bool(self._call(lambda: self._r.exists(self.key)))

    def close(self) -> None:
        self._r.close()


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


def journal_file(home: Path, study: str) -> Path:
    return home / "studies" / f"{check_study_name(study)}.journal"


def open_journal(storage: str, study: str, home: Path, *, create: bool = True) -> BaseJournalBackend:
    """The journal backend of ``study``: ``storage`` is ``"file"`` (under ``home``), a Redis URL or
    a DynamoDB URL (:mod:`lambdanet.tune.dynamo_journal`)."""
    check_study_name(study)
    scheme = adapters.scheme_of(storage) if "://" in storage else "file"
    if scheme in ("redis", "rediss"):
        return RedisJournal(storage, study)
    if scheme == "dynamodb":
        from lambdanet.tune.dynamo_journal import DynamoJournal  # boto3 only when asked for

        return DynamoJournal.from_url(storage, study)
    if scheme != "file" or storage != "file":
        raise ConfigError(f"study storage {adapters.redact(storage)!r}: use 'file' (under LAMBDANET_HOME), "
                          f"redis://host:port/db or dynamodb://table?region=…")
    path = journal_file(home, study)
    if not create and not path.exists():
        raise ConfigError(f"no study '{study}' in {path.parent}; start it with lambdanet tune DATA … --study {study}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))


def journal_exists(storage: str, study: str, home: Path) -> bool:
    """True when the study's journal already has entries (a new study must not reuse it)."""
    scheme = adapters.scheme_of(storage) if "://" in storage else "file"
    if scheme == "dynamodb":
        from lambdanet.tune.dynamo_journal import DynamoJournal

        dynamo = DynamoJournal.from_url(storage, study)
        return dynamo.exists()
    if scheme in ("redis", "rediss"):
        backend = RedisJournal(storage, study)
        try:
            return backend.exists()
        finally:
            backend.close()
    path = journal_file(home, study)
    return path.exists() and path.stat().st_size > 0
