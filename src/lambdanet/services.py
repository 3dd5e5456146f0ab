"""The opened adapters a command works with, built once from :class:`Settings`.

Usage::

    services = Services.open(Settings.from_env())
    services.ledger.list_runs()
    Services.open(read_only=True)            # commands that only read: the ledger is never written
    services.registry.load("itsacat@production")
    services.close()
"""

from __future__ import annotations

from dataclasses import dataclass

from lambdanet import adapters
from lambdanet.ports import Ledger, Notifier, ObjectStore
from lambdanet.registry import ModelRegistry
from lambdanet.settings import Settings


def read_only_ledger_url(url: str) -> str:
    """``url`` opened read-only: a file SQLite URL gains ``?mode=ro``; other ledgers (DynamoDB:
    reads never create anything; ``sqlite:///:memory:``) are returned as they are."""
    if adapters.scheme_of(url) != "sqlite":
        return url
    parts = adapters.parse_url(url, schemes=("sqlite",), name="SQLite", usage="sqlite:///abs/path.db",
                               options=None)  # SqliteLedger says which options it takes
    if parts.path.endswith(":memory:") or "mode" in parts.options:
        return url
    return f"{url}{'&' if parts.options else '?'}mode=ro"


@dataclass
class Services:
    settings: Settings
    ledger: Ledger
    objects: ObjectStore
    notifier: Notifier
    registry: ModelRegistry

    @classmethod
    def open(cls, settings: Settings | None = None, read_only: bool = False) -> Services:
        """The adapters of ``settings``; ``read_only=True`` (for commands that only read) opens
        the ledger so that it is never written: a SQLite ledger in ``mode=ro`` (no file, folder,
        schema or WAL files created; a missing database reads as "no runs yet")."""
        settings = settings or Settings.from_env()
        objects = adapters.open_objects(settings.objects_url)
        ledger_url = read_only_ledger_url(settings.ledger_url) if read_only else settings.ledger_url
        return cls(
            settings=settings,
            ledger=adapters.open_ledger(ledger_url),
            objects=objects,
            notifier=adapters.open_notifier(settings.notifier_url),
            registry=ModelRegistry(objects),
        )

    def close(self) -> None:
        self.ledger.close()
