"""The live dashboard on a real uvicorn server: its JSON routes and vendored assets, and — in
headless Chromium — the uPlot cost curve of a real engine run (2 workers, rounds of 5 epochs)
gaining points while it trains, its data equal to the ledger's epoch rows and its line drawn."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

import lambdanet.serve
from lambdanet.ports.ledger import EpochRow, RunRecord
from lambdanet.serve.dashboard import router
from lambdanet.services import Services
from tests.conftest import free_port
from tests.e2e.report_support import DATA, small_config, start_paced_training

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
STATIC = Path(lambdanet.serve.__file__).parent / "static"
COST_RGB = (0x2F, 0x7E, 0xD8)  # the cost series' stroke in dashboard_run.js
# pixels of the chart's canvas in a colour (anti-aliased edges keep the RGB, with a lower alpha)
COUNT_PIXELS = """([r, g, b]) => {
  const c = document.querySelector('#cost-chart canvas');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4)
    if (d[i + 3] > 0 && Math.abs(d[i] - r) <= 2 && Math.abs(d[i + 1] - g) <= 2 && Math.abs(d[i + 2] - b) <= 2) n++;
  return n;
}"""


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """Run ``app`` on a real uvicorn server on a free loopback port; yield its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def services(home: Path) -> Iterator[Services]:
    svc = Services.open()
    yield svc
    svc.close()


@pytest.fixture
def base_url(services: Services) -> Iterator[str]:
    app = FastAPI()
    app.state.services = services
    app.include_router(router)
    with serving(app) as url:
        yield url


def new_run(services: Services, run_id: str, epochs: int) -> None:
    services.ledger.create_run(RunRecord(
        run_id=run_id, status="running", kind="mlp", data=str(DATA), model="itsacat", created_at=time.time(),
        started_at=time.time(), config={"config": small_config(epochs), "workers": 2, "strategy": "data"}))


def test_json_routes(services: Services, base_url: str) -> None:
    new_run(services, "r-api", 20)
    services.ledger.upsert_epochs("r-api", [EpochRow("r-api", i, 1.0 / i, 0.01, 0.1) for i in range(1, 6)])
    with httpx.Client(base_url=base_url, timeout=10) as http:
        runs = http.get("/api/runs").json()["runs"]
        assert [(r["run_id"], r["status"], r["epochs_done"], r["epochs_total"]) for r in runs] == [
            ("r-api", "running", 5, 20)]
        one = http.get("/api/runs/r-api").json()
        assert one["workers"] == 2 and one["strategy"] == "data" and one["last_cost"] == pytest.approx(0.2)
        assert one["eta_seconds"] is not None and one["eta_seconds"] >= 0
        rows = http.get("/api/runs/r-api/epochs", params={"after": 3}).json()["epochs"]
        assert [r["epoch"] for r in rows] == [4, 5] and rows[0]["cost"] == pytest.approx(0.25)
        missing = http.get("/api/runs/r-missing")
        assert missing.status_code == 404 and "r-missing" in missing.json()["error"]
        bad = http.get("/api/runs/r-api/epochs", params={"after": "ten"})
        assert bad.status_code == 400 and "after" in bad.json()["error"]
        page = http.get("/runs/r-missing")
        assert page.status_code == 404 and "r-missing" in page.text
        for name, media in (("uPlot.iife.min.js", "text/javascript"), ("uPlot.min.css", "text/css"),
                            ("dashboard_run.js", "text/javascript")):
            got = http.get(f"/runs/assets/{name}")
            assert got.status_code == 200 and got.headers["content-type"].startswith(media)
            assert got.content == (STATIC / name).read_bytes()
        assert http.get("/runs/assets/uPlot.LICENSE").status_code == 404  # only the listed files
        assert http.get("/runs/assets/..%2Fdashboard.py").status_code == 404
        services.ledger.update_run("r-api", status="completed", ended_at=time.time(),
                                   metrics={"test_accuracy": 0.7})
        done = http.get("/api/runs/r-api").json()
        assert done["status"] == "completed" and done["eta_seconds"] is None and done["test_accuracy"] == 0.7


def test_dashboard_is_part_of_the_serve_app(services: Services) -> None:
    from lambdanet.serve.app import create_app

    new_run(services, "r-serve", 10)
    with serving(create_app(services.registry, preload=False)) as url:
        got = httpx.get(f"{url}/api/runs/r-serve", timeout=10)
    assert got.status_code == 200 and got.json()["run_id"] == "r-serve"


@pytest.mark.browser
def test_cost_curve_grows_while_a_real_run_trains(services: Services, base_url: str, artifacts: Path,
                                                  tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    epochs = 60
    trainer: subprocess.Popen[str] | None = None
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            page.goto(f"{base_url}/runs")  # the browser is up before the run starts
            trainer = start_paced_training(Path(services.settings.home), tmp_path, epochs=epochs, epochs_per_round=5)
            deadline = time.monotonic() + 30
            while not services.ledger.list_runs(limit=1):  # the driver created the run
                assert trainer.poll() is None and time.monotonic() < deadline, "the driver did not create a run"
                time.sleep(0.05)
            run_id = services.ledger.list_runs(limit=1)[0].run_id
            page.reload()
            row = page.wait_for_selector(f"tr[data-run-id='{run_id}']", timeout=15_000)
            assert row is not None and "running" in (row.text_content() or "")
            page.click(f"a:text('{run_id}')")
            page.wait_for_function("document.getElementById('cost-chart').dataset.points > 0", timeout=30_000)
            first = int(page.get_attribute("#cost-chart", "data-points") or 0)
            assert 0 < first < epochs, "the run finished before the page saw it training"
            page.screenshot(path=str(artifacts / "dashboard_running.png"))
            page.evaluate("window.costChart.setScale('x', {min: 1, max: 2})")  # zoomed in, as a drag does
            page.wait_for_function(f"document.getElementById('cost-chart').dataset.points > {first}",
                                   timeout=30_000)
            page.wait_for_function(f"document.getElementById('cost-chart').dataset.points == {epochs}",
                                   timeout=60_000)
            page.wait_for_function("document.getElementById('status').textContent === 'completed'", timeout=30_000)
            x_scale = "[window.costChart.scales.x.min, window.costChart.scales.x.max]"
            assert page.evaluate(x_scale) == [1, 2]  # the zoom survived the points that arrived
            page.dblclick("#cost-chart .u-over")  # uPlot's reset: the whole run again
            assert page.evaluate(x_scale) == [1, epochs]
            shown = page.evaluate("window.costChart.data")  # what uPlot draws: [epochs, costs]
            rows = services.ledger.epochs(run_id)
            assert len(shown) == 2 and shown[0] == [e.epoch for e in rows] == list(range(1, epochs + 1))
            assert shown[1] == pytest.approx([e.cost for e in rows], rel=1e-12)
            assert page.evaluate("[...document.querySelectorAll('#cost-chart canvas')].length") == 1
            assert page.evaluate(COUNT_PIXELS, list(COST_RGB)) > 100  # the cost line is on the canvas
            legend = page.text_content("#cost-chart .u-legend") or ""
            assert "cost" in legend and "accuracy" not in legend  # the MLP engine records no accuracy per epoch
            assert page.text_content("#epochs-done") == str(epochs)
            assert page.text_content("#workers") == "2 (neuron)"
            page.screenshot(path=str(artifacts / "dashboard_completed.png"))
        finally:
            browser.close()
            if trainer is not None:
                try:
                    out, err = trainer.communicate(timeout=120)
                except subprocess.TimeoutExpired:
                    trainer.kill()
                    out, err = trainer.communicate()
    assert trainer is not None
    assert trainer.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["run_id"] == run_id and result["status"] == "completed" and result["epochs_run"] == epochs
    assert [e.epoch for e in services.ledger.epochs(run_id)] == list(range(1, epochs + 1))


@pytest.mark.browser
def test_accuracy_curves_where_epoch_rows_carry_them(services: Services, base_url: str, artifacts: Path) -> None:
    """A run whose epoch rows carry test/train accuracy (as the CNN strategy records them) gets
    both accuracy series next to the cost, with the rows' values; epochs without one are gaps."""
    from playwright.sync_api import sync_playwright

    new_run(services, "r-acc", 8)
    rows = [EpochRow("r-acc", i, 2.0 / i, 0.01, 0.1,
                     {"test_accuracy": 0.5 + 0.05 * i, "train_accuracy": 0.6 + 0.04 * i} if i % 2 == 0 else {})
            for i in range(1, 9)]
    services.ledger.upsert_epochs("r-acc", rows)
    services.ledger.update_run("r-acc", status="completed", ended_at=time.time())
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            page.goto(f"{base_url}/runs/r-acc")
            page.wait_for_function("document.getElementById('cost-chart').dataset.points == 8", timeout=30_000)
            shown = page.evaluate("window.costChart.data")
            labels = page.evaluate("window.costChart.series.map(s => s.label)")
            legend = page.text_content("#cost-chart .u-legend") or ""
            page.screenshot(path=str(artifacts / "dashboard_accuracy.png"))
        finally:
            browser.close()
    assert labels == ["epoch", "cost", "test accuracy", "train accuracy"] and "test accuracy" in legend
    assert shown[0] == [r.epoch for r in rows] and shown[1] == pytest.approx([r.cost for r in rows])
    assert shown[2] == [r.extra.get("test_accuracy") for r in rows]
    assert shown[3] == [r.extra.get("train_accuracy") for r in rows]
