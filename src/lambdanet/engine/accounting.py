"""Cost accounting of a run: worker calls, worker-seconds, bytes through the store, and what the
same calls would cost on AWS Lambda.

>>> acc = Accounting(memory_mb=2048)
>>> acc.add_call(seconds=12.5)
>>> acc.add_bytes(1_000_000)
>>> acc.estimated_cost_usd()        # GB-seconds x price + requests x price

Prices (x86, us-east-1, published by AWS; override with the environment variables
``LAMBDANET_LAMBDA_GB_S_USD`` and ``LAMBDANET_LAMBDA_REQUEST_USD``): 0.0000166667 USD per
GB-second and 0.20 USD per million requests. The memory size defaults to 2048 MB
(``LAMBDANET_LAMBDA_MEMORY_MB`` or ``TrainRequest.lambda_memory_mb``); Lambda bills each call's
duration rounded up to the millisecond. Store traffic (Redis / ElastiCache) is reported in bytes,
not priced.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lambdanet.settings import Settings

GB_SECOND_USD = 0.0000166667
REQUEST_USD = 0.20 / 1_000_000
DEFAULT_MEMORY_MB = 2048


@dataclass
class Accounting:
    """Running totals for one run (restored from the ledger's metrics on resume)."""

    memory_mb: int = DEFAULT_MEMORY_MB
    worker_calls: int = 0
    worker_seconds: float = 0.0
    billed_ms: int = 0
    store_bytes: int = 0
    sync_seconds: float = 0.0
    rounds: int = 0
    retries: int = 0

    def add_call(self, seconds: float) -> None:
        self.worker_calls += 1
        self.worker_seconds += max(0.0, seconds)
        self.billed_ms += max(1, math.ceil(max(0.0, seconds) * 1000))

    def add_bytes(self, n: int) -> None:
        self.store_bytes += int(n)

    def estimated_cost_usd(self) -> float:
        gb_s = self.billed_ms / 1000 * self.memory_mb / 1024
        settings = Settings.from_env()
        price = GB_SECOND_USD if settings.lambda_gb_s_usd is None else settings.lambda_gb_s_usd
        per_million = REQUEST_USD * 1_000_000 if settings.lambda_request_usd is None else settings.lambda_request_usd
        req = per_million / 1_000_000
        return gb_s * price + self.worker_calls * req

    def to_metrics(self) -> dict[str, float]:
        return {
            "worker_calls": self.worker_calls,
            "worker_seconds": round(self.worker_seconds, 6),
            "billed_ms": self.billed_ms,
            "store_bytes": self.store_bytes,
            "sync_seconds": round(self.sync_seconds, 6),
            "rounds": self.rounds,
            "retries": self.retries,
            "lambda_memory_mb": self.memory_mb,
            "estimated_cost_usd": round(self.estimated_cost_usd(), 8),
        }

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, Any], memory_mb: int) -> Accounting:
        return cls(
            memory_mb=int(metrics.get("lambda_memory_mb", memory_mb)),
            worker_calls=int(metrics.get("worker_calls", 0)),
            worker_seconds=float(metrics.get("worker_seconds", 0.0)),
            billed_ms=int(metrics.get("billed_ms", 0)),
            store_bytes=int(metrics.get("store_bytes", 0)),
            sync_seconds=float(metrics.get("sync_seconds", 0.0)),
            rounds=int(metrics.get("rounds", 0)),
            retries=int(metrics.get("retries", 0)),
        )


def default_memory_mb() -> int:
    """``LAMBDANET_LAMBDA_MEMORY_MB``, else :data:`DEFAULT_MEMORY_MB`."""
    return Settings.from_env().lambda_memory_mb or DEFAULT_MEMORY_MB
