"""A study's journal in Redis (``--storage redis://host:port/db``): for trials on functions and
drivers on several machines.

Usage::

    backend = RedisJournal.from_url("redis://127.0.0.1:6379/0", "my-study", home)
    storage = optuna.storages.JournalStorage(backend)

Optuna's own :class:`optuna.storages.journal.JournalRedisBackend` also saves *pickled* snapshots
of the study (``BaseJournalSnapshot``) and unpickles whatever it finds under the snapshot key —
on a store others may write, that runs their code. :class:`RedisJournal` is a plain
:class:`~optuna.storages.journal.BaseJournalBackend`: the journal is the Redis list
``ln:study:<name>:journal`` of JSON objects, one per operation, appended with one ``RPUSH`` (atomic,
so the log numbers of all writers agree) and read with ``LRANGE key n -1``. An entry that is not a
JSON object is refused with a :class:`~lambdanet.errors.DataError`, never evaluated. The client
and its errors are the tensor store's (:func:`lambdanet.stores.redis.connect`, :func:`~lambdanet.stores.redis.call`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

from optuna.storages.journal import BaseJournalBackend

from lambdanet.adapters import redact
from lambdanet.journals import check_study_name, decode_entry
from lambdanet.stores.redis import call, connect


def journal_key(study: str) -> str:
    return f"ln:study:{study}:journal"


class RedisJournal(BaseJournalBackend):
    """Optuna journal logs as JSON strings in one Redis list (no snapshots, no pickle)."""

    def __init__(self, url: str, study: str) -> None:
        self.url = redact(url)
        self.key = journal_key(check_study_name(study))
        self._r = connect(url)  # the tensor store's client settings and one-line URL errors

    @classmethod
    def from_url(cls, url: str, study: str, home: Path | None = None, *, create: bool = True) -> Self:
        """``home`` and ``create`` are the file journal's (the list exists once written)."""
        return cls(url, study)

    def _call(self, fn: Any) -> Any:
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
