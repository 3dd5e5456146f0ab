"""Every ``LAMBDANET_*`` environment variable, read in one place: :meth:`Settings.from_env`.

Everything lives under a home folder, ``$LAMBDANET_HOME`` (default ``~/.lambdanet``)::

    ~/.lambdanet/ledger.db      SQLite ledger (runs, epochs, worker calls)
    ~/.lambdanet/objects/       object store: runs/<id>/… checkpoints, models/<name>/… registry

Each default adapter can be replaced by a URL through an environment variable or a CLI option:
``LAMBDANET_LEDGER`` (``sqlite:///…`` | ``dynamodb://table?region=…``), ``LAMBDANET_OBJECTS``
(a folder | ``s3://bucket/prefix``), ``LAMBDANET_NOTIFIER`` (``console://`` | ``https://…`` |
``sns://arn``), ``LAMBDANET_STORE`` (``memory://`` | ``redis://host:port/db``) and
``LAMBDANET_EXECUTOR`` (``local`` | ``process`` | ``lithops``). The other variables
(:data:`Settings.ENV` names them all, docs/configuration.md lists them) tune the Lithops executor,
the cost accounting, the lease, archive limits, serving and the training Lambda. No other module
reads ``LAMBDANET_*`` from the environment: each asks ``Settings.from_env()`` (or is handed the
:class:`Settings` of its :class:`~lambdanet.services.Services`). A bad value is one
:class:`ConfigError` line naming the variable.

Usage::

    settings = Settings.from_env(store_url="redis://127.0.0.1:6379/0")   # CLI options override
    settings.lease_ttl_s, settings.executor_options()
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from lambdanet.errors import ConfigError

LEASE_TTL_BOUNDS_S = (1.0, 3600.0)  # LAMBDANET_LEASE_TTL_S


def seconds_env(name: str, low: float = 0.0, high: float = math.inf) -> float | None:
    """The number of seconds in ``$name`` (None when unset or empty), within ``low`` (exclusive
    when 0) … ``high``; anything else is one :class:`ConfigError` line naming the variable."""
    value = os.environ.get(name)
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a number of seconds") from None
    if not math.isfinite(number) or number <= 0 or number < low or number > high:
        bounds = f"between {low:g} and {high:g}" if math.isfinite(high) else "positive"
        raise ConfigError(f"{name}={value!r} must be {bounds} seconds")
    return number


def _text(name: str) -> str | None:
    return os.environ.get(name) or None


def _positive_int(name: str, what: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) <= 0:
        raise ConfigError(f"{name}: a positive {what}, got {raw!r}")
    return int(raw)


def _price(name: str) -> float | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        number = float(raw)
    except ValueError:
        number = -1.0
    if not math.isfinite(number) or number < 0:
        raise ConfigError(f"{name}: a price in USD (a number >= 0), got {raw!r}")
    return number


def _faults_json(name: str) -> list[dict[str, Any]]:
    raw = os.environ.get(name)
    if not raw:
        return []
    try:
        specs = json.loads(raw)
    except json.JSONDecodeError:
        raise ConfigError(f"{name} is not valid JSON") from None
    return [dict(f) for f in specs if isinstance(f, dict)] if isinstance(specs, list) else []


class Settings(BaseModel):
    """What the ``LAMBDANET_*`` variables say (None: the using module's documented default)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    home: Path
    ledger_url: str
    objects_url: str
    notifier_url: str
    store_url: str
    executor: str
    lithops_config: str | None = None  # a Lithops config file or inline JSON: an executor option
    lambda_memory_mb: int | None = None  # the cost accounting's Lambda memory (engine.accounting: 2048)
    lambda_gb_s_usd: float | None = None  # the price of a GB-second
    lambda_request_usd: float | None = None  # the price of a million requests
    lease_ttl_s: float | None = None  # a run's lease time to live (engine.session: 60 s)
    max_archive_bytes: int | None = None  # data.archives: 1 GiB
    api_key: str | None = None  # lambdanet serve's API key
    registry_url: str | None = None  # the serving Lambda's registry
    function_workers: int = 1  # the training Lambda's runs: workers, strategy, model name, …
    function_strategy: str = "neuron"
    function_model: str | None = None
    function_epochs_per_round: int | None = None
    function_round_seconds: float | None = None
    function_invocation_seconds: float | None = None  # a limit below the function's own (tests)
    faults: bool = False  # test-only fault injection, honoured by the workers
    faults_json: list[dict[str, Any]] = []  # the training Lambda's test faults

    # field -> the variable it is read from (docs/configuration.md's table lists exactly these)
    ENV: ClassVar[dict[str, str]] = {
        "home": "LAMBDANET_HOME", "ledger_url": "LAMBDANET_LEDGER", "objects_url": "LAMBDANET_OBJECTS",
        "notifier_url": "LAMBDANET_NOTIFIER", "store_url": "LAMBDANET_STORE", "executor": "LAMBDANET_EXECUTOR",
        "lithops_config": "LAMBDANET_LITHOPS_CONFIG", "lambda_memory_mb": "LAMBDANET_LAMBDA_MEMORY_MB",
        "lambda_gb_s_usd": "LAMBDANET_LAMBDA_GB_S_USD", "lambda_request_usd": "LAMBDANET_LAMBDA_REQUEST_USD",
        "lease_ttl_s": "LAMBDANET_LEASE_TTL_S", "max_archive_bytes": "LAMBDANET_MAX_ARCHIVE_BYTES",
        "api_key": "LAMBDANET_API_KEY", "registry_url": "LAMBDANET_REGISTRY",
        "function_workers": "LAMBDANET_WORKERS", "function_strategy": "LAMBDANET_STRATEGY",
        "function_model": "LAMBDANET_MODEL", "function_epochs_per_round": "LAMBDANET_EPOCHS_PER_ROUND",
        "function_round_seconds": "LAMBDANET_ROUND_SECONDS",
        "function_invocation_seconds": "LAMBDANET_INVOCATION_SECONDS",
        "faults": "LAMBDANET_FAULTS", "faults_json": "LAMBDANET_FAULTS_JSON",
    }

    @classmethod
    def from_env(cls, *, default_home: str | None = None, **overrides: str | None) -> Settings:
        """The settings of the environment, then ``overrides`` that are not None (CLI options:
        ``store_url``, ``executor``, ``lithops_config``, …). ``default_home``: the home when
        ``LAMBDANET_HOME`` is unset (the Lambda functions' ``/tmp/lambdanet``)."""
        env = cls.ENV
        home = Path(_text(env["home"]) or default_home or Path.home() / ".lambdanet").expanduser()
        low, high = LEASE_TTL_BOUNDS_S
        settings = cls(
            home=home,
            ledger_url=_text(env["ledger_url"]) or f"sqlite:///{home / 'ledger.db'}",
            objects_url=_text(env["objects_url"]) or str(home / "objects"),
            notifier_url=_text(env["notifier_url"]) or "console://",
            store_url=_text(env["store_url"]) or "memory://",
            executor=_text(env["executor"]) or "local",
            lithops_config=_text(env["lithops_config"]),
            lambda_memory_mb=_positive_int(env["lambda_memory_mb"], "number of MB"),
            lambda_gb_s_usd=_price(env["lambda_gb_s_usd"]),
            lambda_request_usd=_price(env["lambda_request_usd"]),
            lease_ttl_s=seconds_env(env["lease_ttl_s"], low, high),
            max_archive_bytes=_positive_int(env["max_archive_bytes"], "number of bytes"),
            api_key=_text(env["api_key"]),
            registry_url=_text(env["registry_url"]),
            function_workers=_positive_int(env["function_workers"], "number of workers") or 1,
            function_strategy=_text(env["function_strategy"]) or "neuron",
            function_model=_text(env["function_model"]),
            function_epochs_per_round=_positive_int(env["function_epochs_per_round"], "number of epochs"),
            function_round_seconds=seconds_env(env["function_round_seconds"]),
            function_invocation_seconds=seconds_env(env["function_invocation_seconds"]),
            faults=os.environ.get(env["faults"]) == "1",
            faults_json=_faults_json(env["faults_json"]),
        )
        given: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
        unknown = sorted(set(given) - set(cls.model_fields))
        if unknown:
            raise TypeError(f"Settings.from_env: unknown override(s) {', '.join(unknown)}")
        return settings.model_copy(update=given) if given else settings

    def executor_options(self) -> dict[str, Any]:
        """The options every executor is opened with (``adapters.open_executor(url, **options)``):
        the Lithops config travels here, never through the environment."""
        return {"lithops_config": self.lithops_config} if self.lithops_config else {}
