"""Types shared by the contract-suite conftest and the ``factories_*.py`` plugins beside it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lambdanet.ports import Notifier


@dataclass(frozen=True)
class Factory:
    make: Callable[[pytest.FixtureRequest, Path], Any]
    marks: tuple[Any, ...] = ()


@dataclass
class NotifierHarness:
    notifier: Notifier
    received: Callable[[], list[str]]
    extra: dict[str, Any] = field(default_factory=dict)
