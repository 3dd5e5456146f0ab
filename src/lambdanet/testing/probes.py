"""Tiny module-level worker functions that check an executor works (used by the executor
contract tests; importable in any worker process, no test code needed there).

>>> executor.run(echo, [{"worker": 0, "x": 1}], timeout_s=30)[0].result
{'worker': 0, 'x': 1, 'pid': 4242}

``meet`` checks that all K calls run at the same time: they meet at a barrier on the store
named by ``spec["store_url"]`` (it deadlocks — and fails by deadline — on an executor that runs
calls one after another).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any


def echo(spec: dict[str, Any]) -> dict[str, Any]:
    return {**spec, "pid": os.getpid()}


def fail(spec: dict[str, Any]) -> dict[str, Any]:
    raise ValueError(f"probe failure in worker {spec.get('worker')}")


def crash(spec: dict[str, Any]) -> dict[str, Any]:
    """Kill the calling process with SIGKILL (only meaningful in a process executor)."""
    os.kill(os.getpid(), signal.SIGKILL)
    return {}


def sleep(spec: dict[str, Any]) -> dict[str, Any]:
    time.sleep(float(spec.get("seconds", 1.0)))
    return {"worker": spec.get("worker"), "slept": spec.get("seconds")}


def meet(spec: dict[str, Any]) -> dict[str, Any]:
    """Barrier of ``spec["workers"]`` calls on ``spec["store_url"]`` under ``spec["prefix"]``."""
    from lambdanet import adapters
    from lambdanet.engine.collectives import Collective

    store = adapters.open_store(spec["store_url"])
    try:
        comm = Collective(store, spec["prefix"], int(spec["worker"]), int(spec["workers"]),
                          float(spec.get("timeout_s", 20.0)))
        comm.barrier()
        total = comm.all_reduce(__import__("numpy").array([float(spec["worker"])]))
        return {"worker": spec["worker"], "sum": float(total[0]), "pid": os.getpid()}
    finally:
        store.close()
