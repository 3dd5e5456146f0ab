"""``lambdanet models …``: list, export, alias and promote registered model versions."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from lambdanet.cli.common import open_services, out_console, print_json_line
from lambdanet.errors import ConfigError

EXPORT_FORMATS = ("itsacat-h5",)


def register(app: typer.Typer) -> None:
    models_app = typer.Typer(help="The model registry: versions and aliases.", no_args_is_help=True)
    app.add_typer(models_app, name="models")

    @models_app.command("list")
    def list_models(as_json: bool = typer.Option(False, "--json")) -> None:
        """Every model with its versions and aliases."""
        services = open_services()
        registry = services.registry
        rows = []
        for name in registry.models():
            versions = registry.versions(name)
            aliases = registry.aliases(name)
            latest = registry.metadata(name, versions[-1]) if versions else {}
            rows.append({"name": name, "versions": versions, "aliases": aliases,
                         "kind": latest.get("kind"), "metrics": latest.get("metrics", {})})
        services.close()
        if as_json:
            print_json_line({"models": rows})
            return
        table = Table("model", "kind", "versions", "aliases", "latest test acc")
        for r in rows:
            acc = r["metrics"].get("test_accuracy")
            table.add_row(r["name"], str(r["kind"]), ", ".join(map(str, r["versions"])),
                          ", ".join(f"{a}→{v}" for a, v in sorted(r["aliases"].items())) or "-",
                          "-" if acc is None else f"{acc:.3f}")
        out_console.print(table)

    @models_app.command("export")
    def export(
        ref: str = typer.Argument(..., help="NAME[:VERSION|@ALIAS]"),
        out: Path = typer.Argument(..., help="Output file."),
        fmt: str = typer.Option("itsacat-h5", "--format", help="itsacat-h5 (params.h5 with W1..WL, b1..bL)."),
    ) -> None:
        """Export a model version, e.g. to itsacat's params.h5."""
        if fmt not in EXPORT_FORMATS:
            raise ConfigError(f"--format: unknown format '{fmt}' (allowed: {', '.join(EXPORT_FORMATS)})")
        services = open_services()
        try:
            path = services.registry.export_itsacat_h5(ref, out)
        finally:
            services.close()
        typer.echo(f"wrote {path}")

    @models_app.command("alias")
    def alias(
        name: str = typer.Argument(...),
        alias_name: str = typer.Argument(..., metavar="ALIAS"),
        version: int = typer.Argument(..., min=1),
    ) -> None:
        """Point ALIAS (production, staging, any name) of NAME at VERSION (also: rollback)."""
        services = open_services()
        try:
            services.registry.set_alias(name, alias_name, version)
        finally:
            services.close()
        typer.echo(f"{name}@{alias_name} -> {version}")

    @models_app.command("promote")
    def promote(
        name: str = typer.Argument(...),
        source: str = typer.Option("staging", "--from"),
        target: str = typer.Option("production", "--to"),
    ) -> None:
        """Blue/green: move TARGET to the version SOURCE points at (servers switch atomically)."""
        services = open_services()
        try:
            version = services.registry.promote(name, source, target)
        finally:
            services.close()
        typer.echo(f"{name}@{target} -> {version}")
