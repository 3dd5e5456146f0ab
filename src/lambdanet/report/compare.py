"""Several runs side by side: one cost-curve figure, one metrics table, their confusion matrices.

Usage::

    reports = [collect(services, r) for r in ("r-1", "r-2")]
    Path("compare.html").write_text(render_compare(reports), encoding="utf-8")
    compare_json(reports)      # {"runs": [{"run_id": …, "test_accuracy": …, …}, …]}
"""

from __future__ import annotations

from html import escape
from typing import Any

from lambdanet.report import plots
from lambdanet.report.collect import RunReport, clean_json
from lambdanet.report.html import fmt, img, page, seconds, when
from lambdanet.report.metrics import macro_average

ROWS: list[tuple[str, str]] = [
    ("status", "status"), ("model", "model"), ("data", "data"), ("strategy", "strategy"),
    ("workers", "workers"), ("epochs_run", "epochs run"), ("stop_reason", "why it stopped"),
    ("final_cost", "final cost"), ("train_accuracy", "train accuracy"), ("test_accuracy", "test accuracy"),
    ("precision", "precision (positive class)"), ("sensitivity", "sensitivity / recall"),
    ("specificity", "specificity"), ("macro_f1", "macro F1"), ("wall_seconds", "wall time"),
    ("worker_seconds", "worker-seconds"), ("estimated_cost_usd", "estimated AWS cost"),
]


def run_metrics(report: RunReport) -> dict[str, Any]:
    """One run's comparable figures (predictions where available, else the ledger's)."""
    s = report.summary
    out: dict[str, Any] = {k: s.get(k) for k, _ in ROWS if k in s}
    out["run_id"] = report.run.run_id
    if report.train is not None:
        out["train_accuracy"] = report.train.accuracy
    ev = report.test or report.train
    if report.test is not None:
        out["test_accuracy"] = report.test.accuracy
    if ev is not None:
        out["macro_f1"] = macro_average(ev.rows, "f1")
        if ev.cm.shape == (2, 2):
            pos = ev.rows[1]
            out.update(precision=pos.precision, sensitivity=pos.recall, specificity=pos.specificity)
        out["confusion_matrix"] = ev.cm.tolist()
        out["classes"] = ev.classes
    out["costs"] = [e.cost for e in report.epochs]
    out["notes"] = report.notes
    return clean_json(out)  # type: ignore[no-any-return]


def compare_json(reports: list[RunReport]) -> dict[str, Any]:
    return {"runs": [run_metrics(r) for r in reports]}


def _cell(key: str, value: Any) -> str:
    if key == "wall_seconds":
        text = seconds(value)
    elif key == "estimated_cost_usd":
        text = "n/a" if value is None else f"${value:.6f}"
    elif key in ("train_accuracy", "test_accuracy"):
        text = fmt(value, 3)
    else:
        text = fmt(value, 4)
    raw = "" if value is None else escape(repr(value))
    return f'<td class="num" data-metric="{key}" data-value="{raw}">{escape(text)}</td>'


def render_compare(reports: list[RunReport]) -> str:
    """The comparison page of ``reports`` (in the order given) as one HTML string."""
    metrics = [run_metrics(r) for r in reports]
    series = {r.run.run_id: ([e.epoch for e in r.epochs], [e.cost for e in r.epochs]) for r in reports}
    head = "".join(f'<th data-run="{escape(m["run_id"])}">{escape(m["run_id"])}</th>' for m in metrics)
    rows = "".join(
        f"<tr data-key='{key}'><th>{escape(label)}</th>" + "".join(_cell(key, m.get(key)) for m in metrics) + "</tr>"
        for key, label in ROWS
    )
    matrices = "".join(
        f'<figure data-run="{escape(r.run.run_id)}">'
        f'{img(plots.confusion(ev.cm, ev.classes, title=r.run.run_id), "confusion " + r.run.run_id)}</figure>'
        for r in reports if (ev := r.test or r.train) is not None
    )
    notes = [f"{r.run.run_id}: {n}" for r in reports for n in r.notes]
    notes_html = ('<section id="notes"><h2>Notes</h2><ul class="notes">'
                  + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul></section>") if notes else ""
    curves = (img(plots.compare_curves(series), "cost curves") if any(r.epochs for r in reports)
              else "<p>No epochs recorded yet for any of these runs.</p>")
    body = (
        f"<header><h1>lambdanet — {len(reports)} runs compared</h1><p>generated "
        f"{when(reports[0].generated_at if reports else None)}</p></header><main>{notes_html}"
        f'<section id="cost"><h2>Cost per epoch</h2>{curves}</section>'
        f'<section id="metrics"><h2>Metrics</h2><table id="compare"><tr><th></th>{head}</tr>{rows}</table>'
        f"</section>"
        + (f'<section id="confusion"><h2>Confusion matrices</h2><div class="tiles">{matrices}</div></section>'
           if matrices else "")
        + "</main>"
    )
    return page("lambdanet compare " + " ".join(r.run.run_id for r in reports), body)
