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

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lambdanet.errors import ConfigError


def seconds_env(name: str, low: float = 0.0, high: float = math.inf) -> float | None:
    """The number of seconds in ``$name`` (None when unset or empty), within ``low`` (exclusive
    when 0) … ``high``; anything else is one :class:`ConfigError` line naming the variable."""
    value = os.environ.get(name)
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a number of seconds") from None
    if not math.isfinite(number) or number <= 0 or number < low or number > high:
        bounds = f"between {low:g} and {high:g}" if math.isfinite(high) else "positive"
        raise ConfigError(f"{name}={value!r} must be {bounds} seconds")
    return number


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
