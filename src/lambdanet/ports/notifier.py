"""The Notifier port: tell a person how training goes (itsacat's SNS e-mails).

Usage::

    notifier = adapters.open_notifier("console://")      # or https://hook, sns://arn:aws:sns:…
    notifier.notify("Training update!", "Training update! Cost after epoch 100 = 0.6523",
                    run_id="r-1", event="progress", epoch=100, cost=0.6523)

``subject`` is a short title, ``message`` the full human text (itsacat's wording), ``fields``
structured data for machines (webhook JSON body, SNS message attributes). Delivery failures
after retries raise :class:`lambdanet.errors.NotifierUnavailable`; the driver logs them and
goes on — a lost e-mail must never fail a training run.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Notifier(Protocol):
    url: str

    def notify(self, subject: str, message: str, **fields: Any) -> None: ...
