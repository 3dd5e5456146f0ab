"""Helpers shared by the command modules: opening services, printing JSON, and the rich progress
bar the driver reports to.

The CLI's conventions, for every command:

- ``--json`` is a flag: the command prints JSON on stdout instead of its human summary — one
  object (``train``, ``resume``, ``tune``, ``runs show``, ``report``), or one object per line for
  a list (``predict``, ``runs list``, ``models list``), so ``| jq`` and ``| head`` work.
- ``--out FILE`` is where a command writes a file (``report``'s HTML); nothing takes a file
  after ``--json``.
- Errors are one line on stderr and an exit code ≠ 0; human messages that are not the result go
  to stderr when stdout carries JSON.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from lambdanet.errors import ConfigError, UserInputError
from lambdanet.services import Services
from lambdanet.settings import Settings

err_console = Console(stderr=True, highlight=False)
out_console = Console(highlight=False)


def open_services(**overrides: str | None) -> Services:
    return Services.open(Settings.from_env(**overrides))


def lithops_file(path: Path | str | None) -> str | None:
    """``--lithops-config FILE`` as the absolute path the Lithops executor is opened with (None: not given)."""
    if path is None:
        return None
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"--lithops-config: {file}: no such file")
    return str(file.resolve())


def resolve_run(services: Services, run: str) -> str:
    """A run named on the command line: ``latest`` is the newest run in the ledger, anything else
    a run id (``runs show``, ``report``)."""
    if run == "latest":
        runs = services.ledger.list_runs(limit=1)
        if not runs:
            raise UserInputError("the ledger has no runs yet: train one with 'lambdanet train DATA'")
        return str(runs[0].run_id)
    return run


def json_line(payload: Any, allow_nan: bool = True) -> str:
    return json.dumps(payload, sort_keys=True, default=float, allow_nan=allow_nan) + "\n"


def print_json_line(payload: Any, allow_nan: bool = True) -> None:
    """The machine-readable result: one JSON object as the last line of stdout (``allow_nan=False``:
    a NaN is a bug of the caller's, not a token that strict parsers choke on)."""
    sys.stdout.write(json_line(payload, allow_nan))
    sys.stdout.flush()


def print_json_lines(items: Iterable[Any]) -> None:
    """A list as JSON lines: one object per stdout line (nothing at all for an empty list)."""
    sys.stdout.write("".join(json_line(item) for item in items))
    sys.stdout.flush()


class RichProgress:
    """A ProgressSink (see engine.driver) drawing epoch, cost and ETA on stderr.

    Draws only on a terminal; elsewhere (CI, pipes, --json) it stays silent so logs stay clean.
    """

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = err_console.is_terminal if enabled is None else enabled
        self._progress: Progress | None = None
        self._task: Any = None

    def start(self, total_epochs: int, done_epochs: int) -> None:
        if not self.enabled:
            return
        self._progress = Progress(
            TextColumn("[bold]training"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("cost {task.fields[cost]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=err_console,
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task("epochs", total=total_epochs, completed=done_epochs, cost="-")

    def update(self, epoch: int, cost: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=epoch, cost=f"{cost:.4f}")

    def finish(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
