"""The live dashboard on a real uvicorn server: its JSON routes, and — in headless Chromium — the
cost curve of a real engine run (2 workers, rounds of 5 epochs) gaining points while it trains."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI

from lambdanet.config import parse_config
from lambdanet.data.readers import load_dataset
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


class PacedProgress:
    """The driver's progress sink, slowed down so a browser polling once a second sees the run's
    rounds arrive one after another (the driver calls it after each round's ledger write)."""

    def __init__(self) -> None:
        self.epochs: list[int] = []

    def start(self, total_epochs: int, done_epochs: int) -> None:
        pass

    def update(self, epoch: int, cost: float) -> None:
        self.epochs.append(epoch)
        time.sleep(0.05)

    def finish(self) -> None:
        pass


def small_npz(folder: Path, m: int = 64) -> Path:
    """The first ``m`` training and 20 test images of catvnoncat as an .npz data set."""
    ds = load_dataset(DATA)
    path = folder / "cats.npz"
    np.savez(path, x=ds.x_train[:m], y=ds.y_train[:m], x_test=ds.x_test[:20], y_test=ds.y_test[:20],
             classes=np.array(ds.classes))
    return path


@pytest.mark.browser
def test_cost_curve_grows_while_a_real_run_trains(services: Services, base_url: str, artifacts: Path,
                                                  tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    from lambdanet.engine.driver import Driver, TrainRequest

    epochs, per_round = 60, 5
    request = TrainRequest(data=str(small_npz(tmp_path)), config=parse_config(small_config(epochs)),
                           model_name="itsacat", workers=2, strategy="neuron", epochs_per_round=per_round)
    progress = PacedProgress()
    results: list[object] = []
    thread = threading.Thread(target=lambda: results.append(Driver(services, progress).train(request)), daemon=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            thread.start()
            deadline = time.monotonic() + 30
            while not services.ledger.list_runs(limit=1):  # the driver created the run
                assert time.monotonic() < deadline, "the driver did not create a run"
                time.sleep(0.05)
            run_id = services.ledger.list_runs(limit=1)[0].run_id
            page.goto(f"{base_url}/runs")
            page.wait_for_selector(f"tr[data-run-id='{run_id}']", timeout=15_000)
            page.click(f"a:text('{run_id}')")
            page.wait_for_function("document.querySelector('svg.lc-chart').dataset.points > 0", timeout=30_000)
            first = int(page.get_attribute("svg.lc-chart", "data-points") or 0)
            assert 0 < first < epochs, "the run finished before the page saw it training"
            page.wait_for_function(f"document.querySelector('svg.lc-chart').dataset.points > {first}",
                                   timeout=30_000)
            page.screenshot(path=str(artifacts / "dashboard_running.png"))
            page.wait_for_function(f"document.querySelector('svg.lc-chart').dataset.points == {epochs}",
                                   timeout=60_000)
            page.wait_for_function("document.getElementById('status').textContent === 'completed'", timeout=30_000)
            polyline = page.get_attribute("svg.lc-chart polyline", "points") or ""
            assert len(polyline.split()) == epochs
            assert page.text_content("#epochs-done") == str(epochs)
            assert page.text_content("#workers") == "2 (neuron)"
            page.screenshot(path=str(artifacts / "dashboard_completed.png"))
        finally:
            browser.close()
            thread.join(timeout=60)
    assert results and getattr(results[0], "status", None) == "completed"
    rows = services.ledger.epochs(run_id)
    assert [e.epoch for e in rows] == list(range(1, epochs + 1)) and progress.epochs == list(range(1, epochs + 1))
