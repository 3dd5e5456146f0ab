"""Published figures the plan prices and times a run on AWS Lambda with (us-east-1, on demand).

Every figure is a field of :class:`LambdaFigures` with its source beside it; ``lambdanet plan
--json`` prints them under ``assumptions.lambda``. The x86 GB-second and request prices are the
engine's own (:mod:`lambdanet.engine.accounting`), so a plan and a run's
``estimated_cost_usd`` price a worker-second alike.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from lambdanet.engine.accounting import GB_SECOND_USD, REQUEST_USD

Arch = Literal["x86_64", "arm64"]

MIN_MEMORY_MB = 128
MAX_MEMORY_MB = 10_240
MB_PER_VCPU = 1769  # AWS: "at 1,769 MB, a function has the equivalent of one vCPU"
MAX_VCPUS = 6  # AWS: up to 6 vCPUs at 10,240 MB


class LambdaFigures(BaseModel):
    """AWS Lambda's published prices and limits, and the assumptions the plan adds to them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gb_second_usd_x86: float = GB_SECOND_USD  # aws.amazon.com/lambda/pricing
    gb_second_usd_arm64: float = 0.0000133334  # the same page, Arm (Graviton2) price
    request_usd: float = REQUEST_USD  # $0.20 per million requests
    # durable functions (the driver): $8.00 per million durable operations (steps, waits), as the
    # Lambda pricing page states it; data written $0.25/GB and kept $0.15/GB-month are left out:
    # a step's result is a few hundred bytes
    durable_operation_usd: float = 8.00 / 1_000_000
    mb_per_vcpu: int = MB_PER_VCPU
    max_vcpus: int = MAX_VCPUS
    # per-function network, measured by others between Lambda and S3 / EC2: 50-88 MB/s; the plan
    # takes the middle and lists the range as uncertain
    network_low_bytes_s: float = 50e6
    network_high_bytes_s: float = 88e6
    # the store: ElastiCache Redis in the function's VPC; one collective step is one pipelined
    # round trip (plus a BLPOP wake-up): assumed 1 ms. The node's network (cache.t4g.small, the
    # stack's default: "up to 5 Gbit/s") bounds every worker's traffic together
    store_step_latency_s: float = 0.001
    store_node_bytes_s: float = 625e6
    store_node_usd_per_hour: float = 0.032  # cache.t4g.small on demand
    # start-up (assumptions): a cold start of the container image (python, numpy; + torch for a
    # CNN), billed since INIT is billed; Lithops' per-round job overhead (upload, invoke, polling)
    cold_start_s_numpy: float = 3.0
    cold_start_s_torch: float = 8.0
    round_overhead_s: float = 1.5
    driver_memory_mb: int = 3008  # deploy/template.yaml DriverMemoryMB default
    # the driver's durable operations: begin + finish steps, one step per round (and a wait when a
    # round does not fit the invocation: counted per round, an upper bound)
    durable_ops_per_run: int = 2
    durable_ops_per_round: int = 2

    def gb_second_usd(self, arch: Arch) -> float:
        return self.gb_second_usd_arm64 if arch == "arm64" else self.gb_second_usd_x86

    def vcpus(self, memory_mb: int) -> float:
        """The CPU share a function of ``memory_mb`` gets: memory / 1,769 MB, at most 6."""
        return min(float(self.max_vcpus), memory_mb / self.mb_per_vcpu)

    @property
    def network_bytes_s(self) -> float:
        return (self.network_low_bytes_s + self.network_high_bytes_s) / 2


LAMBDA = LambdaFigures()
