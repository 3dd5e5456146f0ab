"""The ``LAMBDANET_*`` settings: read by ``Settings.from_env`` alone, documented in one table, a bad
value one ConfigError line naming the variable (seconds: a number within their bounds)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from lambdanet.engine.session import lease_ttl, open_executor
from lambdanet.errors import ConfigError
from lambdanet.settings import Settings, seconds_env


def test_seconds_env_reads_numbers_within_their_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAMBDANET_X_S", raising=False)
    assert seconds_env("LAMBDANET_X_S") is None
    monkeypatch.setenv("LAMBDANET_X_S", "2.5")
    assert seconds_env("LAMBDANET_X_S") == 2.5
    for bad, why in (("soon", "is not a number of seconds"), ("0", "must be positive seconds"),
                     ("-1", "must be positive seconds"), ("inf", "must be positive seconds")):
        monkeypatch.setenv("LAMBDANET_X_S", bad)
        with pytest.raises(ConfigError, match=f"^LAMBDANET_X_S='{bad}' {why}$"):
            seconds_env("LAMBDANET_X_S")


def test_the_lease_ttl_is_60_s_unless_set_within_1_to_3600(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAMBDANET_LEASE_TTL_S", raising=False)
    assert lease_ttl() == 60.0
    monkeypatch.setenv("LAMBDANET_LEASE_TTL_S", "5")
    assert lease_ttl() == 5.0
    for bad in ("0.5", "7200"):
        monkeypatch.setenv("LAMBDANET_LEASE_TTL_S", bad)
        with pytest.raises(ConfigError, match=f"LAMBDANET_LEASE_TTL_S='{bad}' must be between 1 and 3600 seconds"):
            lease_ttl()


def _documented_variables() -> set[str]:
    """The ``LAMBDANET_*`` names in the first column of docs/configuration.md's settings table."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text(encoding="utf-8")
    section = text.split("## Settings (`LAMBDANET_*`)", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    return {name for cell in rows for name in re.findall(r"`(LAMBDANET_[A-Z0-9_]+)`", cell)}


def test_the_documented_settings_table_lists_exactly_the_variables_settings_reads() -> None:
    assert set(Settings.ENV) == set(Settings.model_fields)  # every field is read from one variable
    assert _documented_variables() == set(Settings.ENV.values())
    assert {"LAMBDANET_STORE", "LAMBDANET_EXECUTOR"} <= _documented_variables()


def test_every_variable_is_read_by_settings_and_a_bad_one_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    for name in Settings.ENV.values():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LAMBDANET_HOME", str(tmp_path))
    monkeypatch.setenv("LAMBDANET_STORE", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("LAMBDANET_LAMBDA_MEMORY_MB", "1024")
    monkeypatch.setenv("LAMBDANET_REGISTRY", "s3://b/p")
    monkeypatch.setenv("LAMBDANET_FAULTS", "1")
    monkeypatch.setenv("LAMBDANET_FAULTS_JSON", '[{"worker": 1}]')
    settings = Settings.from_env()
    assert settings.ledger_url == f"sqlite:///{tmp_path / 'ledger.db'}"
    assert (settings.store_url, settings.executor) == ("redis://127.0.0.1:6379/0", "local")
    assert settings.lambda_memory_mb == 1024
    assert (settings.registry_url, settings.faults, settings.faults_json) == ("s3://b/p", True, [{"worker": 1}])
    assert Settings.from_env(store_url="memory://").store_url == "memory://"  # a CLI option wins
    monkeypatch.delenv("LAMBDANET_HOME")
    assert Settings.from_env(default_home="/tmp/ln").home == Path("/tmp/ln")  # the functions' home
    for name, bad, message in (("LAMBDANET_LAMBDA_MEMORY_MB", "lots", "LAMBDANET_LAMBDA_MEMORY_MB: a positive number "
                                                                      "of MB, got 'lots'"),
                               ("LAMBDANET_LAMBDA_GB_S_USD", "-1", "LAMBDANET_LAMBDA_GB_S_USD: a price in USD"),
                               ("LAMBDANET_WORKERS", "two", "LAMBDANET_WORKERS: a positive number of workers"),
                               ("LAMBDANET_FAULTS_JSON", "[", "LAMBDANET_FAULTS_JSON is not valid JSON")):
        monkeypatch.setenv(name, bad)
        with pytest.raises(ConfigError, match=f"^{re.escape(message)}"):
            Settings.from_env()
        monkeypatch.delenv(name)


def test_the_lithops_config_reaches_the_executor_as_an_option(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    """``--lithops-config`` / ``$LAMBDANET_LITHOPS_CONFIG`` is an executor option of the settings:
    the engine opens the Lithops executor with it, and nothing writes it into the environment."""
    config = tmp_path / "lithops.json"
    config.write_text(json.dumps({"lithops": {"backend": "localhost", "log_level": "DEBUG"}}))
    monkeypatch.delenv("LAMBDANET_LITHOPS_CONFIG", raising=False)
    settings = Settings.from_env(lithops_config=str(config))
    assert settings.executor_options() == {"lithops_config": str(config)}
    ex = open_executor("lithops", "redis://127.0.0.1:6379/0", settings=settings)
    try:
        assert ex.base_config["lithops"]["log_level"] == "DEBUG"  # type: ignore[attr-defined]
    finally:
        ex.close()
    assert "LAMBDANET_LITHOPS_CONFIG" not in os.environ
    monkeypatch.setenv("LAMBDANET_LITHOPS_CONFIG", json.dumps({"lithops": {"backend": "localhost",
                                                                             "log_level": "INFO"}}))
    ex = open_executor("lithops", "redis://127.0.0.1:6379/0")  # the variable, inline JSON (the Lambda's)
    try:
        assert ex.base_config["lithops"]["log_level"] == "INFO"  # type: ignore[attr-defined]
    finally:
        ex.close()
