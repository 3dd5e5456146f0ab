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


class _BrokenPipe(io.StringIO):
    """A stream whose reader went away: every write raises, as stderr piped into a closed `head`."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    def write(self, s: str) -> int:
        self.attempts += 1
        raise BrokenPipeError(32, "Broken pipe")


def test_never_raises_on_a_broken_stream_and_writes_again_once_it_is_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    notifier = ConsoleNotifier()
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr(sys, "stderr", closed)
    assert notifier.notify("s", "lost line") is None  # a closed stream: no exception
    broken = _BrokenPipe()
    monkeypatch.setattr(sys, "stderr", broken)
    notifier.notify("s", "lost too")  # a write that raises: no exception
    assert broken.attempts == 1  # it did try the stream of the moment
    working = io.StringIO()
    monkeypatch.setattr(sys, "stderr", working)
    notifier.notify("s", "back")
    assert working.getvalue() == "[lambdanet] back\n"  # the same notifier still works


def test_unknown_stream_is_refused() -> None:
    with pytest.raises(URLError, match="console://stdout"):
        ConsoleNotifier.from_url("console://printer")
