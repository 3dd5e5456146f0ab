"""``lambdanet tune``: a hyperparameter search (Optuna) whose trials are lambdanet runs."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer

from lambdanet.cli.common import err_console, lithops_file, print_json_line
from lambdanet.cli.train import default_model_name
from lambdanet.config import itsacat_defaults, read_json_file
from lambdanet.engine.requests import DEFAULT_MAX_RETRIES
from lambdanet.errors import ConfigError, MissingExtra
from lambdanet.services import Services
from lambdanet.settings import Settings


def _fmt(v: Any, spec: str = ".4f") -> str:
    return "-" if v is None else format(v, spec)


def _print_event(ev: dict[str, Any]) -> None:
    kind, n = ev["event"], ev.get("trial")
    if kind == "study_started":
        what = "resumed" if ev.get("resumed") else "started"
        err_console.print(f"study {ev['study']} {what}: {ev['trials']} trials, {ev['parallel']} at a time "
                          f"(each driven by a {ev.get('trial_driver', 'thread')}, {ev.get('cpu_threads')} CPU "
                          f"threads per worker) on {ev['executor']}, {ev['epochs_per_round']} epochs per round, "
                          f"storage {ev['storage']}"
                          + (f"; {ev['finished_before']} finished before, continuing {ev['continuing']}"
                             if ev.get("resumed") else ""))
    elif kind == "trial_started":
        err_console.print(f"trial {n} started: run {ev['run_id']} {json.dumps(ev.get('params'))}")
    elif kind == "trial_continued":
        err_console.print(f"trial {n} continued: run {ev['run_id']}")
    elif kind == "trial_completed":
        if ev.get("recorded"):
            err_console.print(f"trial {n} completed (recorded before)")
        else:
            err_console.print(f"trial {n} completed at epoch {ev['epochs']}: validation cost "
                              f"{_fmt(ev.get('validation_cost'))}, accuracy "
                              f"{_fmt(ev.get('validation_accuracy'), '.3f')}, model {ev.get('model')}")
    elif kind == "trial_pruned":
        err_console.print(f"trial {n} pruned at epoch {ev.get('epoch', '?')}")
    elif kind == "trial_failed":
        err_console.print(f"trial {n} failed: {ev.get('reason', 'recorded before')}")
    elif kind == "trial_skipped":
        err_console.print(f"trial {n} skipped: {ev['reason']}")


def _summary(res: dict[str, Any]) -> str:
    return (f"study {res['study']}: {res['trials']} trials ({res['completed']} completed, {res['pruned']} pruned, "
            f"{res['failed']} failed) in {res['wall_seconds']:.1f} s; best trial {res['best_trial']} (run "
            f"{res['best_run']}): validation {res['objective']} {_fmt(res['best_value'])}, validation accuracy "
            f"{_fmt(res['validation_accuracy'], '.3f')}, test accuracy {_fmt(res['test_accuracy'], '.3f')}; model "
            f"{res['model']} aliased staging (promote with `lambdanet models promote`); worker-seconds "
            f"{res['worker_seconds']:.1f}, estimated AWS Lambda cost ${res['estimated_cost_usd']:.6f}\n"
            f"best configuration: {json.dumps(res['best_params'], sort_keys=True)}")


def register(app: typer.Typer) -> None:
    @app.command()
    def tune(
        data: str | None = typer.Argument(None, help="Data set (as for train); not needed with --resume."),
        params: Path | None = typer.Option(None, "--params", "-p",
                                           help="The base parameters.json (or CNN config); default itsacat's."),
        space: Path | None = typer.Option(None, "--space", help="space.json: config keys and their ranges."),
        trials: int = typer.Option(20, "--trials", "-n", help="Trials in the study (all states)."),
        parallel: int | None = typer.Option(None, "--parallel", "-P", help="Trials at once (default 1)."),
        workers: int = typer.Option(1, "--workers", "-k", min=1, help="Workers K of each trial."),
        strategy: str | None = typer.Option(None, help="neuron | data (default: neuron for MLPs, data for CNNs)."),
        executor: str | None = typer.Option(None, help="local | process | lithops."),
        store: str | None = typer.Option(None, help="Tensor store URL: memory:// | redis://host:port/db."),
        storage: str | None = typer.Option(
            None, "--storage", help="Study storage: 'file' (under LAMBDANET_HOME), redis://… or "
                                    "dynamodb://table?region=… (default: the --store URL when it is Redis, else "
                                    "file)."),
        pruner: str | None = typer.Option(None, help="median | asha | none (default median)."),
        study: str | None = typer.Option(None, "--study",
                                          help="Study name (default: tune-YYYYmmdd-HHMMSS, the start time in UTC)."),
        resume: bool = typer.Option(False, "--resume", help="Continue the study named by --study."),
        objective: str | None = typer.Option(
            None, help="balanced_accuracy (default) | accuracy (maximised, ties broken by cost) | cost "
                       "(minimised), on the validation split."),
        validation_fraction: float | None = typer.Option(None, "--validation-fraction",
                                                         help="Held-out share of the training set (default 0.2)."),
        seed: int | None = typer.Option(None, help="Seed of the sampler and of the validation split (default 0)."),
        epochs_per_round: int | None = typer.Option(None, "--epochs-per-round", min=1,
                                                    help="Epochs between pruning checks (default epochs/10)."),
        startup_trials: int | None = typer.Option(None, "--startup-trials", min=0,
                                                  help="Trials that finish before the median pruner prunes "
                                                       "(default 4)."),
        warmup_rounds: int | None = typer.Option(None, "--warmup-rounds", min=0,
                                                 help="Rounds of every trial the median pruner never prunes "
                                                      "(default 0)."),
        trial_driver: str | None = typer.Option(
            None, "--trial-driver", help="thread | process: what drives each of the P parallel trials (default "
                                         "thread; process for CPU-bound trials on the local executor)."),
        max_retries: int = typer.Option(DEFAULT_MAX_RETRIES, "--max-retries", min=0),
        model: str | None = typer.Option(None, "--model", help="Registry name (default: the data folder's name)."),
        lithops_config: Path | None = typer.Option(None, "--lithops-config", help="Lithops config file."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON result line last on stdout."),
    ) -> None:
        """Search hyperparameters: many trials (each a lambdanet run) in parallel, the weak ones pruned."""
        try:
            from lambdanet.tune.request import TuneRequest
            from lambdanet.tune.study import Tuner
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] in ("optuna", "sqlalchemy", "alembic"):
                raise MissingExtra("'lambdanet tune' needs Optuna: pip install 'lambdanet[tune]'") from None
            raise
        settings = Settings.from_env(store_url=store, executor=executor, lithops_config=lithops_file(lithops_config))
        study_storage = storage or (store if store and store.split("://")[0] in ("redis", "rediss") else "file")
        request = None
        if resume:
            if study is None:
                raise ConfigError("--resume needs --study NAME (the study to continue)")
        else:
            if data is None:
                raise ConfigError("missing DATA: the data set to tune on (or --study NAME --resume)")
            if space is None:
                raise ConfigError("missing --space: a space.json naming the keys to search and their ranges")
            base = read_json_file(params, "--params with a parameters.json") if params else itsacat_defaults()
            chosen: dict[str, Any] = {k: v for k, v in {"parallel": parallel, "startup_trials": startup_trials,
                                                        "warmup_rounds": warmup_rounds, "trial_driver": trial_driver,
                                                        "pruner": pruner, "objective": objective, "seed": seed,
                                                        "validation_fraction": validation_fraction}.items()
                                      if v is not None}  # the others keep TuneRequest's defaults, written there once
            request = TuneRequest(
                study=study or time.strftime("tune-%Y%m%d-%H%M%S", time.gmtime()), data=data, base=base,
                space=read_json_file(space, "--space with a space.json"), trials=trials, workers=workers,
                strategy=strategy, executor=settings.executor, store_url=settings.store_url,
                storage=study_storage, epochs_per_round=epochs_per_round, max_retries=max_retries,
                model_name=model or default_model_name(data), **chosen)
            request.check()  # a bad space or option is one line, before anything is opened or written
        services = Services.open(settings)
        try:
            if request is None:
                assert study is not None
                tuner = Tuner.resume(services, study, storage=study_storage, on_event=_print_event,
                                     parallel=parallel, store_url=store, executor=executor, trial_driver=trial_driver)
            else:
                tuner = Tuner(services, request, on_event=_print_event)
            result = tuner.run().to_json()
        finally:
            services.close()
        if as_json:
            print_json_line({k: v for k, v in result.items() if k != "trial_runs"})
        else:
            typer.echo(_summary(result))
