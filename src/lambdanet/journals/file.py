"""A study's journal in a file (``--storage file``, the default): Optuna's
:class:`~optuna.storages.journal.JournalFileBackend` — JSON lines, with an ``open``-lock for
writers in several processes, and no snapshots — at ``$LAMBDANET_HOME/studies/<study>.journal``.

Usage::

    backend = FileJournal.from_url("file", "my-study", home)     # ~/.lambdanet/studies/my-study.journal
    storage = optuna.storages.JournalStorage(backend)

Nothing is created until the journal is first read or written, so ``exists()`` never leaves a file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

from optuna.storages.journal import BaseJournalBackend, JournalFileBackend, JournalFileOpenLock

from lambdanet.errors import ConfigError
from lambdanet.journals import check_study_name


def journal_file(home: Path, study: str) -> Path:
    return home / "studies" / f"{check_study_name(study)}.journal"


class FileJournal(BaseJournalBackend):
    """Optuna's JSON-lines journal file of one study, opened on first use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: JournalFileBackend | None = None

    @classmethod
    def from_url(cls, url: str, study: str, home: Path, *, create: bool = True) -> Self:
        """``url`` is ``file``; ``create=False``: the study must exist (a trial-driver process, a resume)."""
        if url.strip() != "file":
            raise ConfigError(f"study storage {url!r}: use 'file' (under LAMBDANET_HOME), redis://host:port/db "
                              f"or dynamodb://table?region=…")
        path = journal_file(home, study)
        if not create and not path.exists():
            raise ConfigError(f"no study '{study}' in {path.parent}; start it with lambdanet tune DATA … "
                              f"--study {study}")
        return cls(path)

    def _backend(self) -> JournalFileBackend:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = JournalFileBackend(str(self.path), lock_obj=JournalFileOpenLock(str(self.path)))
        return self._file

    def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
        return self._backend().read_logs(log_number_from)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        self._backend().append_logs(logs)

    def exists(self) -> bool:
        return self.path.exists() and self.path.stat().st_size > 0

    def close(self) -> None:
        """Nothing held open between calls."""
