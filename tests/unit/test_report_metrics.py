"""Report metrics against brute-force counting, and the figures/HTML pieces that need no run."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from lambdanet.ports.ledger import CallRow, EpochRow, RunRecord
from lambdanet.report import plots
from lambdanet.report.collect import RunReport, clean_json, summarise
from lambdanet.report.html import render_report
from lambdanet.report.metrics import binary_counts, confusion_matrix, evaluate, per_class_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 6).flatmap(
    lambda c: st.tuples(st.just(c), st.lists(st.tuples(st.integers(0, c - 1), st.integers(0, c - 1)),
                                             min_size=1, max_size=80))))
def test_confusion_and_rates_match_counting(case: tuple[int, list[tuple[int, int]]]) -> None:
    n, pairs = case
    t = np.array([a for a, _ in pairs])
    p = np.array([b for _, b in pairs])
    cm = confusion_matrix(t, p, n)
    for i in range(n):
        for j in range(n):
            assert cm[i, j] == sum(1 for a, b in pairs if a == i and b == j)
    rows = per_class_metrics(cm, [str(i) for i in range(n)])
    for c, r in enumerate(rows):
        tp = sum(1 for a, b in pairs if a == c and b == c)
        fp = sum(1 for a, b in pairs if a != c and b == c)
        fn = sum(1 for a, b in pairs if a == c and b != c)
        tn = len(pairs) - tp - fp - fn
        assert (r.tp, r.fp, r.fn, r.tn, r.support) == (tp, fp, fn, tn, tp + fn)
        assert r.precision == (pytest.approx(tp / (tp + fp)) if tp + fp else None)
        assert r.recall == (pytest.approx(tp / (tp + fn)) if tp + fn else None)
        assert r.specificity == (pytest.approx(tn / (tn + fp)) if tn + fp else None)
        assert r.fpr == (pytest.approx(fp / (fp + tn)) if fp + tn else None)
        if r.precision and r.recall:
            assert r.f1 == pytest.approx(2 * r.precision * r.recall / (r.precision + r.recall))


def test_binary_counts_and_evaluation_json() -> None:
    y = np.array([0, 0, 1, 1, 1, 0])
    proba1 = np.array([0.1, 0.7, 0.9, 0.2, 0.6, 0.4])  # P(cat)
    ev = evaluate(np.stack([1 - proba1, proba1], axis=1), y, ["non-cat", "cat"])
    assert binary_counts(ev.cm) == {"TN": 2, "FP": 1, "FN": 1, "TP": 2}
    assert list(ev.errors) == [1, 3]
    out = ev.to_json()
    assert out["accuracy"] == pytest.approx(4 / 6)
    assert out["precision"] == pytest.approx(2 / 3) and out["specificity"] == pytest.approx(2 / 3)
    json.dumps(out, allow_nan=False)  # plain JSON


def test_rates_with_empty_denominators_are_none_not_nan() -> None:
    ev = evaluate(np.array([[0.9, 0.1], [0.8, 0.2]]), np.array([0, 0]), ["a", "b"])
    assert ev.rows[1].precision is None and ev.rows[1].recall is None
    json.dumps(ev.to_json(), allow_nan=False)


def test_figures_are_png() -> None:
    cm = np.array([[5, 2], [1, 7]])
    calls = [CallRow("r", r, a, w, 10.0 + r + 0.3 * a, 10.8 + r + 0.3 * a, ok=(r, a, w) != (1, 0, 1))
             for r in range(3) for a in ((0, 1) if r == 1 else (0,)) for w in range(2)]
    for png in (plots.confusion(cm, ["non-cat", "cat"]), plots.confusion(np.eye(10, dtype=int), list("abcdefghij")),
                plots.cost_curve([1, 2, 3], [0.7, 0.6, 0.5], [(3, 0.8)]), plots.timeline(calls),
                plots.timeline([]), plots.compare_curves({"a": ([1, 2], [0.5, 0.4])})):
        assert png.startswith(PNG_MAGIC)
        with Image.open(io.BytesIO(png)) as im:
            assert im.width > 200 and im.height > 100
    tile = np.zeros((8, 8, 3), np.uint8)
    tile[2, 3] = (255, 0, 0)
    with Image.open(io.BytesIO(plots.image_png(tile, 32))) as im:
        assert im.size == (32, 32)
        assert im.convert("RGB").getpixel((13, 9)) == (255, 0, 0)  # nearest-neighbour x4
    assert plots.data_uri(b"x") == "data:image/png;base64,eA=="


def test_report_of_a_run_without_epochs_or_model_still_renders() -> None:
    run = RunRecord(run_id="r-empty", status="running", kind="mlp", config={"epochs": 10}, data="x.h5",
                    model="itsacat", created_at=1.0, started_at=2.0)
    rep = RunReport(run=run, epochs=[], calls=[], summary=summarise(run, [], []),
                    notes=["run r-empty has no epochs recorded yet (status: running)"])
    html = render_report(rep)
    assert "No epochs recorded yet for run r-empty" in html
    assert 'data-epochs="0"' in html and "no epochs recorded yet" in html
    assert 'id="mislabelled"' not in html


def test_summary_falls_back_on_ledger_rows_and_redacts_secrets() -> None:
    run = RunRecord(run_id="r-1", status="completed", kind="mlp", data="d.h5",
                    config={"epochs": 3, "workers": 2, "store_url": "redis://:hunter2@10.0.0.1:6379/0"},
                    started_at=100.0, ended_at=104.5)
    epochs = [EpochRow("r-1", i, c, 0.01, 0.1) for i, c in ((1, 0.7), (2, 0.6), (3, float("nan")))]
    calls = [CallRow("r-1", 0, 0, 0, 100.0, 101.0, True), CallRow("r-1", 0, 1, 0, 101.0, 103.0, True)]
    s = summarise(run, epochs, calls)
    assert s["epochs_run"] == 3 and s["workers"] == 2 and s["wall_seconds"] == pytest.approx(4.5)
    assert s["worker_seconds"] == pytest.approx(3.0) and s["retries"] == 1 and s["worker_calls"] == 2
    assert s["final_cost"] is None  # NaN becomes null
    assert "hunter2" not in json.dumps(s) and "hunter2" not in json.dumps(clean_json(run.config))
