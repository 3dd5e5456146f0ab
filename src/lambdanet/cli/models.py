"""``lambdanet models …``: list, export, alias and promote registered model versions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from lambdanet.cli.common import open_services, print_json_lines
from lambdanet.cli.runs import open_read_only, print_table
from lambdanet.errors import ConfigError, ModelCorrupt
from lambdanet.registry import ModelRegistry

EXPORT_FORMATS = ("itsacat-h5",)


def _model_rows(registry: ModelRegistry) -> list[dict[str, Any]]:
    """One row per model: its versions, aliases, and the latest version's kind and metrics."""
    rows = []
    for name in registry.models():
        versions = registry.versions(name)
        aliases = registry.aliases(name)
        row: dict[str, Any] = {"name": name, "versions": versions, "aliases": aliases}
        try:
            latest = registry.metadata(name, versions[-1]) if versions else {}
        except ModelCorrupt as exc:  # one broken version does not hide the others
            row.update(kind="corrupt", metrics={}, error=str(exc))
        else:
            row.update(kind=latest.get("kind"), metrics=latest.get("metrics", {}))
        rows.append(row)
    return rows


def register(app: typer.Typer) -> None:
    models_app = typer.Typer(help="The model registry: versions and aliases.", no_args_is_help=True)
    app.add_typer(models_app, name="models")

    @models_app.command("list")
    def list_models(
        as_json: bool = typer.Option(False, "--json", help="One JSON object per model, one per line."),
    ) -> None:
        """Every model with its versions and aliases."""
        services = open_read_only()
        try:
            rows = _model_rows(services.registry)
        finally:
            services.close()
        if as_json:
            print_json_lines(rows)
            return
        def acc(r: dict[str, Any]) -> str:
            value = r["metrics"].get("test_accuracy")
            return "-" if value is None else f"{value:.3f}"

        print_table([
            ("model", True, lambda r: str(r["name"])),
            ("kind", False, lambda r: str(r["kind"])),
            ("versions", False, lambda r: ", ".join(map(str, r["versions"]))),
            ("aliases", False,
             lambda r: ", ".join(f"{a}→{v}" for a, v in sorted(r["aliases"].items())) or "-"),
            ("latest test acc", False, acc),
        ], rows)

    @models_app.command("export")
    def export(
        ref: str = typer.Argument(..., help="NAME[:VERSION|@ALIAS]"),
        out: Path = typer.Argument(..., help="The file to write, e.g. params.h5."),
        fmt: str = typer.Option("itsacat-h5", "--format", help="itsacat-h5 (params.h5 with W1..WL, b1..bL)."),
    ) -> None:
        """Export a model version, e.g. to itsacat's params.h5."""
        if fmt not in EXPORT_FORMATS:
            raise ConfigError(f"--format: unknown format '{fmt}' (allowed: {', '.join(EXPORT_FORMATS)})")
        services = open_read_only()
        try:
            path = services.registry.export_itsacat_h5(ref, out)
        finally:
            services.close()
        typer.echo(f"wrote {path}")

    @models_app.command("alias")
    def alias(
        name: str = typer.Argument(..., help="The model's name in the registry."),
        alias_name: str = typer.Argument(..., metavar="ALIAS", help="The alias to set, e.g. production."),
        version: int = typer.Argument(..., min=1, help="The version it points at from now on."),
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
        name: str = typer.Argument(..., help="The model's name in the registry."),
        source: str = typer.Option("staging", "--from", help="The alias whose version is promoted."),
        target: str = typer.Option("production", "--to", help="The alias moved to that version."),
    ) -> None:
        """Blue/green: move the --to alias to the version the --from alias points at (servers switch
        atomically)."""
        services = open_services()
        try:
            version = services.registry.promote(name, source, target)
        finally:
            services.close()
        typer.echo(f"{name}@{target} -> {version}")
