"""The Lambda cost estimate against AWS's published prices, written here (x86, us-east-1, as
``lambdanet.engine.accounting`` models): $0.0000166667 per GB-second and $0.20 per million
requests; duration billed per call, rounded up to the millisecond."""

from __future__ import annotations

import pytest

from lambdanet.engine.accounting import Accounting

GB_SECOND_USD = 0.0000166667  # https://aws.amazon.com/lambda/pricing/ (x86, first 6 billion GB-s/month)
PER_MILLION_REQUESTS_USD = 0.20


def test_lambda_cost_estimate_uses_the_published_prices() -> None:
    acc = Accounting(memory_mb=1024)
    acc.add_call(1.0)
    acc.add_call(0.0004)  # billed as 1 ms
    assert acc.worker_calls == 2 and acc.billed_ms == 1001
    expected = 1.001 * 1.0 * GB_SECOND_USD + 2 * PER_MILLION_REQUESTS_USD / 1e6
    assert acc.estimated_cost_usd() == pytest.approx(expected, rel=1e-12)
    again = Accounting.from_metrics(acc.to_metrics(), memory_mb=2048)
    assert again.memory_mb == 1024 and again.billed_ms == 1001 and again.worker_calls == 2


def test_a_million_one_second_calls_at_2048_mb() -> None:
    acc = Accounting()  # 2048 MB by default
    acc.worker_calls = 1_000_000
    acc.billed_ms = 1_000_000 * 1000
    # 2 GB x 1e6 s = 2e6 GB-s -> $33.3334; 1e6 requests -> $0.20
    assert acc.estimated_cost_usd() == pytest.approx(33.3334 + 0.20, rel=1e-9)
    assert acc.to_metrics()["estimated_cost_usd"] == pytest.approx(33.5334, rel=1e-9)


def test_duration_rounds_up_to_the_millisecond() -> None:
    acc = Accounting(memory_mb=512)
    for seconds in (0.0101, 0.0, -1.0, 2.0):  # 11 ms, 1 ms (minimum), 1 ms (clock skew), 2000 ms
        acc.add_call(seconds)
    assert acc.billed_ms == 11 + 1 + 1 + 2000
    assert acc.estimated_cost_usd() == pytest.approx(2.013 * 0.5 * GB_SECOND_USD + 4 * 0.2e-6, rel=1e-12)


def test_prices_can_be_overridden_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMBDANET_LAMBDA_GB_S_USD", "0.0000133334")  # the Arm price
    monkeypatch.setenv("LAMBDANET_LAMBDA_REQUEST_USD", "0.25")  # per million
    acc = Accounting(memory_mb=1024)
    acc.add_call(3.0)
    assert acc.estimated_cost_usd() == pytest.approx(3.0 * 0.0000133334 + 0.25e-6, rel=1e-12)
