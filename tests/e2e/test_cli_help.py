"""The CLI's help as a new user meets it: every command's ``--help`` renders (the whole Typer
command tree is walked), shows its help texts as written and plain placeholders; ``lambdanet``
alone prints the help and exits 0; ``--version`` comes from the installed package's metadata."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from lambdanet.cli.main import build_command, main
from tests.conftest import REPO

# what typer shows where no placeholder is set: <bool>, <int range>, <list[Path]>, and {data} in usage
RAW_PLACEHOLDER = re.compile(r"<[a-z][a-z _\[\]|,]*>|\{[a-z_]+\}|list\[", re.IGNORECASE)


def command_paths() -> Iterator[list[str]]:
    def walk(command: Any, path: list[str]) -> Iterator[list[str]]:
        yield path
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            yield from walk(sub, [*path, name])

    yield from walk(build_command(), [])


PATHS = list(command_paths())


def flat(text: str) -> str:
    """Help output with the panels' borders removed and whitespace collapsed."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def run_help(path: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("COLUMNS", "400")  # one line per row: the texts can be compared whole
    monkeypatch.setenv("NO_COLOR", "1")
    try:
        main([*path, "--help"])
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    assert code in (0, None), (path, err)
    assert err == "", (path, err)
    return out


def test_the_tree_is_walked_whole() -> None:
    names = {" ".join(p) for p in PATHS}
    assert {"", "train", "watch", "serve", "tune", "runs show", "models alias"} <= names
    assert len(PATHS) >= 18


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "lambdanet")
def test_every_help_renders_with_its_texts_and_plain_placeholders(
        path: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    out = run_help(path, capsys, monkeypatch)
    assert f"Usage: lambdanet {' '.join(path)}".rstrip() in out
    assert not RAW_PLACEHOLDER.findall(out), RAW_PLACEHOLDER.findall(out)
    # every help text is shown as written: a "[...]", "<...>" or "*" in one is text, not markup
    command: Any = build_command()
    for name in path:
        command = command.commands[name]
    shown = flat(out)
    texts = [command.help or "", *(getattr(p, "help", None) or "" for p in command.params)]
    for text in texts:
        assert " ".join(text.replace("\\[", "[").split()) in shown, text


def test_watch_help_shows_its_url_forms(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The case that crashed (rich's MarkupError on "[/prefix]")."""
    out = run_help(["watch"], capsys, monkeypatch)
    assert "s3://bucket/prefix" in out
    assert "Usage: lambdanet watch [OPTIONS] URL" in out


def test_placeholders_are_plain_words(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    out = run_help(["train"], capsys, monkeypatch)
    assert "Usage: lambdanet train [OPTIONS] DATA" in out
    rows = {line.split()[1]: line for line in out.splitlines() if line.startswith("│ --")}
    assert "PATH" in rows["--params"].split() and "INTEGER" in rows["--epochs"].split()
    assert "FLOAT" in rows["--learning-rate"].split()
    assert rows["--json"].split()[2] == "Print"  # a flag: no placeholder between the name and its help
    out = run_help(["report"], capsys, monkeypatch)
    assert "Usage: lambdanet report [OPTIONS] [RUN]..." in out
    out = run_help(["models", "alias"], capsys, monkeypatch)
    assert "Usage: lambdanet models alias [OPTIONS] NAME ALIAS VERSION" in out


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "COLUMNS": "100"}
    return subprocess.run([sys.executable, "-m", "lambdanet", *args], capture_output=True, text=True, env=env,
                          timeout=120, cwd=REPO)


def test_lambdanet_alone_prints_the_help_and_exits_0() -> None:
    res = cli()
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""  # was the help, then an empty "error: " line and exit 2
    assert "Usage: lambdanet [OPTIONS] COMMAND [ARGS]..." in res.stdout
    assert "train" in res.stdout and "serve" in res.stdout
    res = cli("runs")  # a group alone: its help, exit 0
    assert res.returncode == 0 and res.stderr == "" and "Usage: lambdanet runs" in res.stdout


def test_version_comes_from_the_package_metadata() -> None:
    res = cli("--version")
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"lambdanet {importlib.metadata.version('lambdanet')}\n"
