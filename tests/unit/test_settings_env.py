"""Seconds read from the environment (the lease's time to live, the durable function's limits):
one ConfigError line naming the variable for anything but a number within its bounds."""

from __future__ import annotations

import pytest

from lambdanet.engine.session import lease_ttl
from lambdanet.errors import ConfigError
from lambdanet.settings import seconds_env


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
