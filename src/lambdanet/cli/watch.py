"""``lambdanet watch URL``: train on every new ``training_input/`` upload (``.h5``, ``.npz``, or a
``.zip`` / ``.tar`` / ``.tar.gz`` of class folders of photos) in a folder or bucket."""

from __future__ import annotations

import typer

from lambdanet import adapters
from lambdanet.cli.common import err_console, lithops_file, open_services, print_json_line
from lambdanet.engine.strategies import default_strategy, strategy_names
from lambdanet.errors import ConfigError
from lambdanet.functions.upload_trigger import TriggerResult, UploadTrigger


def _line(result: TriggerResult) -> str:
    if result.status == "completed":
        return (f"{result.key} ({result.version}): run {result.run_id} completed, model {result.model}, "
                f"wrote {', '.join(result.outputs)}")
    if result.status == "skipped":
        return f"{result.key} ({result.version}): already handled by run {result.run_id}"
    return f"{result.key} ({result.version}): run {result.run_id} failed: {result.error}"


def register(app: typer.Typer) -> None:
    @app.command()
    def watch(
        url: str = typer.Argument(..., help="A folder, s3://bucket or s3://bucket/prefix holding training_input/."),
        once: bool = typer.Option(False, "--once", help="Handle the uploads present now, then exit."),
        interval: float = typer.Option(10.0, "--interval", min=0.1, help="Seconds between scans."),
        workers: int = typer.Option(1, "--workers", "-k", min=1, help="Workers per run."),
        strategy: str = typer.Option(default_strategy("mlp"), help=" | ".join(strategy_names()) + "."),
        store: str | None = typer.Option(None, help="Tensor store URL: memory:// | redis://host:port/db."),
        executor: str | None = typer.Option(None, help="local | process | lithops."),
        model: str | None = typer.Option(None, "--model", help="Registry name (default: itsacat)."),
        epochs_per_round: int | None = typer.Option(None, "--epochs-per-round", min=1),
        lithops_config: str | None = typer.Option(None, "--lithops-config", help="Lithops config file."),
        as_json: bool = typer.Option(False, "--json", help="One JSON object per handled upload on stdout."),
    ) -> None:
        """Start one training run per new training_input/ upload — .h5, .npz, or a .zip/.tar/.tar.gz of
        class folders of photos — with training_input/parameters.json; write predict_input/params.h5
        and training_results/results.json beside them."""
        if strategy not in strategy_names():
            raise ConfigError(f"--strategy: unknown strategy '{strategy}' (allowed: {', '.join(strategy_names())})")
        watched = adapters.open_objects(url)
        services = open_services(store_url=store, executor=executor, lithops_config=lithops_file(lithops_config))
        trigger = UploadTrigger(services, watched, workers=workers, strategy=strategy, model_name=model,
                                epochs_per_round=epochs_per_round)
        results: list[TriggerResult] = []

        def show(result: TriggerResult) -> None:
            results.append(result)
            if as_json:  # one JSON object per upload, as it is handled (the CLI's list convention)
                print_json_line(result.to_json())
            else:
                typer.echo(_line(result))

        try:
            if once:
                for result in trigger.run_once():
                    show(result)
            else:
                err_console.print(f"watching {adapters.redact(watched.url)}/training_input/ every {interval:g} s "
                                  "(Ctrl-C to stop)")
                trigger.watch(interval, on_result=show)
        finally:
            services.close()
        if once and not results and not as_json:
            typer.echo("no new training_input/ upload (.h5, .npz, .zip, .tar, .tar.gz)")
        if any(r.status == "failed" for r in results):
            # SystemExit, not typer.Exit: cli.main runs click with standalone_mode=False, which
            # turns typer.Exit into a return value that main() does not pass on
            raise SystemExit(1)
