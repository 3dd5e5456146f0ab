"""``lambdanet report RUN`` (one self-contained HTML file), ``lambdanet report --compare RUN RUN…`` and
``lambdanet report --study NAME`` (a ``lambdanet tune`` study).

The CLI's convention (see :mod:`lambdanet.cli.common`): ``--out FILE`` is the HTML file,
``--json`` prints the report's metrics as one JSON object on stdout. Without ``--json`` the HTML is
always written (default ``report.html``, ``compare.html``, ``study.html``); with ``--json`` only
where ``--out`` asks for it, so ``lambdanet report latest --json | jq`` leaves no file behind and
``lambdanet report RUN --json --out report.html > metrics.json`` writes both.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from lambdanet.cli.common import print_json_line, resolve_run
from lambdanet.cli.runs import open_read_only
from lambdanet.errors import UserInputError


def _write(path: Path, text: str, what: str) -> None:
    if str(path) == "-":
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise UserInputError(f"cannot write the {what} to {path}: {exc.strerror or exc}") from None


def _check_targets(runs: list[str], out: Path | None, as_json: bool) -> None:
    """A file name where a RUN belongs is the old ``--json FILE`` form: say what replaced it."""
    for run in runs:
        if run == "-" or run.endswith(".json"):
            raise UserInputError(f"'{run}' is not a run id: --json is a flag that prints the metrics on stdout "
                                 f"(save them with '--json > {'metrics.json' if run == '-' else run}'); "
                                 "--out FILE writes the HTML")
    if as_json and out is not None and str(out) == "-":
        raise UserInputError("--json and --out - would both write to stdout: give --out FILE for the HTML")


def _emit(html: str, payload: dict[str, Any], out: Path | None, as_json: bool, default: str) -> Path | None:
    """Write the HTML where it goes (None: not written) and, with --json, the metrics on stdout."""
    target = out if out is not None else None if as_json else Path(default)
    if target is not None:
        _write(target, html, "report")
    if as_json:
        print_json_line(payload, allow_nan=False)
    return target


def _where(target: Path | None) -> str:
    return "" if target is None else f" written to {target}"


def _say(line: str, target: Path | None, as_json: bool) -> None:
    """The human summary: on stdout, or on stderr when stdout carries the JSON or the HTML."""
    quiet_stdout = as_json or (target is not None and str(target) == "-")
    (sys.stderr if quiet_stdout else sys.stdout).write(line + "\n")


def register(app: typer.Typer) -> None:
    @app.command()
    def report(
        runs: list[str] | None = typer.Argument(None, metavar="RUN",
                                                help="A run id ('latest' = the newest run); several with --compare."),
        out: Path | None = typer.Option(
            None, "--out", "-o",
            help="HTML file to write ('-': stdout). Default report.html, compare.html or study.html; "
                 "with --json, the HTML is written only where --out says."),
        images: Path | None = typer.Option(None, "--images",
                                           help="A folder of photos to classify with the run's model."),
        as_json: bool = typer.Option(False, "--json", help="Print the report's metrics as one JSON object on "
                                                          "stdout (the summary line goes to stderr)."),
        compare: bool = typer.Option(False, "--compare", help="Compare several runs side by side."),
        study: str | None = typer.Option(None, "--study",
                                         help="Report on a `lambdanet tune` study instead of a run."),
    ) -> None:
        """Write an HTML analysis of a run: cost curve, accuracy, confusion matrix, per-class metrics,
        mislabelled test images, photo predictions, and the timeline of worker calls (or, with
        --study, of a tuning study: optimisation history, validation curves, best configuration)."""
        _check_targets(runs or [], out, as_json)
        if study is not None:
            if runs or compare or images is not None:
                raise UserInputError("--study reports on a study: give no RUN, --compare or --images with it")
            _study_report(study, out, as_json)
            return
        if not runs:
            raise UserInputError("missing RUN: a run id ('latest' = the newest run), or --study NAME")
        from lambdanet.report.collect import collect
        from lambdanet.report.compare import compare_json, render_compare
        from lambdanet.report.html import render_report

        if len(runs) > 1 and not compare:
            raise UserInputError(f"{len(runs)} runs given: pass --compare to compare several runs, or one RUN")
        if images is not None and not images.is_dir():
            raise UserInputError(f"--images {images}: no such folder")
        if compare and images is not None:
            raise UserInputError("--images works with one run, not with --compare")
        services = open_read_only()
        try:
            ids = [resolve_run(services, r) for r in runs]
            if compare:
                reports = [collect(services, r) for r in ids]
                html, payload = render_compare(reports), compare_json(reports)
            else:
                rep = collect(services, ids[0], images_dir=images)
                html, payload = render_report(rep), rep.to_json()
        finally:
            services.close()
        target = _emit(html, payload, out, as_json, "compare.html" if compare else "report.html")
        if compare:
            line = f"comparison of {len(ids)} runs{_where(target)}"
        else:
            test = payload.get("test") or {}
            acc = test.get("accuracy")
            line = (f"report of run {ids[0]}{_where(target)}: {len(payload['epochs'])} epochs, "
                    f"test accuracy {'n/a' if acc is None else format(acc, '.3f')}, "
                    f"{len(payload['mislabelled'])} mislabelled, {len(payload['photos'])} photo(s)")
            if payload["notes"]:
                line += f"; notes: {'; '.join(payload['notes'])}"
        _say(line, target, as_json)


def _study_report(study: str, out: Path | None, as_json: bool) -> None:
    from lambdanet.report.study import collect_study, render_study

    services = open_read_only()
    try:
        rep = collect_study(services, study)
        html, payload = render_study(rep), rep.to_json()
    finally:
        services.close()
    target = _emit(html, payload, out, as_json, "study.html")
    c = payload["counts"]
    best = (payload.get("summary") or {}).get("best_trial")
    line = (f"report of study {study}{_where(target)}: {len(payload['trials'])} trials ({c['completed']} "
            f"completed, {c['pruned']} pruned, {c['failed']} failed), best trial {'-' if best is None else best}")
    if payload["notes"]:
        line += f"; notes: {'; '.join(payload['notes'])}"
    _say(line, target, as_json)
