"""What the console notifier promises beyond the port: streams, one line, never raising."""

from __future__ import annotations

import io
import sys

import pytest

from lambdanet import adapters
from lambdanet.errors import URLError
from lambdanet.notifiers.console import ConsoleNotifier


def test_default_is_stderr_one_prefixed_line(capsys: pytest.CaptureFixture[str]) -> None:
    notifier = adapters.open_notifier("console://")
    notifier.notify("Training update!", "Training update!\nCost after epoch 100 = 0.6523")
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "[lambdanet] Training update! Cost after epoch 100 = 0.6523\n"


def test_stdout_stream(capsys: pytest.CaptureFixture[str]) -> None:
    ConsoleNotifier.from_url("console://stdout").notify("s", "hello")
    assert capsys.readouterr().out == "[lambdanet] hello\n"


def test_never_raises_on_a_broken_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = io.StringIO()
    broken.close()
    monkeypatch.setattr(sys, "stderr", broken)
    ConsoleNotifier().notify("s", "lost line")  # must not raise


def test_unknown_stream_is_refused() -> None:
    with pytest.raises(URLError, match="console://stdout"):
        ConsoleNotifier.from_url("console://printer")
