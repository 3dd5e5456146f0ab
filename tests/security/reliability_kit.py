"""Helpers of the fault-injection tests (``tests/faults/test_reliability_*.py``): a small training
job run in-process through the real :class:`~lambdanet.engine.driver.Driver`, its weights, its
ledger rows, and a killer that SIGKILLs worker processes at random moments.

    job = Job(tmp_path)                                   # tiny data + config (4 epochs, 2 rounds)
    ref = job.train("memory://", "local")                 # the undisturbed reference
    out = job.train(redis.url, "process", faults=[{"round": 1, "worker": 0, "action": "kill",
                                                  "after_epochs": 1}])
    assert_same_weights(out.weights, ref.weights)
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tests.security.seed import tiny_npz

CONFIG: dict[str, Any] = {"epochs": 4, "layers": 2, "activations": {"layer1": "relu", "layer2": "sigmoid"},
                          "neurons": {"layer1": 6, "layer2": 1}, "learning_rate": 0.05, "batch_size": 16,
                          "report_every": 1000, "optimizer": "adam"}
EPOCHS_PER_ROUND = 2


@dataclass
class Outcome:
    run_id: str
    status: str
    retries: int
    weights: dict[str, np.ndarray]
    epochs: list[int]
    failed_calls: list[str]
    result: Any = None


@dataclass
class Job:
    """One tiny training job; every ``train`` call gets a fresh home (ledger + objects)."""

    root: Path
    workers: int = 2
    config: dict[str, Any] = field(default_factory=lambda: dict(CONFIG))
    collective_timeout_s: float = 2.0
    round_seconds: float = 30.0
    max_retries: int = 3
    retry_backoff_s: float = 0.0
    runs: int = 0

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.data = tiny_npz(self.root / "data.npz", m=48)

    def services(self, home: Path) -> Any:
        from lambdanet.services import Services
        from lambdanet.settings import Settings

        return Services.open(Settings(home=home, ledger_url=f"sqlite:///{home / 'ledger.db'}",
                                      objects_url=str(home / "objects"), notifier_url="console://",
                                      store_url="memory://", executor="local"))

    def request(self, store_url: str, executor: str) -> Any:
        from lambdanet.config import parse_config
        from lambdanet.engine.driver import TrainRequest

        return TrainRequest(data=str(self.data), config=parse_config(self.config), model_name="fault",
                            workers=self.workers, strategy="neuron", store_url=store_url, executor=executor,
                            epochs_per_round=EPOCHS_PER_ROUND, round_seconds=self.round_seconds,
                            max_retries=self.max_retries, collective_timeout_s=self.collective_timeout_s)

    def train(self, store_url: str, executor: str, faults: list[dict[str, Any]] | None = None,
              home: Path | None = None, executor_object: Any = None) -> Outcome:
        """Train once in a fresh home; ``executor_object`` replaces the named executor (a wrapper)."""
        from lambdanet.engine.driver import Driver

        self.runs += 1
        home = home or self.root / f"home-{self.runs}"
        services = self.services(home)
        try:
            result = Driver(services, faults=faults or [], retry_backoff_s=self.retry_backoff_s,
                            executor=executor_object).train(self.request(store_url, executor))
            return outcome(services, result.run_id, result)
        finally:
            services.close()


def outcome(services: Any, run_id: str, result: Any = None) -> Outcome:
    rec = services.ledger.get_run(run_id)
    weights = services.registry.load(rec.model).weights if rec.model and ":" in rec.model else {}
    return Outcome(run_id=run_id, status=rec.status, retries=int(rec.metrics.get("retries", 0) or 0),
                   weights={k: np.array(v) for k, v in weights.items()},
                   epochs=[row.epoch for row in services.ledger.epochs(run_id)],
                   failed_calls=[c.error or "" for c in services.ledger.calls(run_id) if not c.ok], result=result)


def assert_same_weights(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert sorted(a) == sorted(b) and a, (sorted(a), sorted(b))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


WORKER_MARKER = "lambdanet.executors.process"  # in the command line of every process-executor call


def live_workers(marker: str = WORKER_MARKER) -> list[Any]:
    """Child processes of this test whose command line holds ``marker`` and that have not handed
    their result back yet (the executor's result file, their last argument, does not exist)."""
    import psutil

    out = []
    for child in psutil.Process().children(recursive=True):
        try:
            cmd = child.cmdline()
            if marker in " ".join(cmd) and child.status() != psutil.STATUS_ZOMBIE and not Path(cmd[-1]).exists():
                out.append(child)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, IndexError):
            continue
    return out


@contextlib.contextmanager
def paused(proc: Any) -> Iterator[bool]:
    """SIGSTOP ``proc`` for the block; yields whether it is still live (no result handed back)
    once stopped — a stopped process cannot write its result, so what is seen then holds."""
    import psutil

    try:
        proc.suspend()
    except psutil.NoSuchProcess:
        yield False
        return
    try:
        cmd = proc.cmdline()
        yield bool(cmd) and not Path(cmd[-1]).exists()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        yield False
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.resume()


class Killer(threading.Thread):
    """SIGKILLs a LIVE worker process (one that has not handed its result back, checked while it is
    stopped, so the kill is sure to fail its call) after a random delay measured from the moment
    such a worker first exists; draws again while none is live. ``killed`` holds the victims' pids."""

    def __init__(self, marker: str, seed: int, max_delay_s: float = 1.5, kills: int = 1) -> None:
        super().__init__(daemon=True)
        self.marker = marker
        self.rng = random.Random(seed)
        self.max_delay_s = max_delay_s
        self.kills = kills
        self.killed: list[int] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        while len(self.killed) < self.kills and not self.stop_event.is_set():
            while not self.stop_event.is_set() and not live_workers(self.marker):
                time.sleep(0.01)
            if self.stop_event.wait(self.rng.uniform(0.0, self.max_delay_s)):
                return
            victims = live_workers(self.marker)
            if not victims:
                continue
            victim = self.rng.choice(victims)
            with paused(victim) as live:
                if live:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(victim.pid, signal.SIGKILL)
                        self.killed.append(victim.pid)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=5)
