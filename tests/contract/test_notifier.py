"""The Notifier contract: every adapter in FACTORIES["notifier"] must pass these."""

from __future__ import annotations

from lambdanet.ports import Notifier
from tests.contract.harness import NotifierHarness


def test_is_a_notifier(notifier: NotifierHarness) -> None:
    assert isinstance(notifier.notifier, Notifier)
    assert isinstance(notifier.notifier.url, str) and notifier.notifier.url


def test_delivers_itsacat_messages_in_order(notifier: NotifierHarness) -> None:
    messages = [
        "Training update! Cost after epoch 100 = 0.6523",
        "Training update! Cost after epoch 200 = 0.5100",
        "Training Completed Successfully! Final Cost = 0.0929",
    ]
    for i, msg in enumerate(messages):
        notifier.notifier.notify(msg.split("!")[0] + "!", msg, run_id="r-1", event="progress",
                                 epoch=100 * (i + 1), cost=0.5)
    assert notifier.received()[-3:] == messages


def test_unicode_and_structured_fields(notifier: NotifierHarness) -> None:
    msg = "Run r-2 failed: worker 1 → exit code -9 (café)"
    notifier.notifier.notify("Training failed", msg, run_id="r-2", event="failed", error="exit code -9",
                             details={"round": 3, "attempts": [1, 2]})
    assert notifier.received()[-1] == msg
