"""Where lambdanet keeps things, and which adapters it uses by default.

Everything lives under a home folder, ``$LAMBDANET_HOME`` (default ``~/.lambdanet``)::

    ~/.lambdanet/ledger.db      SQLite ledger (runs, epochs, worker calls)
    ~/.lambdanet/objects/       object store: runs/<id>/… checkpoints, models/<name>/… registry

Each default can be replaced by a URL through an environment variable or a CLI option:
``LAMBDANET_LEDGER`` (``sqlite:///…`` | ``dynamodb://table?region=…``), ``LAMBDANET_OBJECTS``
(a folder | ``s3://bucket/prefix``), ``LAMBDANET_NOTIFIER`` (``console://`` | ``https://…`` |
``sns://arn``), ``LAMBDANET_STORE`` (``memory://`` | ``redis://host:port/db``) and
``LAMBDANET_EXECUTOR`` (``local`` | ``process`` | ``lithops``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Settings:
    home: Path
    ledger_url: str
    objects_url: str
    notifier_url: str
    store_url: str
    executor: str

    @classmethod
    def from_env(cls, **overrides: str | None) -> Settings:
        home = Path(os.environ.get("LAMBDANET_HOME") or Path.home() / ".lambdanet").expanduser()
        settings = cls(
            home=home,
            ledger_url=os.environ.get("LAMBDANET_LEDGER") or f"sqlite:///{home / 'ledger.db'}",
            objects_url=os.environ.get("LAMBDANET_OBJECTS") or str(home / "objects"),
            notifier_url=os.environ.get("LAMBDANET_NOTIFIER") or "console://",
            store_url=os.environ.get("LAMBDANET_STORE") or "memory://",
            executor=os.environ.get("LAMBDANET_EXECUTOR") or "local",
        )
        given: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
        return replace(settings, **given) if given else settings
