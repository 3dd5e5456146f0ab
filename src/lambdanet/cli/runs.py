"""``lambdanet runs list`` and ``lambdanet runs show RUN``: read the ledger."""

from __future__ import annotations

import dataclasses
import time

import typer
from rich.table import Table

from lambdanet.cli.common import open_services, out_console, print_json_line


def _when(ts: float | None) -> str:
    return "-" if not ts else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _fmt(v: object, spec: str = ".4f") -> str:
    return "-" if v is None else format(v, spec) if isinstance(v, float) else str(v)


def register(app: typer.Typer) -> None:
    runs_app = typer.Typer(help="Inspect training runs recorded in the ledger.", no_args_is_help=True)
    app.add_typer(runs_app, name="runs")

    @runs_app.command("list")
    def list_runs(
        limit: int = typer.Option(50, min=1),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """The newest runs: id, status, model, epochs, final cost, accuracies."""
        services = open_services()
        try:
            runs = services.ledger.list_runs(limit=limit)
        finally:
            services.close()
        if as_json:
            print_json_line({"runs": [dataclasses.asdict(r) for r in runs]})
            return
        table = Table("run", "status", "kind", "model", "epochs", "final cost", "train acc", "test acc",
                      "created")
        for r in runs:
            m = r.metrics
            table.add_row(r.run_id, r.status, r.kind, r.model or "-", _fmt(m.get("epochs_run")),
                          _fmt(m.get("final_cost")), _fmt(m.get("train_accuracy"), ".3f"),
                          _fmt(m.get("test_accuracy"), ".3f"), _when(r.created_at))
        out_console.print(table)

    @runs_app.command("show")
    def show_run(
        run_id: str = typer.Argument(...),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """A run's record and its per-epoch table."""
        services = open_services()
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
        table = Table("epoch", "cost", "learning rate", "seconds", "extra")
        for e in epochs:
            extra = " ".join(f"{k}={_fmt(v)}" for k, v in sorted(e.extra.items()))
            table.add_row(str(e.epoch), f"{e.cost:.6f}", f"{e.learning_rate:g}", f"{e.seconds:.4f}", extra)
        out_console.print(table)
