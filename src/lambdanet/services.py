"""The opened adapters a command works with, built once from :class:`Settings`.

Usage::

    services = Services.open(Settings.from_env())
    services.ledger.list_runs()
    services.registry.load("itsacat@production")
    services.close()
"""

from __future__ import annotations

from dataclasses import dataclass

from lambdanet import adapters
from lambdanet.ports import Ledger, Notifier, ObjectStore
from lambdanet.registry import ModelRegistry
from lambdanet.settings import Settings


@dataclass
class Services:
    settings: Settings
    ledger: Ledger
    objects: ObjectStore
    notifier: Notifier
    registry: ModelRegistry

    @classmethod
    def open(cls, settings: Settings | None = None) -> Services:
        settings = settings or Settings.from_env()
        objects = adapters.open_objects(settings.objects_url)
        return cls(
            settings=settings,
            ledger=adapters.open_ledger(settings.ledger_url),
            objects=objects,
            notifier=adapters.open_notifier(settings.notifier_url),
            registry=ModelRegistry(objects),
        )

    def close(self) -> None:
        self.ledger.close()
