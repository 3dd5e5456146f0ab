"""``lambdanet runs list`` and ``lambdanet runs show RUN`` read the ledger; ``lambdanet runs
delete RUN`` and ``lambdanet gc`` remove finished runs' objects from the object store (the logic
is :mod:`lambdanet.engine.retention`)."""

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

from lambdanet.cli.common import err_console, out_console, print_json_line, print_json_lines, resolve_run
from lambdanet.engine import retention
from lambdanet.ports.ledger import RunRecord
from lambdanet.runview import retry_lines
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


def human_bytes(n: int) -> str:
    """``181234567`` -> ``"181,234,567 bytes (181.2 MB)"``."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= scale:
            return f"{n:,} bytes ({n / scale:.1f} {unit})"
    return f"{n:,} bytes"


def print_plan(plan: retention.Plan, *, applied: bool, as_json: bool) -> None:
    """What a clean-up removed (or, a dry run, would remove): with ``--json`` one object per line
    on stdout, one per object; else one line per run and snapshot. The total line goes to stderr
    with ``--json``."""
    verb = "removed" if applied else "would remove"
    if as_json:
        print_json_lines({"key": r.key, "bytes": r.bytes, "what": r.what, "run_id": r.run_id,
                          "status": plan.runs.get(r.run_id or ""), "removed": applied} for r in plan.removals)
    else:
        for run_id, status in plan.runs.items():
            mine = [r for r in plan.removals if r.run_id == run_id]
            out_console.print(f"{verb} run {run_id} ({status}): {len(mine)} objects, "
                              f"{human_bytes(sum(r.bytes for r in mine))}", soft_wrap=True, markup=False)
        for r in plan.snapshots():
            out_console.print(f"{verb} snapshot {r.key}: {human_bytes(r.bytes)} (no remaining run uses it)",
                              soft_wrap=True, markup=False)
    total = (f"{verb} {len(plan.removals)} objects, {human_bytes(plan.bytes)}; ledger rows and "
             f"registered model versions are kept")
    if not applied:
        total += ". Dry run: nothing was removed; add --yes to remove it"
    (err_console if as_json else out_console).print(total, soft_wrap=True, markup=False)


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
            print_json_lines(dataclasses.asdict(r) for r in runs)
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
        run_id: str = typer.Argument(..., metavar="RUN", help="A run id, or 'latest' (the newest run)."),
        as_json: bool = typer.Option(False, "--json", help="One JSON object on one stdout line."),
    ) -> None:
        """A run's record and its per-epoch table."""
        services = open_read_only()
        try:
            run_id = resolve_run(services, run_id)
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
        for line in retry_lines(run.metrics.get("retry_log")):  # one line per failed attempt, with its reason
            out_console.print(f"[yellow]retry:[/] {line}", markup=True, highlight=False)
        if run.metrics:
            out_console.print("  ".join(f"{k}={_fmt(v)}" for k, v in sorted(run.metrics.items())
                                        if k != "retry_log"))
        print_table([
            ("epoch", True, lambda e: str(e.epoch)),
            ("cost", True, lambda e: f"{e.cost:.6f}"),
            ("learning rate", False, lambda e: f"{e.learning_rate:g}"),
            ("seconds", False, lambda e: f"{e.seconds:.4f}"),
            ("extra", False, lambda e: " ".join(f"{k}={_fmt(v)}" for k, v in sorted(e.extra.items()))),
        ], epochs)

    @runs_app.command("delete")
    def delete_run(
        run_id: str = typer.Argument(..., help="A finished run (completed, failed or interrupted)."),
        yes: bool = typer.Option(False, "--yes", help="Remove; without it, only say what would go."),
        as_json: bool = typer.Option(False, "--json", help="One JSON object per removed object on stdout."),
    ) -> None:
        """Remove a finished run's objects: its checkpoints (in-round ones too) and data reference,
        and its data snapshot if no other run uses it. Dry run unless --yes. The run's ledger
        record (status, metrics, epochs) stays, so `runs list`, `report` and a registered model's
        run id keep working; the run can no longer be resumed. Registered model versions are never
        removed. A running run is refused."""
        services = open_read_only()
        try:
            plan = retention.plan_delete(services, run_id)
            if yes:
                plan = retention.apply(services.objects, plan)
        finally:
            services.close()
        print_plan(plan, applied=yes, as_json=as_json)

    @app.command("gc")
    def gc(
        yes: bool = typer.Option(False, "--yes", help="Remove; without it, only say what would go."),
        status: list[str] = typer.Option(list(retention.FINISHED), "--status",
                                         help="Runs with this status (repeatable; finished ones only)."),
        orphans: bool = typer.Option(False, "--orphans",
                                     help="Also run folders the ledger has no row for (a driver killed "
                                          "while starting a run), once older than an hour."),
        as_json: bool = typer.Option(False, "--json", help="One JSON object per removed object on stdout."),
    ) -> None:
        """Clean up the object store: the objects of every finished run (completed, failed,
        interrupted; --status to choose) and the data snapshots no remaining run uses. Dry run
        unless --yes. Never touches running runs, registered model versions or the ledger's rows
        (runs stay listed; their objects are gone, so they can no longer be resumed)."""
        services = open_read_only()
        try:
            plan = retention.plan_gc(services, status, orphans=orphans)
            if yes:
                plan = retention.apply(services.objects, plan)
        finally:
            services.close()
        print_plan(plan, applied=yes, as_json=as_json)
