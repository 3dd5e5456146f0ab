"""``lambdanet report`` on real engine runs of itsacat (``lambdanet train``; the Driver with an injected
worker fault, on a password-protected redis; a run started and never driven): the numbers in the
HTML and the JSON equal the ones this test computes itself — from a forward pass written here and
from the ledger's rows; bad input ends in one clear line."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from lambdanet.config import parse_config
from lambdanet.data.images import photo_to_array
from lambdanet.data.readers import load_dataset
from lambdanet.engine.driver import Driver, TrainRequest
from lambdanet.ports.ledger import CallRow
from lambdanet.services import Services
from tests.conftest import IMAGES, RedisServer
from tests.e2e.report_support import DATA, BuiltRun, Elements, cli, small_config

# the fault of the faulty run: worker 0 raises one epoch into round 2's first try (the engine retries the round)
FAULT = {"round": 2, "attempt": 0, "worker": 0, "action": "raise", "after_epochs": 1}
GB_SECOND_USD, REQUEST_USD = 0.0000166667, 0.20 / 1_000_000  # AWS Lambda x86 us-east-1, as published


@contextmanager
def services_at(home: Path) -> Iterator[Services]:
    """Services of ``home`` (LAMBDANET_HOME set only while they are opened)."""
    old = os.environ.get("LAMBDANET_HOME")
    os.environ["LAMBDANET_HOME"] = str(home)
    try:
        services = Services.open()
    finally:
        if old is None:
            os.environ.pop("LAMBDANET_HOME", None)
        else:
            os.environ["LAMBDANET_HOME"] = old
    try:
        yield services
    finally:
        services.close()


class World(NamedTuple):
    home: Path
    trained: BuiltRun  # a real run: `lambdanet train` (2 workers, neuron strategy, 3 rounds)
    faulty: BuiltRun  # a real run (the engine's Driver) whose round 2 failed once and was retried
    fresh: str  # a real run started (Driver.start: created, data and checkpoint 0 written) and never driven
    redis_password: str  # the faulty run's store is a redis-server with this password


def _built(services: Services, run_id: str) -> BuiltRun:
    run = services.ledger.get_run(run_id)
    assert run.status == "completed" and run.model, (run.status, run.error)
    mv = services.registry.load(run.model)
    costs = [e.cost for e in services.ledger.epochs(run_id)]
    return BuiltRun(run_id, run.model, dict(mv.weights), list(mv.metadata["architecture"]["activations"]), costs)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    home = tmp_path_factory.mktemp("report-home")
    params = home / "parameters.json"
    params.write_text(json.dumps(small_config(300)))
    res = cli(home, "train", str(DATA), "--params", str(params), "--workers", "2", "--epochs-per-round", "100",
              "--model", "itsacat", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    password = "secret-pw-4711"
    with pytest.MonkeyPatch.context() as mp, RedisServer(tmp_path_factory.mktemp("redis-pw"),
                                                         password=password) as redis:
        mp.setenv("LAMBDANET_HOME", str(home))
        mp.setenv("LAMBDANET_FAULTS", "1")  # the workers honour the driver's fault spec
        services = Services.open()
        request = TrainRequest(data=str(DATA), config=parse_config(small_config(60)), model_name="itsacat",
                               workers=2, strategy="neuron", store_url=redis.url, epochs_per_round=20)
        faulty = Driver(services, faults=[FAULT], retry_backoff_s=0.0).train(request)
        fresh = Driver(services).start(request)
        try:
            return World(home, _built(services, out["run_id"]), _built(services, faulty.run_id), fresh, password)
        finally:
            services.close()


def ledger_calls(home: Path, run_id: str) -> list[CallRow]:
    with services_at(home) as services:
        return services.ledger.calls(run_id)


def forward(params: dict[str, np.ndarray], X: np.ndarray, activations: list[str]) -> np.ndarray:
    """P(cat) for each column of X (n_x, m): the MLP's forward pass written out here in float64,
    A_l = g_l(W_l A_{l-1} + b_l) — not lambdanet's own code."""
    A = X.astype(np.float64)
    for layer, act in enumerate(activations, start=1):
        Z = params[f"W{layer}"].astype(np.float64) @ A + params[f"b{layer}"].astype(np.float64)
        if act == "relu":
            A = np.maximum(Z, 0.0)
        elif act == "sigmoid":
            A = 1.0 / (1.0 + np.exp(-Z))
        else:
            raise AssertionError(f"the test's forward pass has no {act}")
    return A[0]


def expected(built: BuiltRun) -> dict:
    """The test set's confusion counts and rates, computed here from the model's own outputs."""
    ds = load_dataset(DATA)
    X = ds.x_test.reshape(len(ds.x_test), -1).T / 255.0  # (12288, 50)
    p_cat = forward(built.params, X, built.activations)  # (50,)
    assert np.min(np.abs(p_cat - 0.5)) > 1e-4  # no prediction hangs on float32 vs float64 rounding
    pred = (p_cat > 0.5).astype(int)
    y = ds.y_test.astype(int)
    tp = int(((pred == 1) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    def ratio(a: int, b: int) -> float | None:
        return a / b if b else None

    return {"TP": tp, "TN": tn, "FP": fp, "FN": fn, "precision": ratio(tp, tp + fp),
            "specificity": ratio(tn, tn + fp), "sensitivity": ratio(tp, tp + fn), "accuracy": (tp + tn) / len(y),
            "errors": sorted(int(i) for i in np.flatnonzero(pred != y)), "classes": ds.classes}


def from_calls(calls: list[CallRow]) -> dict:
    """What the ledger's call rows say, computed here: rounds, retried round attempts (a round's
    first try is its smallest attempt id), failed and retried calls, worker-seconds and the
    Lambda price of those calls (each billed to the millisecond, rounded up)."""
    first = {r: min(c.attempt for c in calls if c.round == r) for r in {c.round for c in calls}}
    retried = [c for c in calls if c.attempt != first[c.round]]
    seconds = [max(0.0, c.ended_at - c.started_at) for c in calls]
    billed_ms = sum(max(1, math.ceil(s * 1000)) for s in seconds)
    return {"rounds": len(first), "retries": len({(c.round, c.attempt) for c in retried}),
            "failed": [c for c in calls if not c.ok], "retried": retried, "worker_seconds": sum(seconds),
            "cost_usd": billed_ms / 1000 * 2048 / 1024 * GB_SECOND_USD + len(calls) * REQUEST_USD}


def test_report_numbers_match_independent_computation(world: World, tmp_path: Path) -> None:
    home, built = world.home, world.trained
    out = tmp_path / "r.html"
    res = cli(home, "report", built.run_id, "--out", str(out), "--images", str(IMAGES), "--json")
    assert res.returncode == 0, res.stderr
    assert str(out) in res.stderr  # the summary: stdout carries only the JSON
    exp = expected(built)
    assert 0 < len(exp["errors"]) < 50  # a meaningful confusion matrix: some right, some wrong
    doc = Elements(out.read_text(encoding="utf-8"))

    cells = {(int(a["data-true"]), int(a["data-pred"])): int(a["data-count"]) for a in doc.find() if "data-count" in a}
    assert cells == {(0, 0): exp["TN"], (0, 1): exp["FP"], (1, 0): exp["FN"], (1, 1): exp["TP"]}
    binary = {a["data-metric"]: a["data-value"] for _, a in doc.items
              if a.get("data-metric") and a.get("data-value") is not None}
    for key in ("TP", "TN", "FP", "FN"):
        assert int(doc.find(data_metric=key)[0]["data-value"]) == exp[key]
    assert float(doc.find(data_metric="precision")[0]["data-value"]) == pytest.approx(exp["precision"])
    assert float(doc.find(data_metric="specificity")[0]["data-value"]) == pytest.approx(exp["specificity"])
    assert float(doc.find(data_metric="sensitivity")[0]["data-value"]) == pytest.approx(exp["sensitivity"])
    assert float(binary["test_accuracy"]) == pytest.approx(exp["accuracy"])

    tiles = doc.with_class("error-tile")
    assert sorted(int(t["data-index"]) for t in tiles) == exp["errors"]  # one tile per error
    ds = load_dataset(DATA)
    for t in tiles:
        i = int(t["data-index"])
        assert t["data-true"] == exp["classes"][int(ds.y_test[i])] and t["data-pred"] != t["data-true"]

    photos = {p["data-name"]: p for p in doc.with_class("photo")}
    assert set(photos) == {p.name for p in IMAGES.iterdir()}
    for path in IMAGES.iterdir():
        x = photo_to_array(path.read_bytes(), (64, 64, 3))[None]  # (1, 64, 64, 3): what serve and predict answer with
        p = forward(built.params, x.reshape(1, -1).T / 255.0, built.activations)
        assert photos[path.name]["data-label"] == exp["classes"][int(p[0] > 0.5)]

    (line,) = res.stdout.splitlines()  # one JSON object on one line
    data = json.loads(line)
    assert data["test"]["binary"] == {k: exp[k] for k in ("TN", "FP", "FN", "TP")}
    assert data["test"]["precision"] == pytest.approx(exp["precision"])
    assert [m["index"] for m in data["mislabelled"]] == exp["errors"]
    assert [e["epoch"] for e in data["epochs"]] == list(range(1, len(built.costs) + 1))
    assert data["epochs"][-1]["cost"] == pytest.approx(built.costs[-1])
    assert {p["name"] for p in data["photos"]} == set(photos) and all(p["error"] is None for p in data["photos"])
    calls = ledger_calls(home, built.run_id)
    led = from_calls(calls)
    assert (led["rounds"], led["retries"], led["failed"]) == (3, 0, [])  # 300 epochs, 100 a round, no fault
    summary = data["summary"]
    assert (summary["workers"], summary["strategy"]) == (2, "neuron")  # what `lambdanet train` was told
    assert (summary["rounds"], summary["retries"], summary["worker_calls"]) == (3, 0, len(calls))
    assert summary["epochs_run"] == 300 and summary["stop_reason"] == "epoch_limit"
    assert summary["worker_seconds"] == pytest.approx(led["worker_seconds"], abs=0.01)
    assert summary["estimated_cost_usd"] == pytest.approx(led["cost_usd"], rel=0.01)
    assert summary["store_bytes"] > 0  # the workers' traffic (not in the ledger's rows: only its sign here)
    assert [(c["round"], c["attempt"], c["worker"], c["ok"]) for c in data["calls"]] == \
        [(c.round, c.attempt, c.worker, c.ok) for c in calls]
    assert sorted(c["worker"] for c in data["calls"]) == [0, 0, 0, 1, 1, 1]


def test_timeline_marks_failed_and_retried_calls(world: World, tmp_path: Path) -> None:
    """The faulty run's failed and retried calls, as the ledger's call rows say, are the ones the
    report's JSON and timeline mark; the store's password never reaches the report."""
    home, built = world.home, world.faulty
    calls = ledger_calls(home, built.run_id)
    led = from_calls(calls)
    # the fault happened, where it was injected: round 2's first try failed, and only that round was tried again
    assert led["failed"] and {(c.round, c.attempt) for c in led["failed"]} == {(2, min(c.attempt for c in calls
                                                                                    if c.round == 2))}
    assert led["retries"] == 1 and {c.round for c in led["retried"]} == {2}
    assert FAULT["worker"] in {c.worker for c in led["failed"]}
    out = tmp_path / "r.html"
    res = cli(home, "report", built.run_id, "--out", str(out), "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["summary"]["retries"] == led["retries"] and data["summary"]["workers"] == 2
    assert data["summary"]["rounds"] == led["rounds"] == 3 and data["summary"]["worker_calls"] == len(calls)
    assert len(data["calls"]) == len(calls)
    assert sorted(c["worker"] for c in data["calls"] if not c["ok"]) == sorted(c.worker for c in led["failed"])
    assert sorted((c["round"], c["attempt"], c["worker"]) for c in data["calls"] if c["retry"]) == \
        sorted((c.round, c.attempt, c.worker) for c in led["retried"])
    text = out.read_text()
    doc = Elements(text)
    assert doc.find(id="timeline")[0]["data-calls"] == str(len(calls))
    assert len(doc.with_class("failed")) == len(led["failed"])
    assert len(doc.with_class("retry")) == len([c for c in led["retried"] if c.ok])
    assert world.redis_password not in text and world.redis_password not in res.stdout  # redacted
    assert "***" in data["summary"]["store"]


def test_unknown_run_is_one_line_exit_2(world: World, tmp_path: Path) -> None:
    home = world.home
    res = cli(home, "report", "r-nope", "--out", str(tmp_path / "x.html"))
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1 and "r-nope" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "x.html").exists()


def test_bad_photos_get_a_message_and_the_rest_renders(world: World, tmp_path: Path) -> None:
    home, built = world.home, world.trained
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "cat.jpeg").write_bytes((IMAGES / "grumpy_cat.jpeg").read_bytes())
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (photos / "notes.txt").write_text("hello")
    out = tmp_path / "r.html"
    res = cli(home, "report", built.run_id, "--out", str(out), "--images", str(photos))
    assert res.returncode == 0, res.stderr
    assert str(out) in res.stdout and "3 photo(s)" in res.stdout  # no --json: the summary is on stdout
    doc = Elements(out.read_text(encoding="utf-8"))
    failed = {p["data-name"] for p in doc.with_class("photo-error")}
    assert failed == {"broken.jpg", "notes.txt"}
    ok = [p for p in doc.with_class("photo") if "photo-error" not in p["class"]]
    assert [p["data-name"] for p in ok] == ["cat.jpeg"] and ok[0]["data-label"] in ("cat", "non-cat")
    assert out.read_text().count('class="photo-message"') == 2


def test_run_without_epochs_renders_with_a_note(world: World, tmp_path: Path) -> None:
    home, fresh = world.home, world.fresh
    with services_at(home) as services:
        assert services.ledger.epochs(fresh) == [] and services.ledger.get_run(fresh).status == "running"
    out = tmp_path / "r.html"
    res = cli(home, "report", fresh, "--out", str(out), "--json")
    assert res.returncode == 0, res.stderr
    text = out.read_text()
    assert f"No epochs recorded yet for run {fresh}" in text and "no registered model yet" in text
    data = json.loads(res.stdout)
    assert data["epochs"] == [] and data["test"] is None and len(data["notes"]) == 2


def test_compare_two_runs(world: World, tmp_path: Path) -> None:
    home, built, other = world.home, world.trained, world.faulty
    out = tmp_path / "c.html"
    res = cli(home, "report", "--compare", built.run_id, other.run_id, "--out", str(out), "--json")
    assert res.returncode == 0, res.stderr
    runs = json.loads(res.stdout)["runs"]
    assert [r["run_id"] for r in runs] == [built.run_id, other.run_id]
    assert runs[0]["test_accuracy"] == pytest.approx(expected(built)["accuracy"])
    assert runs[1]["test_accuracy"] == pytest.approx(expected(other)["accuracy"])
    assert [len(r["costs"]) for r in runs] == [300, 60] == [len(built.costs), len(other.costs)]
    doc = Elements(out.read_text())
    assert [a["data-run"] for tag, a in doc.items if tag == "th" and "data-run" in a] == [built.run_id, other.run_id]
    res = cli(home, "report", built.run_id, other.run_id)
    assert res.returncode == 2 and "--compare" in res.stderr


def test_json_flag_and_out_file_follow_the_cli_convention(world: World, tmp_path: Path) -> None:
    """``--json`` prints the metrics on stdout and writes no HTML unless ``--out`` says where;
    without ``--json`` the HTML goes to report.html in the working folder; the old ``--json FILE``
    form is one line telling what replaced it, and writes nothing."""
    home, built = world.home, world.trained
    only_json = cli(home, "report", built.run_id, "--json", cwd=tmp_path)
    assert only_json.returncode == 0, only_json.stderr
    (line,) = only_json.stdout.splitlines()
    assert json.loads(line)["summary"]["epochs_run"] == 300 and list(tmp_path.iterdir()) == []
    assert f"report of run {built.run_id}:" in only_json.stderr and "written" not in only_json.stderr

    html = cli(home, "report", built.run_id, cwd=tmp_path)
    assert html.returncode == 0, html.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"] and "written to report.html" in html.stdout
    assert Elements((tmp_path / "report.html").read_text()).find(id="cost")[0]["data-epochs"] == "300"

    for old_form in (["--json", "metrics.json"], ["--json", "-"]):
        res = cli(home, "report", built.run_id, "--out", str(tmp_path / "x.html"), *old_form, cwd=tmp_path)
        assert res.returncode == 2 and "Traceback" not in res.stderr
        (err,) = res.stderr.strip().splitlines()
        assert "not a run id" in err and "--json is a flag" in err and "--out FILE" in err
    both_stdout = cli(home, "report", built.run_id, "--json", "--out", "-", cwd=tmp_path)
    assert both_stdout.returncode == 2 and "--out FILE" in both_stdout.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]  # the refused calls wrote nothing


@pytest.mark.browser
def test_report_renders_offline_in_chromium(world: World, tmp_path: Path, artifacts: Path) -> None:
    from playwright.sync_api import sync_playwright

    home, built = world.home, world.trained
    out = tmp_path / "report.html"
    res = cli(home, "report", built.run_id, "--out", str(out), "--images", str(IMAGES))
    assert res.returncode == 0, res.stderr
    n_errors = len(expected(built)["errors"])
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium",
                                     args=["--headless", "--no-sandbox", "--disable-gpu",
                                           "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            requested: list[str] = []
            page.on("request", lambda r: requested.append(r.url))
            page.goto(out.as_uri())
            page.wait_for_load_state("load")
            broken = page.evaluate("[...document.images].filter(i => !i.complete || i.naturalWidth === 0).length")
            n_images = page.evaluate("document.images.length")
            visible_tiles = page.locator("figure.error-tile:visible").count()
            photo_labels = page.locator("figure.photo .label").all_text_contents()
            page.screenshot(path=str(artifacts / "report_itsacat.png"), full_page=True)
        finally:
            browser.close()
    assert broken == 0 and n_images >= 3 + n_errors + 2  # cost, confusion, timeline, tiles, photos
    assert visible_tiles == n_errors
    assert len(photo_labels) == len(list(IMAGES.iterdir())) and set(photo_labels) <= {"cat", "non-cat"}
    assert all(u.startswith(("file:", "data:")) for u in requested), requested  # nothing fetched
