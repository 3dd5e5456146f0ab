"""``lambdanet plan``: predict a run's wall time, worker-seconds, bytes and dollars before it starts.

The model and its assumptions: :mod:`lambdanet.plan.model` and docs/plan.md. Bad input is one
ConfigError line (exit 2), as for ``train``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from lambdanet.cli.common import err_console, print_json_line
from lambdanet.errors import ConfigError
from lambdanet.plan.prices import MAX_MEMORY_MB, MIN_MEMORY_MB

TARGETS = ("local", "lambda")
ARCHS = ("x86_64", "arm64")
COMPRESSIONS = ("none", "fp16", "bf16")


def check_flags(workers: int, sync_every: int | None, compress: str | None, target: str, arch: str,
                memory: int, strategy: str | None) -> None:
    """One ConfigError line for the first bad flag (before any file is read)."""
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if sync_every is not None and sync_every < 1:
        raise ConfigError(f"--sync-every must be at least 1 (local steps between syncs), got {sync_every}")
    if compress is not None and compress not in COMPRESSIONS:
        raise ConfigError(f"--compress: unknown compression '{compress}' (allowed: {', '.join(COMPRESSIONS)})")
    if target not in TARGETS:
        raise ConfigError(f"--target: unknown target '{target}' (allowed: {', '.join(TARGETS)})")
    if arch not in ARCHS:
        raise ConfigError(f"--arch: unknown architecture '{arch}' (allowed: {', '.join(ARCHS)})")
    if not MIN_MEMORY_MB <= memory <= MAX_MEMORY_MB:
        raise ConfigError(f"--memory must be {MIN_MEMORY_MB} to {MAX_MEMORY_MB:,} MB (Lambda's range), got {memory}")
    if strategy == "neuron" and ((sync_every or 1) > 1 or (compress or "none") != "none"):
        raise ConfigError("--sync-every and --compress apply to --strategy data (neuron all-reduces every step)")


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} TB"  # pragma: no cover


def summary(payload: dict[str, Any]) -> str:
    work, shape, p = payload["workload"], payload["shape"], payload
    where = "this machine" if shape["target"] == "local" else (
        f"AWS Lambda {shape['memory_mb']} MB {shape['arch']} (Lithops + Redis)")
    b = p["breakdown"]
    lines = [
        f"plan: {work['model']} ({work['params']:,} parameters), {work['train_samples']} samples x "
        f"{work['epochs']} epochs, K = {shape['workers']} [{shape['strategy']}, sync every {shape['sync_every']}, "
        f"compress {shape['compress']}] on {where}",
        f"wall {p['wall_seconds']:.1f} s, worker-seconds {p['worker_seconds']:.1f}, store traffic "
        f"{_size(p['bytes'])} ({p['syncs']:,} syncs of {_size(p['bytes_per_sync'])}), ${p['usd']:.6f}",
        f"  start {b['start']:.2f} s + data {b['data']:.2f} s + compute {b['compute']:.2f} s + sync {b['sync']:.2f} s "
        f"+ finish {b['finish']:.2f} s; {p['rounds']} round(s)",
    ]
    lines += [f"  uncertain: {u}" for u in p["uncertain"]]
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    @app.command()
    def plan(
        data: str = typer.Argument(..., help="Data set: itsacat .h5, .npz, or a folder of class folders."),
        params: Path | None = typer.Option(None, "--params", "-p", help="parameters.json (itsacat or CNN)."),
        workers: int = typer.Option(1, "--workers", "-k", help="Number of workers K."),
        strategy: str | None = typer.Option(None, help="data | neuron (default: neuron for MLPs, data for CNNs)."),
        sync_every: int | None = typer.Option(
            None, "--sync-every", help="data strategy: local steps between syncs H (default: the config's, else 1)."),
        compress: str | None = typer.Option(
            None, "--compress", help="none | fp16 | bf16: the syncs' payloads (default: the config's, else none)."),
        target: str = typer.Option(..., "--target", help="local (this machine) | lambda (AWS Lambda, Lithops, Redis)."),
        memory: int | None = typer.Option(None, "--memory", help="Lambda memory per worker in MB, 128 to 10240 "
                                          "(default 2048; sets the vCPUs on --target lambda and the price)."),
        arch: str = typer.Option("x86_64", "--arch", help="x86_64 | arm64 (the Lambda price)."),
        epochs: int | None = typer.Option(None, help="Override 'epochs'."),
        batch_size: int | None = typer.Option(None, "--batch-size", help="Override 'batch_size'."),
        epochs_per_round: int | None = typer.Option(None, "--epochs-per-round"),
        store: str | None = typer.Option(None, help="--target local: the tensor store URL to measure (memory:// | "
                                         "redis://host:port/db)."),
        executor: str | None = typer.Option(None, help="--target local: local | process | lithops."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object: the prediction, its inputs, "
                                     "assumptions and what is uncertain."),
    ) -> None:
        """Predict the wall time, worker-seconds, bytes moved and dollars of a training run before it starts.

        The cost model is explicit (docs: the plan page): compute per sample is measured by a few real training
        steps of the config on this CPU (cached under LAMBDANET_HOME), syncs against the store given; Lambda's
        figures are AWS's published ones."""
        from lambdanet.cli.train import build_config, check_strategy
        from lambdanet.engine.accounting import default_memory_mb
        from lambdanet.engine.strategies import default_strategy
        from lambdanet.plan.calibrate import calibrate, describe
        from lambdanet.plan.model import RunShape, predict
        from lambdanet.settings import Settings

        memory_mb = default_memory_mb() if memory is None else memory
        check_flags(workers, sync_every, compress, target, arch, memory_mb, strategy)
        config = build_config(params, {"epochs": epochs, "batch_size": batch_size})
        strategy = check_strategy(config.kind, strategy or default_strategy(config.kind))
        check_flags(workers, sync_every, compress, target, arch, memory_mb, strategy)
        h = sync_every if sync_every is not None else int(getattr(config, "sync_every", 1))
        c = compress if compress is not None else str(getattr(config, "compress", "none"))
        settings = Settings.from_env(store_url=store, executor=executor)
        scheme = settings.executor.split(":", 1)[0]
        if scheme not in ("local", "process", "lithops"):
            raise ConfigError(f"--executor: unknown executor '{settings.executor}' (allowed: local, process, lithops)")
        shape = RunShape(workers=workers, strategy=strategy, sync_every=h, compress=c,  # type: ignore[arg-type]
                         target=target, executor=scheme if target == "local" else "lithops",  # type: ignore[arg-type]
                         memory_mb=memory_mb, arch=arch)  # type: ignore[arg-type]
        work, dataset = describe(data, config, strategy, workers, epochs_per_round)
        measured = calibrate(data, config, dataset, work, shape, settings.store_url, settings.executor,
                             progress=lambda line: err_console.print(line))
        prediction = predict(work, shape, measured)
        payload = {**prediction.model_dump(), "workload": work.model_dump(), "shape": shape.model_dump()}
        if as_json:
            print_json_line(payload, allow_nan=False)
        else:
            typer.echo(summary(payload))
