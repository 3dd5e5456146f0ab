"""The self-contained HTML report of one run: every figure is an embedded PNG data URI, the
style sheet is inline, there is no script and nothing is fetched, so the file opens offline.

Usage::

    report = collect(services, run_id, images_dir)
    Path("report.html").write_text(render_report(report), encoding="utf-8")

Elements carry ``id``/``data-*`` attributes with the exact numbers (``data-value``), so tools
and tests can read the report without parsing formatted text.
"""

from __future__ import annotations

import json
import time
from html import escape
from typing import Any

import numpy as np

from lambdanet.report import plots
from lambdanet.report.collect import RunReport
from lambdanet.report.metrics import Evaluation, binary_counts

MAX_TILES = 400  # mislabelled images shown at most (CIFAR-10 has thousands of errors)

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
header{background:#1d2330;color:#fff;padding:18px 28px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;color:#b8c0cc;font-size:13px}
main{max-width:1100px;margin:0 auto;padding:16px 24px 40px}
section{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:14px 18px;margin:14px 0}
h2{font-size:17px;margin:0 0 10px}
table{border-collapse:collapse;font-size:13px}
td,th{border-bottom:1px solid #e6e9ee;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f0f2f5} td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:2px 8px;border-radius:10px;font-size:12px;background:#888;color:#fff}
.badge.completed{background:#2ca02c}.badge.running{background:#2f7ed8}.badge.failed{background:#d62728}
.badge.interrupted{background:#f28f43}
.cols{display:flex;gap:24px;flex-wrap:wrap;align-items:flex-start}
.big{font-size:28px;font-weight:600} .muted{color:#6b7380;font-size:12px}
img.figure{max-width:100%;height:auto}
.tiles{display:flex;flex-wrap:wrap;gap:8px}
figure{margin:0;background:#fafbfc;border:1px solid #e0e3e8;border-radius:6px;padding:6px;text-align:center;
font-size:11px}
figure img{image-rendering:pixelated;display:block;margin:0 auto 4px}
figure.photo{width:190px} figure.photo-error{background:#fdecea;border-color:#f5c2bd} figure.error-tile{width:132px}
.bar{height:8px;background:#2f7ed8;border-radius:3px}
ul.notes{margin:0;padding-left:18px} ul.notes li{color:#8a4b00}
pre{background:#f0f2f5;padding:8px;border-radius:4px;font-size:12px;overflow:auto;max-height:320px}
"""


def page(title: str, body: str, head_extra: str = "") -> str:
    """A complete HTML document with the shared style sheet."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{CSS}</style>{head_extra}</head>"
            f"<body>{body}</body></html>\n")


def fmt(value: Any, digits: int = 4) -> str:
    """Human formatting: None -> n/a, floats to ``digits`` places."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float | np.floating):
        return f"{value:.{digits}f}"
    return str(value)


def when(ts: float | None) -> str:
    return "n/a" if not ts else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def seconds(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min ({value:.0f} s)"


def num_cell(value: Any, metric: str, digits: int = 4) -> str:
    raw = "" if value is None else escape(repr(float(value)) if isinstance(value, float) else str(value))
    return f'<td class="num" data-metric="{metric}" data-value="{raw}">{escape(fmt(value, digits))}</td>'


def img(png: bytes, alt: str, cls: str = "figure", extra: str = "") -> str:
    return f'<img class="{cls}" alt="{escape(alt)}" src="{plots.data_uri(png)}"{extra}>'


def summary_table(s: dict[str, Any]) -> str:
    epochs = f"{fmt(s.get('epochs_run'))} of {fmt(s.get('epochs_configured'))}"
    cost_usd = s.get("estimated_cost_usd")
    rows: list[tuple[str, str, str]] = [
        ("run_id", "Run", str(s["run_id"])),
        ("status", "Status", f'<span class="badge {escape(str(s["status"]))}">{escape(str(s["status"]))}</span>'),
        ("model", "Model", escape(fmt(s.get("model")))),
        ("data", "Data", escape(fmt(s.get("data")))),
        ("kind", "Kind", escape(fmt(s.get("kind")))),
        ("strategy", "Strategy", escape(fmt(s.get("strategy")))),
        ("workers", "Workers", escape(fmt(s.get("workers")))),
        ("executor", "Executor", escape(fmt(s.get("executor")))),
        ("cpu_threads", "CPU threads per worker",
         escape(fmt(s.get("cpu_threads")) + (f" ({s['cpu_threads_source']})" if s.get("cpu_threads_source") else ""))),
        ("epochs_run", "Epochs run", escape(epochs)),
        ("stop_reason", "Why it stopped", escape(fmt(s.get("stop_reason")))),
        ("final_cost", "Final cost", escape(fmt(s.get("final_cost"), 6))),
        ("wall_seconds", "Wall time", escape(seconds(s.get("wall_seconds")))),
        ("rounds", "Rounds", escape(fmt(s.get("rounds")))),
        ("retries", "Retried round attempts", escape(fmt(s.get("retries")))),
        ("worker_calls", "Worker calls", escape(fmt(s.get("worker_calls")))),
        ("worker_seconds", "Worker-seconds", escape(fmt(s.get("worker_seconds"), 2))),
        ("store_bytes", "Store bytes moved", escape(fmt(s.get("store_bytes")))),
        ("sync_seconds", "Seconds in collectives", escape(fmt(s.get("sync_seconds"), 2))),
        ("lambda_memory_mb", "Function memory (MB)", escape(fmt(s.get("lambda_memory_mb")))),
        ("estimated_cost_usd", "Estimated AWS cost",
         "n/a" if cost_usd is None else escape(f"${cost_usd:.6f}")),
        ("created_at", "Created", escape(when(s.get("created_at")))),
        ("ended_at", "Ended", escape(when(s.get("ended_at")))),
    ]
    if s.get("error"):
        rows.append(("error", "Error", escape(str(s["error"]))))
    if s.get("retry_reasons"):
        rows.append(("retry_reasons", "Why attempts were retried",
                     "<br>".join(escape(str(line)) for line in s["retry_reasons"])))
    body = "".join(
        f'<tr data-key="{key}" data-value="{escape(json.dumps(s.get(key)))}"><th>{label}</th><td>{value}</td></tr>'
        for key, label, value in rows
    )
    return f'<table id="summary">{body}</table>'


def cost_section(report: RunReport) -> str:
    if not report.epochs:
        return ('<section id="cost"><h2>Cost per epoch</h2><p class="empty" data-epochs="0">'
                f"No epochs recorded yet for run {escape(report.run.run_id)} "
                f"(status: {escape(report.run.status)}).</p></section>")
    xs = [e.epoch for e in report.epochs]
    ys = [e.cost for e in report.epochs]
    png = plots.cost_curve(xs, ys, report.test_accuracy_curve or None)
    return (f'<section id="cost" data-epochs="{len(xs)}"><h2>Cost per epoch</h2>'
            f'{img(png, "cost per epoch")}<p class="muted">{len(xs)} epochs; first cost '
            f"{fmt(ys[0], 6)}, last cost {fmt(ys[-1], 6)}.</p></section>")


def accuracy_section(report: RunReport) -> str:
    train = report.train.accuracy if report.train else report.summary.get("train_accuracy")
    test = report.test.accuracy if report.test else report.summary.get("test_accuracy")
    cells = []
    for key, label, value in (("train_accuracy", "train accuracy", train), ("test_accuracy", "test accuracy", test)):
        raw = "" if value is None else repr(float(value))
        cells.append(f'<div><div class="big" data-metric="{key}" data-value="{raw}">{fmt(value, 3)}</div>'
                     f'<div class="muted">{label}</div></div>')
    extra = ""
    if report.test is not None:
        extra = (f'<div><div class="big">{int(report.test.errors.size)} / {report.test.y_true.size}</div>'
                 '<div class="muted">test images mislabelled</div></div>')
    return f'<section id="accuracy"><h2>Accuracy</h2><div class="cols">{"".join(cells)}{extra}</div></section>'


def confusion_table(ev: Evaluation) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in ev.classes)
    rows = "".join(
        f"<tr><th>{escape(ev.classes[i])}</th>"
        + "".join(f'<td class="num" data-true="{i}" data-pred="{j}" data-count="{int(ev.cm[i, j])}">'
                  f"{int(ev.cm[i, j])}</td>" for j in range(len(ev.classes)))
        + "</tr>"
        for i in range(len(ev.classes))
    )
    return f'<table id="confusion-table"><tr><th>true \\ predicted</th>{head}</tr>{rows}</table>'


def binary_block(ev: Evaluation) -> str:
    if ev.cm.shape != (2, 2):
        return ""
    counts = binary_counts(ev.cm)
    pos = ev.rows[1]
    items = [(k, k, v) for k, v in counts.items()] + [
        ("sensitivity", "sensitivity (recall)", pos.recall), ("specificity", "specificity", pos.specificity),
        ("precision", "precision", pos.precision), ("fpr", "false-positive rate", pos.fpr), ("f1", "F1", pos.f1),
    ]
    rows = "".join(f"<tr><th>{escape(label)}</th>{num_cell(v, key)}</tr>" for key, label, v in items)
    return (f'<div><table id="binary-metrics">{rows}</table><p class="muted">positive class: '
            f"{escape(ev.classes[1])}</p></div>")


def per_class_table(ev: Evaluation) -> str:
    head = ("<tr><th>class</th><th>support</th><th>precision</th><th>recall / sensitivity</th>"
            "<th>specificity</th><th>false-positive rate</th><th>F1</th></tr>")
    rows = "".join(
        f'<tr data-class="{escape(r.name)}"><th>{escape(r.name)}</th>{num_cell(r.support, "support")}'
        f'{num_cell(r.precision, "precision")}{num_cell(r.recall, "recall")}'
        f'{num_cell(r.specificity, "specificity")}{num_cell(r.fpr, "fpr")}{num_cell(r.f1, "f1")}</tr>'
        for r in ev.rows
    )
    return f'<table id="per-class">{head}{rows}</table>'


def confusion_section(report: RunReport) -> str:
    ev = report.test or report.train
    if ev is None:
        return ('<section id="confusion"><h2>Confusion matrix</h2><p class="empty">No predictions: '
                "see the notes above.</p></section>")
    which = "test" if report.test is not None else "training"
    png = plots.confusion(ev.cm, ev.classes, title=f"Confusion matrix ({which} set)")
    return (f'<section id="confusion" data-set="{which}"><h2>Confusion matrix ({which} set, {ev.y_true.size} '
            f'images)</h2><div class="cols">{img(png, "confusion matrix")}<div>{confusion_table(ev)}</div>'
            f'{binary_block(ev)}</div><h2 style="margin-top:14px">Per-class metrics</h2>'
            f"{per_class_table(ev)}</section>")


def mislabelled_section(report: RunReport) -> str:
    ev, images = report.test, report.test_images
    if ev is None or images is None:
        return ""
    errors = ev.errors
    if errors.size == 0:
        return ('<section id="mislabelled" data-errors="0"><h2>Mislabelled test images</h2>'
                "<p>None: every test image is classified correctly.</p></section>")
    tiles = []
    for i in errors[:MAX_TILES]:
        t, p = ev.classes[ev.y_true[i]], ev.classes[ev.y_pred[i]]
        prob = float(ev.proba[i, ev.y_pred[i]])
        h, w = images.shape[1], images.shape[2]
        scale = max(1.0, 96 / max(h, w))  # small images are drawn larger by the browser (pixelated)
        size = f' width="{round(w * scale)}" height="{round(h * scale)}"'
        tiles.append(
            f'<figure class="error-tile" data-index="{int(i)}" data-true="{escape(t)}" data-pred="{escape(p)}">'
            f'{img(plots.image_png(images[i]), f"test image {int(i)}", "tile", size)}'
            f"#{int(i)}<br>true: <b>{escape(t)}</b><br>predicted: <b>{escape(p)}</b> ({prob:.2f})</figure>"
        )
    more = (f'<p class="muted">showing the first {MAX_TILES} of {errors.size} mislabelled images.</p>'
            if errors.size > MAX_TILES else "")
    return (f'<section id="mislabelled" data-errors="{errors.size}"><h2>Mislabelled test images '
            f'({errors.size})</h2>{more}<div class="tiles">{"".join(tiles)}</div></section>')


def photos_section(report: RunReport) -> str:
    if not report.photos:
        return ""
    figs = []
    for ph in report.photos:
        if ph.error:
            figs.append(f'<figure class="photo photo-error" data-name="{escape(ph.name)}">'
                        f'<b>{escape(ph.name)}</b><p class="photo-message">{escape(ph.error)}</p></figure>')
            continue
        thumb = img(plots.image_png(ph.thumbnail), ph.name, "thumb") if ph.thumbnail is not None else ""
        bars = "".join(
            f'<div style="text-align:left" data-class="{escape(c)}" data-value="{p!r}">{escape(c)} {p:.3f}'
            f'<div class="bar" style="width:{max(1.0, 170 * p):.0f}px"></div></div>'
            for c, p in sorted(ph.probabilities.items(), key=lambda kv: -kv[1])[:5]
        )
        figs.append(f'<figure class="photo" data-name="{escape(ph.name)}" data-label="{escape(ph.label or "")}">'
                    f'{thumb}<b>{escape(ph.name)}</b><br>prediction: <b class="label">{escape(ph.label or "")}'
                    f"</b>{bars}</figure>")
    return (f'<section id="photos"><h2>Predictions on photos ({len(report.photos)})</h2>'
            f'<div class="tiles">{"".join(figs)}</div></section>')


def timeline_section(report: RunReport) -> str:
    if not report.calls:
        return ('<section id="timeline" data-calls="0" data-retried-calls="0" data-failed-calls="0">'
                "<h2>Rounds and worker calls</h2><p>No worker calls recorded.</p></section>")
    png = plots.timeline(report.calls)
    bars = report.timeline
    failed = sum(1 for b in bars if b.state == "failed")
    retried = sum(1 for b in bars if b.state == "retry")
    rows = "".join(
        f'<tr class="{b.state}" data-round="{c.round}" data-attempt="{c.attempt}" data-try="{b.try_no}" '
        f'data-worker="{c.worker}"><td class="num">{c.round}</td>'
        f'<td class="num">{c.attempt}</td><td class="num">{b.try_no + 1}</td><td class="num">{c.worker}</td>'
        f'<td class="num">{max(0.0, c.ended_at - c.started_at):.3f}</td><td>{"ok" if c.ok else "failed"}</td>'
        f"<td>{escape(c.error or '')}</td></tr>"
        for b in bars if b.state != "ok" for c in (b.call,)
    )
    table = (f'<table id="call-failures"><tr><th>round</th><th>attempt</th><th>try of round</th><th>worker</th>'
             f"<th>seconds</th><th>result</th><th>error</th></tr>{rows}</table>" if rows else "")
    rounds = len({c.round for c in report.calls})
    return (f'<section id="timeline" data-calls="{len(report.calls)}" data-retried-calls="{retried}" '
            f'data-failed-calls="{failed}"><h2>Rounds and worker calls</h2>'
            f'{img(png, "timeline of worker calls")}<p class="muted">{len(report.calls)} calls in {rounds} '
            f"round(s); {failed} failed; {retried} retried (a later attempt of the same round: hatched "
            f"bars).</p>{table}</section>")


def config_section(report: RunReport) -> str:
    from lambdanet.report.collect import clean_json

    text = json.dumps(clean_json(report.run.config), indent=2, sort_keys=True)
    return f'<section id="config"><h2>Configuration</h2><pre>{escape(text)}</pre></section>'


def render_report(report: RunReport) -> str:
    """The whole report as one HTML string."""
    run = report.run
    notes = ""
    if report.notes:
        notes = ('<section id="notes"><h2>Notes</h2><ul class="notes">'
                 + "".join(f"<li>{escape(n)}</li>" for n in report.notes) + "</ul></section>")
    body = (
        f"<header><h1>lambdanet report — run {escape(run.run_id)}</h1>"
        f"<p>{escape(run.model or run.kind)} on {escape(run.data)} · generated {when(report.generated_at)}</p>"
        f'</header><main>{notes}<section id="run"><h2>Run summary</h2>{summary_table(report.summary)}</section>'
        f"{cost_section(report)}{accuracy_section(report)}{confusion_section(report)}"
        f"{mislabelled_section(report)}{photos_section(report)}{timeline_section(report)}"
        f"{config_section(report)}</main>"
    )
    return page(f"lambdanet report {run.run_id}", body)
