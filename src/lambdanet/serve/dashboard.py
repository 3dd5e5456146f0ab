"""The live training dashboard: a FastAPI router the serve app includes.

Routes::

    GET /runs                          HTML: the runs in the ledger with their status (refreshes itself)
    GET /runs/{run_id}                 HTML: one run, its cost (and accuracy) curves growing while it trains
    GET /runs/assets/{name}            the run page's script and the vendored uPlot (serve/static/)
    GET /api/runs[?study=NAME]         {"runs": [{run_id, status, epochs_done, epochs_total, study, trial, …}]}
    GET /api/runs/{run_id}             one run: status, epochs done/total, ETA, workers, last cost
    GET /api/runs/{run_id}/epochs?after=N   {"epochs": [{"epoch", "cost", "seconds", …}], …} for epoch > N

``/runs`` groups the trials of a ``lambdanet tune`` study (runs whose metrics name a ``study``)
under one heading row per study — trials in order, with their outcome (completed, pruned,
failed) and validation accuracy — after the runs that belong to no study.

The pages poll the JSON routes (short polling, once a second while the run is active); the run
page draws its curves with uPlot (vendored, MIT: ``serve/static/uPlot.*``), so axes, ticks and
zoom are the library's. No build step, nothing fetched from outside the server.

The router reads the ledger of ``request.app.state.services`` (a :class:`Services`) when the app
set one, else opens ``Services.open()`` once and caches it on ``app.state``. Unknown runs answer
404 ``{"error": "…"}``.
"""

from __future__ import annotations

import json
import math
import threading
import time
from functools import cache
from html import escape
from importlib import resources
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from lambdanet.errors import LambdanetError
from lambdanet.ports.ledger import EpochRow, RunRecord
from lambdanet.report.html import page
from lambdanet.runview import clean_json, epochs_done, setting, training_config
from lambdanet.services import Services

router = APIRouter()
_lock = threading.Lock()
ACTIVE = ("pending", "running")


def get_services(request: Request) -> Services:
    """The app's Services (``app.state.services``), or one opened lazily and cached."""
    state = request.app.state  # Starlette's State: attributes set at run time, absent until then
    svc = getattr(state, "services", None)
    if isinstance(svc, Services):
        return svc
    with _lock:
        cached = getattr(state, "dashboard_services", None)
        if not isinstance(cached, Services):
            cached = Services.open()
            state.dashboard_services = cached
    return cached


def _error(exc: LambdanetError) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=exc.http_status)


def run_state(run: RunRecord, epochs: list[EpochRow] | None, now: float | None = None) -> dict[str, Any]:
    """What the dashboard shows of a run (JSON-safe): progress, ETA, workers, last cost."""
    now = time.time() if now is None else now
    cfg = training_config(run)
    total = cfg.get("epochs")
    done = epochs_done(run, epochs)
    last_cost = epochs[-1].cost if epochs else run.metrics.get("final_cost")
    eta = None
    if run.status == "running" and run.started_at and done and isinstance(total, int) and total > done:
        eta = (now - run.started_at) / done * (total - done)
    out: dict[str, Any] = clean_json({
        "run_id": run.run_id, "status": run.status, "kind": run.kind, "model": run.model, "data": run.data,
        "created_at": run.created_at, "started_at": run.started_at, "ended_at": run.ended_at,
        "stop_reason": run.stop_reason, "error": run.error,
        "epochs_done": done, "epochs_total": total, "eta_seconds": eta, "last_cost": last_cost,
        "workers": setting(run, "workers"), "strategy": setting(run, "strategy"),
        "executor": setting(run, "executor"),
        "train_accuracy": run.metrics.get("train_accuracy"), "test_accuracy": run.metrics.get("test_accuracy"),
        "wall_seconds": run.metrics.get("wall_seconds"),
        "study": run.metrics.get("study"), "trial": run.metrics.get("trial"),
        "outcome": run.metrics.get("outcome"), "validation_accuracy": run.metrics.get("validation_accuracy"),
    })
    return out


def _epoch_json(e: EpochRow) -> dict[str, Any]:
    cost = e.cost if math.isfinite(e.cost) else None
    out: dict[str, Any] = clean_json({"epoch": e.epoch, "cost": cost, "seconds": e.seconds,
                                      "learning_rate": e.learning_rate, **e.extra})
    return out


@router.get("/api/runs", name="dashboard_api_runs")
def api_runs(request: Request, limit: int = 100, study: str | None = None) -> Response:
    ledger = get_services(request).ledger
    try:
        runs = ledger.list_runs(limit=max(1, min(limit, 1000)))
        if study is not None:
            runs = [r for r in runs if r.metrics.get("study") == study]
        out = [run_state(r, ledger.epochs(r.run_id) if r.status in ACTIVE else None) for r in runs]
    except LambdanetError as exc:
        return _error(exc)
    return JSONResponse({"runs": out})


@router.get("/api/runs/{run_id}", name="dashboard_api_run")
def api_run(request: Request, run_id: str) -> Response:
    ledger = get_services(request).ledger
    try:
        run = ledger.get_run(run_id)
        state = run_state(run, ledger.epochs(run_id))
    except LambdanetError as exc:
        return _error(exc)
    state["config"] = clean_json(run.config)
    state["metrics"] = clean_json(run.metrics)
    return JSONResponse(state)


@router.get("/api/runs/{run_id}/epochs", name="dashboard_api_epochs")
def api_epochs(request: Request, run_id: str, after: str = "0") -> Response:
    try:
        after_n = int(after)
    except ValueError:
        return JSONResponse({"error": f"after must be an integer epoch number, got {after[:40]!r}"},
                            status_code=400)
    ledger = get_services(request).ledger
    try:
        run = ledger.get_run(run_id)
        rows = [e for e in ledger.epochs(run_id) if e.epoch > after_n]
    except LambdanetError as exc:
        return _error(exc)
    return JSONResponse({"run_id": run_id, "status": run.status, "after": after_n,
                         "epochs": [_epoch_json(e) for e in rows]})


# the files under /runs/assets/ (from serve/static/) and their content types; nothing else is served
ASSETS = {
    "dashboard_run.js": "text/javascript; charset=utf-8",
    "uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uPlot.min.css": "text/css; charset=utf-8",
}


@cache
def _asset(name: str) -> bytes:
    return resources.files("lambdanet.serve").joinpath("static", name).read_bytes()


@router.get("/runs/assets/{name}", name="dashboard_asset")
def asset(name: str) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        return JSONResponse({"error": f"no asset {name[:80]!r} (known: {', '.join(sorted(ASSETS))})"},
                            status_code=404)
    return Response(_asset(name), media_type=media_type, headers={"Cache-Control": "max-age=300"})


LIST_SCRIPT = """
const API = __API__;
function fmt(v, d) { return v === null || v === undefined ? "-" : (typeof v === "number" ? v.toFixed(d) : v); }
function runRow(x) {
  const a = document.createElement("a"); a.href = __RUN_BASE__ + encodeURIComponent(x.run_id);
  a.textContent = x.run_id;
  const tr = document.createElement("tr"); tr.dataset.runId = x.run_id;
  if (x.study !== null && x.study !== undefined) { tr.dataset.study = x.study; tr.dataset.trial = x.trial;
    tr.classList.add("trial"); }
  const status = x.study !== null && x.study !== undefined && x.outcome ? x.outcome : x.status;
  const label = x.study !== null && x.study !== undefined ? "trial " + x.trial : (x.model || "-");
  const cells = [null, status, x.kind, label, fmt(x.epochs_done, 0) + " / " + fmt(x.epochs_total, 0),
                 fmt(x.last_cost, 4), fmt(x.test_accuracy, 3), fmt(x.workers, 0),
                 x.created_at ? new Date(x.created_at * 1000).toISOString().replace("T", " ").slice(0, 19) : "-"];
  cells.forEach(function (c, i) {
    const td = document.createElement("td");
    if (i === 0) td.appendChild(a); else if (i === 1) { td.innerHTML = "<span class='badge'></span>";
      td.firstChild.textContent = c; td.firstChild.classList.add(x.status); } else td.textContent = c;
    tr.appendChild(td);
  });
  return tr;
}
function studyRow(name, trials) {
  const tr = document.createElement("tr"); tr.className = "study"; tr.dataset.studyGroup = name;
  const td = document.createElement("td"); td.colSpan = 9;
  const count = function (o) { return trials.filter(function (t) { return t.outcome === o; }).length; };
  const accs = trials.map(function (t) { return t.validation_accuracy; })
    .filter(function (v) { return v !== null && v !== undefined; });
  td.textContent = "study " + name + ": " + trials.length + " trials (" + count("completed") + " completed, " +
    count("pruned") + " pruned, " + count("failed") + " failed), best validation accuracy " +
    (accs.length ? Math.max.apply(null, accs).toFixed(3) : "-");
  tr.appendChild(td); return tr;
}
async function refresh() {
  const r = await fetch(API); if (!r.ok) return;
  const data = await r.json();
  const plain = [], studies = {}, order = [];
  data.runs.forEach(function (x) {
    if (x.study === null || x.study === undefined) { plain.push(x); return; }
    if (!(x.study in studies)) { studies[x.study] = []; order.push(x.study); }
    studies[x.study].push(x);
  });
  const rows = plain.map(runRow);
  order.forEach(function (name) {
    const trials = studies[name].sort(function (a, b) { return a.trial - b.trial; });
    rows.push(studyRow(name, trials));
    trials.forEach(function (x) { rows.push(runRow(x)); });
  });
  const body = document.getElementById("runs-body"); body.replaceChildren.apply(body, rows);
  document.getElementById("count").textContent = data.runs.length;
}
refresh(); setInterval(refresh, 3000);
"""



def _js(value: str) -> str:
    return json.dumps(value).replace("</", "<\\/")


@router.get("/runs", response_class=HTMLResponse, name="dashboard_runs")
def runs_page(request: Request) -> HTMLResponse:
    api = request.url_for("dashboard_api_runs").path
    base = request.url_for("dashboard_run", run_id="x").path[:-1]
    script = LIST_SCRIPT.replace("__API__", _js(api)).replace("__RUN_BASE__", _js(base))
    style = ("<style>tr.study td{background:#eef2f8;font-weight:600;padding-top:10px}"
             "tr.trial td:first-child{padding-left:22px}</style>")
    body = ("<header><h1>lambdanet — training runs</h1><p><span id='count'>…</span> runs, refreshed every "
            "3 s</p></header><main><section><table id='runs'><thead><tr><th>run</th><th>status</th>"
            "<th>kind</th><th>model</th><th>epochs</th><th>last cost</th><th>test acc</th><th>workers</th>"
            "<th>created (UTC)</th></tr></thead><tbody id='runs-body'></tbody></table></section></main>"
            f"<script>{script}</script>")
    return HTMLResponse(page("lambdanet runs", body, style))


@router.get("/runs/{run_id}", response_class=HTMLResponse, name="dashboard_run")
def run_page(request: Request, run_id: str) -> HTMLResponse:
    ledger = get_services(request).ledger
    try:
        run = ledger.get_run(run_id)
    except LambdanetError as exc:
        body = (f"<header><h1>lambdanet — run not found</h1></header><main><section><p id='error'>"
                f"{escape(str(exc))}</p><p><a href='{escape(request.url_for('dashboard_runs').path)}'>"
                "all runs</a></p></section></main>")
        return HTMLResponse(page("run not found", body), status_code=exc.http_status)

    def asset_path(name: str) -> str:
        return escape(request.url_for("dashboard_asset", name=name).path)

    api_run = escape(request.url_for("dashboard_api_run", run_id=run_id).path)
    api_epochs = escape(request.url_for("dashboard_api_epochs", run_id=run_id).path)
    facts = "".join(
        f"<div><div class='big' id='{key}'>-</div><div class='muted'>{label}</div></div>"
        for key, label in (("last-cost", "last cost"), ("eta", "ETA"), ("workers", "workers (strategy)"),
                           ("test-acc", "test accuracy"), ("stop", "stop reason"))
    )
    body = (f"<header><h1>lambdanet — run {escape(run.run_id)} <span id='status' class='badge "
            f"{escape(run.status)}'>{escape(run.status)}</span></h1><p>{escape(run.model or run.kind)} on "
            f"{escape(run.data)}</p></header><main><section><div class='cols'><div><div class='big'>"
            f"<span id='epochs-done'>0</span> / <span id='epochs-total'>?</span></div><div class='muted'>"
            f"epochs done</div></div>{facts}</div></section><section><h2>Cost and accuracy per epoch</h2>"
            f"<div id='cost-chart' data-points='0' data-api-run='{api_run}' data-api-epochs='{api_epochs}'>"
            f"<p class='muted'>no epochs recorded yet</p></div><p class='muted'>drag to zoom, double-click to "
            f"reset</p></section><p><a href='{escape(request.url_for('dashboard_runs').path)}'>all runs</a></p>"
            f"</main><script src='{asset_path('uPlot.iife.min.js')}'></script>"
            f"<script src='{asset_path('dashboard_run.js')}'></script>")
    head = (f"<link rel='stylesheet' href='{asset_path('uPlot.min.css')}'>"  # the page's table style off the legend
            "<style>.u-legend th,.u-legend td{background:none;border:0;padding:2px 4px}</style>")
    return HTMLResponse(page(f"run {run.run_id}", body, head))

