"""Fixtures shared by the fault tests: a small cat/non-cat slice and the engine's fault hook."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.engine_support import small_data


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_data(tmp_path_factory.mktemp("cats16"))


@pytest.fixture
def faults_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMBDANET_FAULTS", "1")  # inherited by worker processes and Lithops' runners
