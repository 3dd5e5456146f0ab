"""The console notifier: itsacat's e-mails printed as one line each (the embedded default).

Usage::

    notifier = ConsoleNotifier.from_url("console://")          # stderr (default)
    notifier = ConsoleNotifier.from_url("console://stdout")
    notifier.notify("Training update!", "Training update! Cost after epoch 100 = 0.6523")
    # stderr: [lambdanet] Training update! Cost after epoch 100 = 0.6523

It never raises: a notification must never fail a training run.
"""

from __future__ import annotations

import sys
from typing import Any, Self, TextIO

from lambdanet.adapters import parse_url
from lambdanet.errors import URLError

PREFIX = "[lambdanet] "


class ConsoleNotifier:
    """A :class:`lambdanet.ports.Notifier` that prints ``message`` to stderr (or stdout)."""

    def __init__(self, stream: str = "stderr") -> None:
        if stream not in ("stderr", "stdout"):
            raise URLError(f"unknown console stream {stream!r} (use console://stderr or console://stdout)")
        self.stream = stream
        self.url = f"console://{stream}" if stream != "stderr" else "console://"

    @classmethod
    def from_url(cls, url: str) -> Self:
        parts = parse_url(url, schemes=("console",), name="console notifier", usage="console:// or console://stdout")
        target = (parts.netloc or parts.path.strip("/") or "stderr").lower()
        return cls(target)

    def _out(self) -> TextIO:
        # looked up at call time so redirected/captured streams are honoured
        return sys.stdout if self.stream == "stdout" else sys.stderr

    def notify(self, subject: str, message: str, **fields: Any) -> None:
        try:
            text = " ".join(str(message or subject).split())
            out = self._out()
            out.write(f"{PREFIX}{text}\n")
            out.flush()
        except Exception:  # a lost console line must never fail a run
            pass

    def __repr__(self) -> str:
        return f"ConsoleNotifier({self.stream!r})"
