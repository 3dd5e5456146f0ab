"""The webhook notifier: POST each notification as JSON to an ``https://`` (or ``http://``) URL.

Usage::

    notifier = WebhookNotifier.from_url("https://hooks.example.com/lambdanet")
    notifier.notify("Training update!", "Training update! Cost after epoch 100 = 0.6523",
                    run_id="r-1", event="progress", epoch=100, cost=0.6523)

Body (``Content-Type: application/json``)::

    {"subject": "Training update!", "message": "Training update! Cost after epoch 100 = 0.6523",
     "fields": {"run_id": "r-1", "event": "progress", "epoch": 100, "cost": 0.6523},
     "sent_at": 1700000000.0}

Delivery is retried with exponential backoff (``backoff_s``, doubled each time, capped at
``max_backoff_s``) on connection errors, timeouts, HTTP 408/425/429 and 5xx, up to ``attempts``
tries; any other 4xx is final. After the last try :class:`NotifierUnavailable` is raised (the
driver logs it and goes on). ``url`` (for logs) hides any password in the URL. Uses only the
standard library (``urllib``).
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from typing import Any, Self
from urllib.parse import urlsplit

from lambdanet.adapters import redact
from lambdanet.errors import NotifierUnavailable, URLError

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def _jsonable(value: Any) -> Any:
    """Fields as strict JSON (NaN/inf become strings, numpy scalars plain numbers)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


class WebhookNotifier:
    """A :class:`lambdanet.ports.Notifier` that POSTs JSON to a URL, retried with backoff."""

    def __init__(self, url: str, *, attempts: int = 5, backoff_s: float = 0.5, max_backoff_s: float = 8.0,
                 timeout_s: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise URLError(f"not a webhook URL: {redact(url)!r} (use https://host/path)")
        self._target = url
        self.url = redact(url)
        self.attempts = max(1, int(attempts))
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.timeout_s = float(timeout_s)
        self.deliveries = 0  # requests sent (including retries), for tests and reports

    @classmethod
    def from_url(cls, url: str) -> Self:
        return cls(url)

    def _post(self, body: bytes) -> tuple[int | None, str]:
        """One POST; (status, reason). status None means the request never got an answer."""
        request = urllib.request.Request(
            self._target, data=body, method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "lambdanet-webhook/1"},
        )
        self.deliveries += 1
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                response.read()
                return int(response.status), "ok"
        except urllib.error.HTTPError as exc:
            return int(exc.code), f"HTTP {exc.code}"
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            return None, " ".join(str(reason).split()) or type(exc).__name__

    def notify(self, subject: str, message: str, **fields: Any) -> None:
        body = json.dumps({"subject": subject, "message": message, "fields": _jsonable(fields),
                           "sent_at": time.time()}, allow_nan=False).encode()
        delay = self.backoff_s
        reason = "no attempt made"
        for attempt in range(1, self.attempts + 1):
            status, reason = self._post(body)
            if status is not None and 200 <= status < 300:
                return
            if status is not None and status not in RETRY_STATUSES:
                break  # a final client error: retrying cannot help
            if attempt < self.attempts:
                time.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)
        raise NotifierUnavailable(
            f"webhook {self.url} did not accept the notification after {attempt} attempt(s): {reason}"
        )

    def __repr__(self) -> str:
        return f"WebhookNotifier({self.url!r})"
