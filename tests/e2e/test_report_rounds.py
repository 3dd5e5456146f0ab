"""The report's "Rounds and worker calls" on REAL engine runs (Driver, 2 workers, local executor,
in-memory tensor store): the engine's attempt ids grow across the whole run (``INCR
ln:{run}:attempts``), so a retry is a second or later attempt OF THE SAME ROUND — never "every
round after the first". Asserted on the report's timeline data (what the plot is drawn from), its
JSON and the rendered HTML."""

from __future__ import annotations

from pathlib import Path

import pytest

from lambdanet.engine.driver import Driver, TrainRequest
from lambdanet.report.collect import collect
from lambdanet.report.html import render_report
from lambdanet.services import Services
from tests.e2e.engine_support import config, open_services, small_data
from tests.e2e.report_support import Elements


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_data(tmp_path_factory.mktemp("cats16"))


def _train(services: Services, data: Path, name: str, faults: list[dict] | None = None) -> str:
    res = Driver(services, faults=faults or [], retry_backoff_s=0.0).train(TrainRequest(
        data=str(data), config=config(epochs=6, batch_size=64), workers=2, strategy="neuron",
        store_url=f"memory://{name}", epochs_per_round=2))
    assert res.status == "completed" and res.rounds == 3
    return res.run_id


def _report_html(services: Services, run_id: str) -> Elements:
    return Elements(render_report(collect(services, run_id, predictions=False)))


@pytest.mark.timeout(120)
def test_clean_multi_round_run_has_no_retries(home: Path, data: Path) -> None:
    services = open_services()
    run_id = _train(services, data, "clean")
    calls = services.ledger.calls(run_id)
    assert sorted({(c.round, c.attempt) for c in calls}) == [(1, 0), (2, 1), (3, 2)]  # run-wide attempt ids

    doc = _report_html(services, run_id)
    retry_rows = doc.with_class("retry")
    assert retry_rows == [], f"a clean run shows {len(retry_rows)} retried call(s) in the report"
    section = doc.find(id="timeline")[0]
    assert (section["data-calls"], section["data-retried-calls"], section["data-failed-calls"]) == ("6", "0", "0")

    report = collect(services, run_id, predictions=False)
    bars = report.timeline
    assert len(bars) == 6 and all(b.state == "ok" and b.try_no == 0 and not b.retry for b in bars)
    assert report.summary["retries"] == 0
    js = report.to_json()
    assert [(c["round"], c["try"], c["retry"]) for c in js["calls"]] == [(r, 0, False) for r in (1, 1, 2, 2, 3, 3)]
    services.close()


@pytest.mark.timeout(120)
def test_only_the_second_attempt_of_a_failed_round_is_a_retry(
        home: Path, data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMBDANET_FAULTS", "1")
    services = open_services()
    run_id = _train(services, data, "hurt",
                    [{"round": 2, "attempt": 0, "worker": 0, "action": "raise", "after_epochs": 1}])
    calls = services.ledger.calls(run_id)
    assert sorted({(c.round, c.attempt) for c in calls}) == [(1, 0), (2, 1), (2, 2), (3, 3)]

    doc = _report_html(services, run_id)
    retry_rows = len(doc.with_class("retry"))
    assert retry_rows == 2, f"the report shows {retry_rows} retried calls; only round 2's 2nd attempt (2 calls) is"
    rows = {(int(a["data-round"]), int(a["data-attempt"]), int(a["data-worker"])): a["class"]
            for a in doc.find() if "data-attempt" in a}
    assert rows == {(2, 1, 0): "failed", (2, 1, 1): "failed", (2, 2, 0): "retry", (2, 2, 1): "retry"}
    section = doc.find(id="timeline")[0]
    assert (section["data-calls"], section["data-retried-calls"], section["data-failed-calls"]) == ("8", "2", "2")

    report = collect(services, run_id, predictions=False)
    states = {(b.call.round, b.call.attempt, b.call.worker): (b.state, b.try_no) for b in report.timeline}
    assert states == {
        (1, 0, 0): ("ok", 0), (1, 0, 1): ("ok", 0),
        (2, 1, 0): ("failed", 0), (2, 1, 1): ("failed", 0),
        (2, 2, 0): ("retry", 1), (2, 2, 1): ("retry", 1),
        (3, 3, 0): ("ok", 0), (3, 3, 1): ("ok", 0),
    }
    assert report.summary["retries"] == 1
    js = report.to_json()
    assert sorted((c["round"], c["attempt"]) for c in js["calls"] if c["retry"]) == [(2, 2), (2, 2)]
    services.close()
