"""Helpers of the fault-injection tests (``tests/faults/test_reliability_*.py``): a small training
job run in-process through the real :class:`~lambdanet.engine.driver.Driver`, its weights, its
ledger rows, and a killer that SIGKILLs worker processes at random moments.

    job = Job(tmp_path)                                   # tiny data + config (4 epochs, 2 rounds)
    ref = job.reference()                                 # a plain numpy loop written here, not lambdanet
    out = job.train(redis.url, "process", faults=[{"round": 1, "worker": 0, "action": "kill",
                                                  "after_epochs": 1}])
    assert_same_run(out, ref)                             # epochs, costs and weights (float32 tolerance)
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
    costs: list[float] = field(default_factory=list)  # per epoch, in the ledger's order
    calls: list[Any] = field(default_factory=list)  # the ledger's CallRows
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

    def reference(self) -> Outcome:
        """What the job must train: :func:`numpy_reference` of its data and config."""
        return numpy_reference(self.data, self.config)

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


def numpy_reference(data: Path, config: dict[str, Any]) -> Outcome:
    """The job trained by a plain numpy loop written here, not by lambdanet: the same init
    (``RandomState(seed).randn(n_l, n_{l-1}) / sqrt(n_{l-1})`` layer by layer, zero biases), the
    same batches (a permutation from ``default_rng([seed, epoch])`` cut into ``batch_size``), the
    same update (binary cross-entropy of a relu -> sigmoid net, Adam with bias correction), in
    float32. ``epochs`` holds 1..E and ``costs`` each epoch's mean batch cost."""
    known = {"layers": 2, "activations": {"layer1": "relu", "layer2": "sigmoid"}, "optimizer": "adam"}
    assert {k: config[k] for k in known} == known and config.get("dtype", "float32") == "float32", config
    assert config.get("init", "deep") == "deep" and not config.get("threshold"), config
    seed = int(config.get("seed", 1))
    lr, mb, n_h = float(config["learning_rate"]), int(config["batch_size"]), int(config["neurons"]["layer1"])
    b1, b2, eps = float(config.get("beta1", 0.9)), float(config.get("beta2", 0.999)), float(config.get("epsilon", 1e-8))
    with np.load(data) as f:
        x, y = f["x"], f["y"]
    m = len(x)
    X = (x.reshape(m, -1).T.astype(np.float32) / np.float32(255))  # (n_x, m)
    Y = y.reshape(1, m).astype(np.float32)  # (1, m)
    rng = np.random.RandomState(seed)
    W1 = (rng.randn(n_h, X.shape[0]) / np.sqrt(X.shape[0])).astype(np.float32)
    W2 = (rng.randn(1, n_h) / np.sqrt(n_h)).astype(np.float32)
    p = {"W1": W1, "b1": np.zeros((n_h, 1), np.float32), "W2": W2, "b2": np.zeros((1, 1), np.float32)}
    mom = {k: np.zeros_like(v) for k, v in p.items()}
    vel = {k: np.zeros_like(v) for k, v in p.items()}
    t, costs = 0, []
    for epoch in range(int(config["epochs"])):
        order = np.random.default_rng([seed, epoch]).permutation(m) if mb < m else np.arange(m)
        batch_costs = []
        for i in range(0, m, mb):
            idx = order[i:i + mb]
            Xb, Yb, n = X[:, idx], Y[:, idx], len(idx)
            Z1 = p["W1"] @ Xb + p["b1"]
            A1 = np.maximum(Z1, 0)
            A2 = 1 / (1 + np.exp(-(p["W2"] @ A1 + p["b2"])))
            P = np.clip(A2, 1e-7, 1 - 1e-7)
            batch_costs.append(float(-np.sum(Yb * np.log(P) + (1 - Yb) * np.log(1 - P)) / n))
            dZ2 = A2 - Yb
            dZ1 = (p["W2"].T @ dZ2) * (Z1 > 0)
            grads = {"W1": dZ1 @ Xb.T / n, "b1": dZ1.sum(axis=1, keepdims=True) / n,
                     "W2": dZ2 @ A1.T / n, "b2": dZ2.sum(axis=1, keepdims=True) / n}
            t += 1
            for k, g in grads.items():
                mom[k] = b1 * mom[k] + (1 - b1) * g
                vel[k] = b2 * vel[k] + (1 - b2) * g * g
                p[k] = (p[k] - lr * (mom[k] / (1 - b1**t)) / (np.sqrt(vel[k] / (1 - b2**t)) + eps)).astype(np.float32)
        costs.append(sum(batch_costs) / len(batch_costs))
    return Outcome(run_id="numpy", status="completed", retries=0, weights=p,
                   epochs=list(range(1, int(config["epochs"]) + 1)), failed_calls=[], costs=costs)


def call_of_try(calls: list[Any], rnd: int, try_no: int, worker: int) -> Any:
    """The ledger's row of ``worker``'s call in the ``try_no``-th attempt of round ``rnd`` (0 =
    the round's first: its smallest attempt id; attempt ids are run-wide), or None."""
    attempts = sorted({c.attempt for c in calls if c.round == rnd})
    if try_no >= len(attempts):
        return None
    return next((c for c in calls if (c.round, c.attempt, c.worker) == (rnd, attempts[try_no], worker)), None)


def outcome(services: Any, run_id: str, result: Any = None) -> Outcome:
    rec = services.ledger.get_run(run_id)
    weights = services.registry.load(rec.model).weights if rec.model and ":" in rec.model else {}
    return Outcome(run_id=run_id, status=rec.status, retries=int(rec.metrics.get("retries", 0) or 0),
                   weights={k: np.array(v) for k, v in weights.items()},
                   epochs=[row.epoch for row in services.ledger.epochs(run_id)],
                   failed_calls=[c.error or "" for c in services.ledger.calls(run_id) if not c.ok],
                   costs=[row.cost for row in services.ledger.epochs(run_id)], calls=services.ledger.calls(run_id),
                   result=result)


RTOL = 1e-5  # float32, different summation orders: the engine lands within ~4e-7 of the numpy loop


def assert_same_weights(got: dict[str, np.ndarray], want: dict[str, np.ndarray], rtol: float = RTOL) -> None:
    """Each parameter within ``rtol`` of the reference, relative to its largest entry (one Adam
    step more or less moves them by ~learning_rate: 5000 times that)."""
    assert sorted(got) == sorted(want) and want, (sorted(got), sorted(want))
    for k in want:
        scale = max(float(np.max(np.abs(want[k]))), 1e-30)
        diff = float(np.max(np.abs(got[k].astype(np.float64) - want[k].astype(np.float64))))
        assert diff <= rtol * scale, f"{k}: max |got - want| = {diff:.3g}, {diff / scale:.3g} of max |want|"


def assert_same_run(out: Outcome, ref: Outcome, rtol: float = RTOL) -> None:
    """``out`` (an engine run, read back from its ledger and registry) trained what ``ref`` (the
    numpy loop) did: each epoch once, the same epoch costs and weights within ``rtol``."""
    assert out.epochs == ref.epochs, f"epochs in the ledger: {out.epochs}"
    np.testing.assert_allclose(out.costs, ref.costs, rtol=rtol, atol=rtol, err_msg="epoch costs")
    assert_same_weights(out.weights, ref.weights, rtol)


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
