"""``lambdanet runs list`` and ``lambdanet runs show RUN``: read the ledger."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import typer
from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from lambdanet.cli.common import out_console, print_json_line
from lambdanet.ports.ledger import RunRecord
from lambdanet.services import Services
from lambdanet.settings import Settings

T = TypeVar("T")


def _when(ts: float | None) -> str:
    return "-" if not ts else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _fmt(v: object, spec: str = ".4f") -> str:
    return "-" if v is None else format(v, spec) if isinstance(v, float) else str(v)


def open_read_only() -> Services:
    """The services of a command that only reads: the ledger opened read-only (never written,
    nothing created: it works on a read-only home, and a missing ledger is "no runs yet")."""
    return Services.open(Settings.from_env(), read_only=True)


def table_console() -> Console:
    """Where tables go: the terminal at its width (COLUMNS where set); a pipe with no COLUMNS gets
    unlimited width, so ``lambdanet runs list | grep …`` sees whole rows."""
    if out_console.is_terminal or os.environ.get("COLUMNS"):
        return out_console
    return Console(highlight=False, width=100_000, soft_wrap=False)


def print_table(columns: Sequence[tuple[str, bool, Callable[[T], str]]], items: Sequence[T],
                optional: Sequence[str] = ()) -> None:
    """Print ``items`` as a table of ``columns`` ``(header, key, cell)``: ``key`` columns (ids,
    status) are never wrapped or cut; the others fold (no "…" anywhere). Where the console is too
    narrow for every column, the ``optional`` ones are left out, in that order, until it fits."""
    console = table_console()
    dropped: list[str] = []

    def build() -> Table:
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
        for header, key, cell in columns:
            if header in dropped:
                continue
            if key:
                table.add_column(header, no_wrap=True,
                                 min_width=max([len(header), *(len(cell(item)) for item in items)]))
            else:
                table.add_column(header, overflow="fold")
        for item in items:
            table.add_row(*(cell(item) for header, _, cell in columns if header not in dropped))
        return table

    table = build()
    unlimited = console.options.update_width(1_000_000)
    for header in optional:
        if Measurement.get(console, unlimited, table).maximum <= console.width:
            break
        dropped.append(header)
        table = build()
    console.print(table)


def epochs_done(run: RunRecord) -> object:
    """The epochs a run has done, as the engine records them (``metrics["epochs_done"]``;
    ``epochs_run`` in older rows)."""
    m = run.metrics
    return m.get("epochs_done", m.get("epochs_run"))


def register(app: typer.Typer) -> None:
    runs_app = typer.Typer(help="Inspect training runs recorded in the ledger.", no_args_is_help=True)
    app.add_typer(runs_app, name="runs")

    @runs_app.command("list")
    def list_runs(
        limit: int = typer.Option(50, min=1),
        as_json: bool = typer.Option(False, "--json", help="One JSON object on one stdout line."),
    ) -> None:
        """The newest runs: id, status, model, epochs, final cost, accuracies."""
        services = open_read_only()
        try:
            runs = services.ledger.list_runs(limit=limit)
        finally:
            services.close()
        if as_json:
            print_json_line({"runs": [dataclasses.asdict(r) for r in runs]})
            return

        def metric(key: str, spec: str = ".4f") -> Callable[[RunRecord], str]:
            return lambda r: _fmt(r.metrics.get(key), spec)

        print_table([
            ("run", True, lambda r: r.run_id),
            ("status", True, lambda r: r.status),
            ("kind", False, lambda r: r.kind),
            ("model", False, lambda r: r.model or "-"),
            ("epochs", False, lambda r: _fmt(epochs_done(r))),
            ("cost", False, metric("final_cost")),
            ("train acc", False, metric("train_accuracy", ".3f")),
            ("test acc", False, metric("test_accuracy", ".3f")),
            ("created", False, lambda r: _when(r.created_at)),
        ], runs, optional=("kind", "train acc", "created"))

    @runs_app.command("show")
    def show_run(
        run_id: str = typer.Argument(...),
        as_json: bool = typer.Option(False, "--json", help="One JSON object on one stdout line."),
    ) -> None:
        """A run's record and its per-epoch table."""
        services = open_read_only()
        try:
            run = services.ledger.get_run(run_id)
            epochs = services.ledger.epochs(run_id)
        finally:
            services.close()
        if as_json:
            print_json_line({"run": dataclasses.asdict(run), "epochs": [dataclasses.asdict(e) for e in epochs]})
            return
        out_console.print(f"[bold]{run.run_id}[/] {run.status} ({run.stop_reason or '-'}) kind={run.kind} "
                          f"model={run.model or '-'} data={run.data}")
        out_console.print(f"created {_when(run.created_at)}  started {_when(run.started_at)}  "
                          f"ended {_when(run.ended_at)}")
        if run.error:
            out_console.print(f"[red]error:[/] {run.error}")
        if run.metrics:
            out_console.print("  ".join(f"{k}={_fmt(v)}" for k, v in sorted(run.metrics.items())))
        print_table([
            ("epoch", True, lambda e: str(e.epoch)),
            ("cost", True, lambda e: f"{e.cost:.6f}"),
            ("learning rate", False, lambda e: f"{e.learning_rate:g}"),
            ("seconds", False, lambda e: f"{e.seconds:.4f}"),
            ("extra", False, lambda e: " ".join(f"{k}={_fmt(v)}" for k, v in sorted(e.extra.items()))),
        ], epochs)
