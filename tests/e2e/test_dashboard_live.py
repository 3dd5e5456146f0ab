"""The live dashboard on a real uvicorn server: its JSON routes, and — in headless Chromium — the
cost curve of a run gaining points while a trainer thread writes epoch rows to the ledger."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from lambdanet.config import parse_config
from lambdanet.data.readers import load_dataset, to_matrix, to_targets
from lambdanet.nn import reference
from lambdanet.ports.ledger import EpochRow, RunRecord
from lambdanet.serve.dashboard import router
from lambdanet.services import Services
from tests.conftest import free_port
from tests.e2e.report_support import DATA, small_config

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


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
        js = http.get("/runs/assets/chart.js")
        assert js.status_code == 200 and "LambdaChart" in js.text
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


def trainer(services: Services, run_id: str, epochs: int, started: threading.Event) -> threading.Thread:
    """A real training run (the reference trainer) writing each epoch's cost to the ledger as it goes."""
    cfg = parse_config(small_config(epochs))
    ds = load_dataset(DATA)
    X, Y = to_matrix(ds.x_train[:64], "float32"), to_targets(ds.y_train[:64], 2, "sigmoid", "float32")

    def on_epoch(epoch: int, cost: float) -> None:
        services.ledger.upsert_epochs(run_id, [EpochRow(run_id, epoch + 1, cost, cfg.learning_rate, 0.0)])
        started.set()
        time.sleep(0.05)  # slow enough for the page to see the curve grow

    def run() -> None:
        result = reference.train(cfg, X, Y, on_epoch=on_epoch)
        services.ledger.update_run(run_id, status="completed", ended_at=time.time(), stop_reason=result.stop_reason,
                                   metrics={"epochs_run": result.epochs_run, "final_cost": result.costs[-1]})

    return threading.Thread(target=run, daemon=True)


@pytest.mark.browser
def test_cost_curve_grows_while_the_run_trains(services: Services, base_url: str, artifacts: Path) -> None:
    from playwright.sync_api import sync_playwright

    epochs = 60
    new_run(services, "r-live", epochs)
    started = threading.Event()
    thread = trainer(services, "r-live", epochs, started)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            page.goto(f"{base_url}/runs")
            page.wait_for_selector("tr[data-run-id='r-live']", timeout=15_000)
            page.click("a:text('r-live')")
            page.wait_for_selector("svg.lc-chart", timeout=15_000)
            assert page.get_attribute("svg.lc-chart", "data-points") == "0"
            thread.start()
            assert started.wait(20)
            page.wait_for_function("document.querySelector('svg.lc-chart').dataset.points > 0", timeout=15_000)
            first = int(page.get_attribute("svg.lc-chart", "data-points") or 0)
            assert 0 < first < epochs
            page.wait_for_function(f"document.querySelector('svg.lc-chart').dataset.points > {first}",
                                   timeout=15_000)
            page.screenshot(path=str(artifacts / "dashboard_running.png"))
            page.wait_for_function(f"document.querySelector('svg.lc-chart').dataset.points == {epochs}",
                                   timeout=30_000)
            page.wait_for_function("document.getElementById('status').textContent === 'completed'", timeout=15_000)
            polyline = page.get_attribute("svg.lc-chart polyline", "points") or ""
            assert len(polyline.split()) == epochs
            assert page.text_content("#epochs-done") == str(epochs)
            page.screenshot(path=str(artifacts / "dashboard_completed.png"))
        finally:
            browser.close()
            thread.join(timeout=30)
    assert [e.epoch for e in services.ledger.epochs("r-live")] == list(range(1, epochs + 1))
