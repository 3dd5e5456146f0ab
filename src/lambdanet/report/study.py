"""The report of a ``lambdanet tune`` study: one self-contained HTML file (figures are embedded
PNGs, no script), read from the ledger (each trial is a run with ``metrics.study``) and from the
study's summary (``studies/<study>/summary.json`` in the object store, written at its end).

Usage::

    rep = collect_study(services, "lr-search")
    Path("study.html").write_text(render_study(rep), encoding="utf-8")
    rep.to_json()      # the same numbers for tools

Sections: the optimisation history (each trial's objective value, running best), the validation
curves of the completed and pruned trials (pruned ones dashed, the best thick), the best
configuration with its validation and test accuracy, and a table of every trial — state, params,
epochs run, validation cost/accuracy, worker-seconds and estimated cost, why it was pruned or failed.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass, field
from html import escape
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lambdanet.errors import NotFound, ObjectNotFound
from lambdanet.ports.ledger import RunRecord
from lambdanet.report.html import page
from lambdanet.report.plots import data_uri
from lambdanet.services import Services
from lambdanet.tensors import json_safe

COLORS = {"completed": "#2f7ed8", "pruned": "#f28f43", "failed": "#d62728", "running": "#888888"}


@dataclass
class StudyReport:
    study: str
    trials: list[dict[str, Any]]
    summary: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)

    @property
    def objective(self) -> str:
        if self.summary:
            return str(self.summary.get("objective", "cost"))
        return next((str(t["objective"]) for t in self.trials if t.get("objective")), "cost")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = json_safe({"study": self.study, "objective": self.objective, "summary": self.summary,
                                         "trials": self.trials, "notes": self.notes,
                                         "counts": {k: sum(1 for t in self.trials if t["outcome"] == k)
                                                    for k in ("completed", "pruned", "failed", "running")}})
        return out


def study_runs(services: Services, study: str, limit: int = 100_000) -> list[RunRecord]:
    """The runs of ``study`` in trial order."""
    runs = [r for r in services.ledger.list_runs(limit=limit) if r.metrics.get("study") == study]
    return sorted(runs, key=lambda r: int(r.metrics.get("trial", 0)))


def _outcome(run: RunRecord) -> str:
    outcome = run.metrics.get("outcome")
    if outcome in ("completed", "pruned", "failed"):
        return str(outcome)
    return "failed" if run.status == "failed" else "running"


def trial_row(run: RunRecord) -> dict[str, Any]:
    m = run.metrics
    return {
        "trial": m.get("trial"), "run_id": run.run_id, "status": run.status, "outcome": _outcome(run),
        "params": m.get("params") or {}, "objective": m.get("objective"), "value": m.get("objective_value"),
        "epochs_done": m.get("epochs_done"), "validation_cost": m.get("validation_cost"),
        "validation_accuracy": m.get("validation_accuracy"), "test_accuracy": m.get("test_accuracy"),
        "validation_balanced_accuracy": m.get("validation_balanced_accuracy"),
        "validation": m.get("validation") or [], "worker_seconds": m.get("worker_seconds"),
        "estimated_cost_usd": m.get("estimated_cost_usd"), "model": run.model,
        "reason": m.get("prune_reason") or m.get("fail_reason") or run.error,
    }


def collect_study(services: Services, study: str) -> StudyReport:
    runs = study_runs(services, study)
    summary = None
    with contextlib.suppress(ObjectNotFound):
        summary = json.loads(services.objects.get(f"studies/{study}/summary.json"))
    if not runs and summary is None:
        raise NotFound(f"no study '{study}' in the ledger: start one with `lambdanet tune DATA --study {study} …`")
    notes = []
    if summary is None:
        notes.append("the study has not finished (no summary yet): continue it with "
                     f"`lambdanet tune --study {study} --resume`")
    return StudyReport(study, [trial_row(r) for r in runs], summary, notes)


# ---- figures -------------------------------------------------------------------------------------
def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def history_png(rep: StudyReport) -> bytes:
    fig = Figure(figsize=(7.5, 3.4))
    ax = fig.add_subplot(1, 1, 1)
    objective, best, xs, ys = rep.objective, None, [], []
    for outcome in ("completed", "pruned"):
        pts = []
        for t in rep.trials:
            if t["outcome"] != outcome or not t["validation"]:
                continue
            if outcome == "completed":
                v = t["value"]
            elif objective == "balanced_accuracy":  # not in the curve: the trial's last score
                v = t["validation_balanced_accuracy"]
            else:  # the curve's [epoch, cost, accuracy] at the prune
                v = t["validation"][-1][1 if objective == "cost" else 2]
            if v is not None:
                pts.append((t["trial"], v))
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=COLORS[outcome], label=outcome,
                       marker="o" if outcome == "completed" else "x", zorder=3)
    for t in rep.trials:
        if t["outcome"] == "completed" and t["value"] is not None:
            v = float(t["value"])
            best = v if best is None or (v < best if objective == "cost" else v > best) else best
            xs.append(t["trial"])
            ys.append(best)
    if xs:
        ax.step(xs, ys, where="post", color="#1d2330", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {objective} (pruned: at the prune)")
    ax.grid(alpha=0.3)
    if xs or any(t["validation"] for t in rep.trials):
        ax.legend(loc="best", fontsize=8)
    return _png(fig)


def curves_png(rep: StudyReport) -> bytes:
    fig = Figure(figsize=(7.5, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    best_run = (rep.summary or {}).get("best_run")
    for t in rep.trials:
        pts = [(p[0], p[1]) for p in t["validation"] if p[1] is not None]
        if not pts or t["outcome"] not in ("completed", "pruned"):
            continue
        is_best = t["run_id"] == best_run
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color=COLORS[t["outcome"]],
                linestyle="--" if t["outcome"] == "pruned" else "-", linewidth=2.5 if is_best else 1,
                alpha=1.0 if is_best else 0.7, marker="." if len(pts) < 30 else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation cost")
    ax.grid(alpha=0.3)
    return _png(fig)


# ---- HTML -----------------------------------------------------------------------------------------
def _num(v: Any, spec: str = ".4f") -> str:
    return "-" if v is None else format(v, spec)


def render_study(rep: StudyReport) -> str:
    s = rep.summary or {}
    counts = rep.to_json()["counts"]
    facts = [("trials", len(rep.trials), "d"), ("completed", counts["completed"], "d"),
             ("pruned", counts["pruned"], "d"), ("failed", counts["failed"], "d"),
             ("best-validation-accuracy", s.get("validation_accuracy"), ".3f"),
             ("test-accuracy", s.get("test_accuracy"), ".3f"), ("wall-seconds", s.get("wall_seconds"), ".1f"),
             ("worker-seconds", sum(float(t["worker_seconds"] or 0) for t in rep.trials), ".1f"),
             ("estimated-cost-usd", sum(float(t["estimated_cost_usd"] or 0) for t in rep.trials), ".6f")]
    fact_html = "".join(
        f"<div><div class='big' id='{k}' data-value='{escape(json.dumps(json_safe(v)))}'>{_num(v, f)}</div>"
        f"<div class='muted'>{k.replace('-', ' ')}</div></div>" for k, v, f in facts)
    rows = []
    for t in rep.trials:
        cls = " class='best'" if t["run_id"] == s.get("best_run") else ""
        rows.append(
            f"<tr data-trial='{t['trial']}' data-outcome='{escape(t['outcome'])}'{cls}><td class='num'>{t['trial']}"
            f"</td><td><span class='badge {escape(t['status'])}'>{escape(t['outcome'])}</span></td>"
            f"<td><code>{escape(t['run_id'])}</code></td><td><code>{escape(json.dumps(t['params'], sort_keys=True))}"
            f"</code></td><td class='num'>{_num(t['epochs_done'], 'd') if isinstance(t['epochs_done'], int) else '-'}"
            f"</td><td class='num'>{_num(t['validation_cost'])}</td><td class='num'>"
            f"{_num(t['validation_accuracy'], '.3f')}</td><td class='num'>{_num(t['worker_seconds'], '.1f')}</td>"
            f"<td class='num'>{_num(t['estimated_cost_usd'], '.6f')}</td><td>{escape(str(t['reason'] or ''))}"
            f"</td></tr>")
    best = ""
    if s.get("best_run"):
        best = (f"<section id='best'><h2>Best configuration</h2><p>trial {s.get('best_trial')} (run "
                f"<code>{escape(str(s.get('best_run')))}</code>), model <code>{escape(str(s.get('model')))}</code> "
                f"aliased <b>staging</b> — promote it with <code>lambdanet models promote</code>. Validation "
                f"{escape(rep.objective)} {_num(s.get('best_value'))}, validation accuracy "
                f"{_num(s.get('validation_accuracy'), '.3f')}, test accuracy {_num(s.get('test_accuracy'), '.3f')} "
                f"(the test set is scored once, for this trial).</p><pre id='best-params'>"
                f"{escape(json.dumps(s.get('best_params'), indent=1, sort_keys=True))}</pre><pre id='best-config'>"
                f"{escape(json.dumps(s.get('best_config'), indent=1, sort_keys=True))}</pre></section>")
    notes = "".join(f"<li>{escape(n)}</li>" for n in rep.notes)
    body = (f"<header><h1>lambdanet — study {escape(rep.study)}</h1><p>objective: validation {escape(rep.objective)}"
            f"; storage {escape(str(s.get('storage', '-')))}</p></header><main>"
            + (f"<section><ul class='notes'>{notes}</ul></section>" if notes else "")
            + f"<section><div class='cols'>{fact_html}</div></section>{best}"
            f"<section><h2>Optimisation history</h2><img class='figure' id='history' alt='optimisation history' "
            f"src='{data_uri(history_png(rep))}'></section>"
            f"<section><h2>Validation curves (completed solid, pruned dashed)</h2><img class='figure' id='curves' "
            f"alt='validation curves' src='{data_uri(curves_png(rep))}'></section>"
            f"<section><h2>Trials</h2><table id='trials'><thead><tr><th>trial</th><th>outcome</th><th>run</th>"
            f"<th>params</th><th>epochs</th><th>val cost</th><th>val acc</th><th>worker-s</th><th>est. USD</th>"
            f"<th>why</th></tr></thead><tbody>{''.join(rows)}</tbody></table></section></main>")
    return page(f"study {rep.study}", body)
