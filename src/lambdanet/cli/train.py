"""``lambdanet train`` and ``lambdanet resume``: run a training job through the engine."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import typer

from lambdanet.cli.common import RichProgress, err_console, lithops_file, open_services, print_json_line
from lambdanet.config import TrainConfig, itsacat_defaults, load_config, parse_config
from lambdanet.engine.requests import RunSettings, TrainRequest
from lambdanet.engine.strategies import default_strategy, strategy_names, strategy_path
from lambdanet.errors import ConfigError

DEFAULTS = RunSettings()  # the engine's defaults, written once in lambdanet.engine.requests

def check_strategy(kind: str, strategy: str) -> str:
    """``strategy`` if the registry has it for ``kind``; one ConfigError line naming the valid ones."""
    try:
        strategy_path(kind, strategy)
    except ConfigError as exc:
        raise ConfigError(f"--strategy: {exc}") from None
    return strategy


def default_model_name(data: str) -> str:
    """A model name from the data path: its folder for files (``…/catvnoncat/datasets.h5`` →
    ``catvnoncat``), its own name for folders."""
    p = Path(data.rstrip("/"))
    base = p.name if p.is_dir() else (p.parent.name or p.stem)
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", base).strip("-.") or "model"
    return name[:64]


def build_config(params: Path | None, overrides: dict[str, Any]) -> TrainConfig:
    if params is not None:
        return load_config(params, overrides)
    data = {**itsacat_defaults(), **{k: v for k, v in overrides.items() if v is not None}}
    return parse_config(data, source="itsacat defaults")


def _summary(result: dict[str, Any]) -> str:
    def num(v: Any, fmt: str = ".3f") -> str:
        return "-" if v is None else format(v, fmt)

    return (
        f"run {result['run_id']} {result['status']} ({result.get('stop_reason')}) after "
        f"{result['epochs_run']} epochs: final cost {num(result.get('final_cost'), '.6g')}, "
        f"train accuracy {num(result.get('train_accuracy'))}, "
        f"test accuracy {num(result.get('test_accuracy'))}, {num(result.get('wall_seconds'), '.1f')} s, "
        f"{result.get('workers')} worker(s) [{result.get('strategy')}], model {result.get('model')}"
    )


def _finish(result: Any, as_json: bool) -> None:
    payload = result.to_json()
    if as_json:
        print_json_line(payload)
    else:
        typer.echo(_summary(payload))
        if payload.get("estimated_cost_usd") is not None:
            typer.echo(
                f"worker calls {payload.get('worker_calls')}, worker-seconds "
                f"{payload.get('worker_seconds', 0):.1f}, store bytes {payload.get('store_bytes')}, "
                f"estimated AWS Lambda cost ${payload['estimated_cost_usd']:.6f}"
            )
    if payload.get("status") not in ("completed",):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    @app.command()
    def train(
        data: str = typer.Argument(..., help="Data set: itsacat .h5, .npz, or a folder of class folders."),
        params: Path | None = typer.Option(None, "--params", "-p", help="parameters.json (itsacat or CNN)."),
        epochs: int | None = typer.Option(None, help="Override 'epochs'."),
        batch_size: int | None = typer.Option(None, "--batch-size", help="Override 'batch_size'."),
        learning_rate: float | None = typer.Option(None, "--learning-rate", help="Override 'learning_rate'."),
        seed: int | None = typer.Option(None, help="Override 'seed'."),
        model: str | None = typer.Option(None, "--model", help="Registry name (default: the data folder's name)."),
        workers: int = typer.Option(DEFAULTS.workers, "--workers", "-k", help="Number of workers K."),
        strategy: str | None = typer.Option(
            None, help=f"{' | '.join(strategy_names())} (neuron: model parallel, data: data parallel); "
                       "default neuron for MLPs, data for CNNs."),
        store: str | None = typer.Option(None, help="Tensor store URL: memory:// | redis://host:port/db."),
        executor: str | None = typer.Option(None, help="local | process | lithops."),
        epochs_per_round: int | None = typer.Option(None, "--epochs-per-round"),
        round_seconds: float = typer.Option(DEFAULTS.round_seconds, "--round-seconds",
                                            help="Seconds budget per round."),
        max_retries: int = typer.Option(DEFAULTS.max_retries, "--max-retries",
                                        help="Retries of a failed round before the run fails."),
        checkpoint_seconds: float = typer.Option(
            DEFAULTS.checkpoint_seconds, "--checkpoint-seconds",
            help="Workers checkpoint inside a round this often, so a failed worker costs at most about "
                 "this much work."),
        cpu_threads: int | None = typer.Option(
            None, "--cpu-threads",
            help="BLAS/OpenMP/torch threads per worker (default: the machine's cores // workers on the local "
                 "and process executors; thread variables you set win)."),
        start_deadline: float = typer.Option(
            DEFAULTS.start_deadline_s, "--start-deadline",
            help="Seconds a worker call may take to start (cold starts) before its attempt is retried."),
        liveness_deadline: float = typer.Option(
            DEFAULTS.liveness_deadline_s, "--liveness-deadline",
            help="Seconds without a heartbeat after which a started worker counts as hung and its attempt is "
                 "retried."),
        lithops_config: Path | None = typer.Option(None, "--lithops-config", help="Lithops config file (AWS Lambda…)."),
        device: str | None = typer.Option(
            None, help="cpu | cuda | cuda:N for CNN configs (default: the config's 'device', itself cpu by default)."),
        sync_every: str | None = typer.Option(
            None, "--sync-every", metavar="H",
            help="Override 'sync_every': data strategy, local steps between parameter averages (1: every step)."),
        compress: str | None = typer.Option(
            None, "--compress", metavar="none|fp16|bf16",
            help="Override 'compress': data strategy, 16-bit collective payloads with error feedback."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON result line last on stdout."),
    ) -> None:
        """Train a model on DATA and register it (embedded defaults: no services needed)."""
        from lambdanet.engine.driver import Driver

        if strategy is not None and strategy not in strategy_names():  # before reading any file
            raise ConfigError(f"--strategy: unknown strategy '{strategy}' (allowed: {', '.join(strategy_names())})")
        # every engine setting checked once, here, before any file is read
        settings = RunSettings(workers=workers, epochs_per_round=epochs_per_round, round_seconds=round_seconds,
                               max_retries=max_retries, checkpoint_seconds=checkpoint_seconds, cpu_threads=cpu_threads,
                               start_deadline_s=start_deadline, liveness_deadline_s=liveness_deadline, device=device)
        overrides = {"epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate, "seed": seed,
                     # text, so that a bad value is the config's one line ("sync_every: must be …")
                     "sync_every": int(sync_every) if sync_every and re.fullmatch(r"-?[0-9]+", sync_every)
                     else sync_every,
                     "compress": compress}
        config = build_config(params, overrides)
        strategy = check_strategy(config.kind, strategy or default_strategy(config.kind))
        # the request applies --device to a CNN config (it reaches every worker and resumes)
        request = TrainRequest.of(settings.replace(strategy=strategy), data=data, config=config,
                                  model_name=model or default_model_name(data))
        # the Lithops config is an executor option (an explicit config, never ~/.lithops)
        services = open_services(store_url=store, executor=executor, lithops_config=lithops_file(lithops_config))
        request = request.replace(store_url=services.settings.store_url, executor=services.settings.executor)
        try:
            result = Driver(services, progress=RichProgress(None if not as_json else False)).train(request)
        finally:
            services.close()
        _finish(result, as_json)

    @app.command()
    def resume(
        run_id: str = typer.Argument(..., help="The run to continue from its last checkpoint."),
        store: str | None = typer.Option(
            None, help="Tensor store URL, if it differs from the run's or holds a password (the ledger keeps "
                       "URLs redacted)."),
        executor: str | None = typer.Option(None, help="local | process | lithops (default: the run's)."),
        wait: bool = typer.Option(
            True, "--wait/--no-wait",
            help="When another driver holds the run's lease, wait for it to lapse (at most the lease's time "
                 "left, 60 s by default) and take the run over; --no-wait exits at once."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON result line last on stdout."),
    ) -> None:
        """Continue a run whose driver died or was interrupted, from its last checkpoint.

        If another driver holds the run's lease, one line says which and how long at most this
        waits: a driver that stopped renewing it (killed, on any host) is taken over once its lease
        lapses; a live one (seen renewing) ends the command at once (exit 4), the run untouched."""
        from lambdanet.engine.driver import Driver
        from lambdanet.engine.session import wait_for_lease
        from lambdanet.errors import LeaseHeld

        services = open_services()
        try:
            driver = Driver(services, progress=RichProgress(None if not as_json else False))
            try:
                result = driver.resume(run_id, store_url=store, executor=executor)
            except LeaseHeld:
                if not wait:
                    raise
                wait_for_lease(services.ledger, run_id, lambda line: print(line, file=sys.stderr, flush=True))
                result = driver.resume(run_id, store_url=store, executor=executor)
        finally:
            services.close()
        err_console.print(f"resumed {run_id}")
        _finish(result, as_json)
