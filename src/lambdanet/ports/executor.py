"""The Executor port: start K worker calls and report each one's result or failure.

Usage::

    executor = adapters.open_executor("process")
    outcomes = executor.run(run_worker, [spec0, spec1], timeout_s=120.0)
    for o in outcomes:            # one per spec, in spec order
        if not o.ok:
            print(o.worker, o.error)   # "exit code -9", "timed out after 120 s", "ValueError: …"

``run_worker`` is a module-level function ``(spec: dict) -> dict`` taking and returning plain
JSON-able dicts (so it can cross a process or a cloud function boundary). All K calls run
*concurrently* — they meet at barriers, so an executor that ran them one after another would
deadlock. ``run`` returns when every call finished, failed or passed ``timeout_s``; a call
still running at the deadline is reported as failed (and killed where the executor can).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

WorkerFunction = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class CallOutcome:
    """What happened to one worker call."""

    worker: int
    ok: bool
    result: dict[str, Any] | None = None
    error: str | None = None  # one line: "exit code -9", "timed out after 30 s", "KeyError: 'x'"
    started_at: float = 0.0  # time.time() when the call started
    ended_at: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return max(0.0, self.ended_at - self.started_at)


@runtime_checkable
class Executor(Protocol):
    name: str  # "local", "process", "lithops"

    def run(
        self, fn: WorkerFunction, specs: list[dict[str, Any]], timeout_s: float
    ) -> list[CallOutcome]:
        """Run ``fn(spec)`` for every spec concurrently; one outcome per spec, in order."""

    def close(self) -> None:
        """Release pools / processes."""
