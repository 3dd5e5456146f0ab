"""The driver: runs a training run in rounds of K worker calls and records everything.

Usage::

    services = Services.open(Settings.from_env())
    req = TrainRequest(data="../shared/datasets/catvnoncat/datasets.h5", config=config,
                       workers=4, strategy="neuron", store_url="redis://127.0.0.1:6379/0",
                       executor="process")
    result = Driver(services, progress).train(req)      # RunResult; .to_json() for --json
    Driver(services).resume("r-20261125-0930-ab12cd")    # after a crash / Ctrl-C / failure

``train``: validates the request (strategy, store vs executor, data vs config) before anything is
written; creates the run (status ``running``, config + engine settings with redacted URLs);
writes the data once (``runs/<id>/data.npz``) and the initial checkpoint; then rounds of
``epochs_per_round`` epochs (see :mod:`lambdanet.engine.rounds`), each followed by ONE ledger
call for its epoch rows, the call rows, the notifications (every ``report_every`` epochs), the
progress sink and a checkpoint. At the end: accuracies, a registered model version, the run
``completed`` with its metrics (accounting included) and a :class:`RunResult`.

Failures: a round that fails ``max_retries + 1`` times marks the run ``failed`` (reason in the
ledger and the notifier) and raises :class:`RunFailed`; Ctrl-C marks it ``interrupted`` and
re-raises ``KeyboardInterrupt``; both are resumable from the last checkpoint with the same
final weights as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from lambdanet import adapters
from lambdanet.config import CNNConfig, MLPConfig, parse_config
from lambdanet.engine import checkpoints
from lambdanet.engine.accounting import Accounting, default_memory_mb
from lambdanet.engine.rounds import RoundFailed, RoundPlan, run_round
from lambdanet.engine.strategies import load_strategy, strategy_path
from lambdanet.engine.strategies.base import State
from lambdanet.errors import ConfigError, LambdanetError, RunFailed, UserInputError
from lambdanet.ports.executor import Executor
from lambdanet.ports.ledger import EpochRow, RunRecord
from lambdanet.registry import check_name
from lambdanet.services import Services


@dataclass(frozen=True)
class TrainRequest:
    data: str  # path/URL of the data set
    config: MLPConfig | CNNConfig
    model_name: str = "itsacat"
    workers: int = 1
    strategy: str = "neuron"  # "neuron" | "data" (CNN: "data")
    store_url: str = "memory://"
    executor: str = "local"  # "local" | "process" | "lithops"
    epochs_per_round: int | None = None  # None: the strategy's default (min(epochs, 1000) for MLPs)
    round_seconds: float = 300.0  # seconds budget per round, below any function limit
    max_retries: int = 3
    collective_timeout_s: float = 60.0
    checkpoint_seconds: float = 30.0  # workers checkpoint inside a round this often (bounds a fault's loss)
    lambda_memory_mb: int | None = None  # for the cost estimate; None: $LAMBDANET_LAMBDA_MEMORY_MB or 2048


class ProgressSink(Protocol):
    def start(self, total_epochs: int, done_epochs: int) -> None: ...

    def update(self, epoch: int, cost: float) -> None:
        """``epoch`` is 1-based (the number of epochs done)."""

    def finish(self) -> None: ...


@dataclass
class RunResult:
    run_id: str
    status: str
    epochs_run: int
    final_cost: float | None
    train_accuracy: float | None
    test_accuracy: float | None
    wall_seconds: float
    model: str | None
    workers: int
    strategy: str
    rounds: int
    retries: int
    store_bytes: int
    worker_calls: int
    worker_seconds: float
    estimated_cost_usd: float
    stop_reason: str | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def new_run_id() -> str:
    return time.strftime("r-%Y%m%d-%H%M%S-", time.gmtime()) + secrets.token_hex(3)


def safe_url(url: str) -> str:
    """``url`` with its secrets redacted, or exactly ``url`` when it has none (so that a stored
    ``memory://`` or ``redis://host:6379/0`` can be reopened on resume)."""
    redacted = adapters.redact(url)
    return redacted if "***" in redacted else url


def _engine_settings(req: TrainRequest, target: str, memory_mb: int) -> dict[str, Any]:
    return {
        "workers": req.workers, "strategy": req.strategy, "strategy_target": target,
        "store_url": safe_url(req.store_url), "executor": req.executor,
        "epochs_per_round": req.epochs_per_round, "round_seconds": req.round_seconds,
        "max_retries": req.max_retries, "collective_timeout_s": req.collective_timeout_s,
        "checkpoint_seconds": req.checkpoint_seconds, "lambda_memory_mb": memory_mb, "model_name": req.model_name,
    }


class Driver:
    """Runs training runs; see the module docstring. ``executor`` and ``faults`` are test hooks:
    an Executor object to use instead of opening ``request.executor``; fault specs
    ``{"round": r|"*", "attempt": try|"*", "worker": k, "action": "kill"|"raise"|"hang",
    "after_epochs": n, "seconds": s}`` (``attempt`` = the try of the round, 0 first) handed to the
    matching worker calls and honoured only when the workers see ``LAMBDANET_FAULTS=1``."""

    def __init__(self, services: Services, progress: ProgressSink | None = None, *,
                 executor: Executor | None = None, faults: list[dict[str, Any]] | None = None,
                 retry_backoff_s: float = 0.5) -> None:
        self.services = services
        self.progress = progress
        self._executor = executor
        self.faults = list(faults or [])
        self.retry_backoff_s = retry_backoff_s

    # ---- public API ------------------------------------------------------------------------
    def train(self, request: TrainRequest) -> RunResult:
        req = request
        if req.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {req.workers}")
        if req.max_retries < 0:
            raise ConfigError(f"--max-retries must be 0 or more, got {req.max_retries}")
        if req.epochs_per_round is not None and req.epochs_per_round < 1:
            raise ConfigError(f"--epochs-per-round must be at least 1, got {req.epochs_per_round}")
        if req.round_seconds <= 0 or req.collective_timeout_s <= 0:
            raise ConfigError("round_seconds and collective_timeout_s must be positive")
        check_name(req.model_name)  # before anything is written: a bad name must not cost a whole run
        target = strategy_path(req.config.kind, req.strategy)
        executor = self._open_executor(req.executor, req.store_url)
        from lambdanet.data.readers import load_dataset

        dataset = load_dataset(req.data)
        strategy = load_strategy(target)
        strategy.validate(req.config, req.workers, dataset)
        self._check_store(req.store_url)
        memory_mb = req.lambda_memory_mb or default_memory_mb()
        run_id = new_run_id()
        now = time.time()
        ledger, objects = self.services.ledger, self.services.objects
        ledger.create_run(RunRecord(
            run_id=run_id, status="running", kind=req.config.kind,
            config={**req.config.model_dump(), "engine": _engine_settings(req, target, memory_mb)},
            data=str(req.data), model=req.model_name, created_at=now, started_at=now,
        ))
        try:
            checkpoints.write_data(objects, run_id, dataset)
            checkpoints.write_checkpoint(objects, run_id, 0, 0, strategy.initial_state(req.config, dataset))
        except BaseException as exc:
            self._mark_failed(run_id, f"could not write the run's data: {exc}")
            raise
        return self._execute(run_id, req, target, strategy, executor, Accounting(memory_mb=memory_mb))

    def resume(self, run_id: str, *, store_url: str | None = None, executor: str | None = None) -> RunResult:
        """Continue ``run_id`` from its last checkpoint (after a crash, Ctrl-C or a failure)."""
        rec = self.services.ledger.get_run(run_id)
        if rec.status == "completed":
            raise UserInputError(f"run {run_id} already completed (model {rec.model}); nothing to resume")
        cfg = dict(rec.config)
        engine = dict(cfg.pop("engine", {}) or {})
        config = parse_config(cfg, source=f"run {run_id} config")
        url = store_url or engine.get("store_url", "memory://")
        if "***" in url:
            raise ConfigError(f"run {run_id} used a store with a password ({url}); pass the full URL "
                              f"with --store to resume it")
        req = TrainRequest(
            data=rec.data, config=config, model_name=engine.get("model_name") or (rec.model or "model").split(":")[0],
            workers=int(engine.get("workers", 1)), strategy=engine.get("strategy", "neuron"), store_url=url,
            executor=executor or engine.get("executor", "local"), epochs_per_round=engine.get("epochs_per_round"),
            round_seconds=float(engine.get("round_seconds", 300.0)),
            max_retries=int(engine.get("max_retries", 3)),
            collective_timeout_s=float(engine.get("collective_timeout_s", 60.0)),
            checkpoint_seconds=float(engine.get("checkpoint_seconds", 30.0)),
            lambda_memory_mb=engine.get("lambda_memory_mb"),
        )
        target = engine.get("strategy_target") or strategy_path(config.kind, req.strategy)
        ex = self._open_executor(req.executor, req.store_url)
        strategy = load_strategy(target)
        objects = self.services.objects
        if checkpoints.read_pointer(objects, run_id) is None:
            if not objects.exists(checkpoints.data_key(run_id)):
                raise RunFailed(f"run {run_id} has no data or checkpoint in {objects.url}; start a new run")
            dataset = checkpoints.read_data(objects, run_id)
            checkpoints.write_checkpoint(objects, run_id, 0, 0, strategy.initial_state(config, dataset))
        self.services.ledger.update_run(run_id, status="running", error=None, stop_reason=None, ended_at=None)
        acc = Accounting.from_metrics(rec.metrics, req.lambda_memory_mb or default_memory_mb())
        return self._execute(run_id, req, target, strategy, ex, acc)

    # ---- internals ---------------------------------------------------------------------------
    def _open_executor(self, name: str, store_url: str) -> Executor:
        ex = self._executor if self._executor is not None else adapters.open_executor(name)
        if adapters.scheme_of(store_url) == "memory" and not getattr(ex, "in_process", False):
            raise ConfigError(f"memory:// lives in one process; use --store redis://… with the {ex.name} "
                              f"executor (or --executor local)")
        return ex

    @staticmethod
    def _check_store(url: str) -> None:
        """One round trip to the tensor store before a run exists: a dead server or a wrong
        password ends in StoreUnavailable (exit 3) at once, not after every retry of round 1."""
        store = adapters.open_store(url)
        try:
            store.get_bytes("ln:probe")
        finally:
            store.close()

    def _notify(self, subject: str, message: str, **fields: Any) -> None:
        with contextlib.suppress(LambdanetError):  # a lost notification never fails a run
            self.services.notifier.notify(subject, message, **fields)

    def _mark_failed(self, run_id: str, reason: str) -> None:
        with contextlib.suppress(LambdanetError):
            self.services.ledger.update_run(run_id, status="failed", stop_reason="error", error=reason,
                                            ended_at=time.time())

    def _execute(self, run_id: str, req: TrainRequest, target: str, strategy: Any, executor: Executor,
                 acc: Accounting) -> RunResult:
        t0 = time.time()
        services, config = self.services, req.config
        ledger, objects = services.ledger, services.objects
        store = adapters.open_store(req.store_url)
        pointer = checkpoints.read_pointer(objects, run_id)
        assert pointer is not None
        done, rnd = int(pointer["epochs_done"]), int(pointer["round"])
        stop: str | None = pointer.get("stop_reason")
        last_cost: float | None = pointer.get("last_cost")
        per_round = req.epochs_per_round or strategy.default_epochs_per_round(config)
        plan = RoundPlan(
            run_id=run_id, workers=req.workers, strategy=strategy, strategy_target=target, config=config,
            config_json=config.model_dump(), store_url=req.store_url, objects_url=objects.url,
            round_seconds=req.round_seconds, collective_timeout_s=req.collective_timeout_s,
            checkpoint_seconds=req.checkpoint_seconds, max_retries=req.max_retries, faults=self.faults, retry_backoff_s=self.retry_backoff_s,
        )
        state: State | None = None
        if self.progress is not None:
            self.progress.start(config.epochs, done)

        def on_retry(r: int, attempt: int, reason: str) -> None:
            self._notify("Training retry", f"Round {r} attempt {attempt} failed: {reason}; retrying from the "
                         f"last checkpoint", run_id=run_id, event="retry", round=r)

        try:
            while done < config.epochs and stop is None:
                rnd += 1
                end = min(config.epochs, done + per_round)
                res = run_round(plan, rnd, pointer["file"], done, end, executor=executor, store=store,
                                ledger=ledger, acc=acc, on_retry=on_retry)
                acc.rounds += 1
                acc.sync_seconds += res.sync_seconds
                extras = res.extras + [{}] * (len(res.costs) - len(res.extras))
                rows = [EpochRow(run_id, done + i + 1, c, float(getattr(config, "learning_rate", 0.0)), s,
                                 {"round": rnd, **extras[i]})
                        for i, (c, s) in enumerate(zip(res.costs, res.seconds, strict=True))]
                ledger.upsert_epochs(run_id, rows)  # one ledger call per round
                for row in rows:
                    if row.epoch % config.report_every == 0:
                        self._notify("Training update!", f"Training update! Cost after epoch {row.epoch} = "
                                     f"{row.cost:.6f}", run_id=run_id, event="progress", epoch=row.epoch,
                                     cost=row.cost)
                    if self.progress is not None:
                        self.progress.update(row.epoch, row.cost)
                done += len(rows)
                if rows:
                    last_cost = rows[-1].cost
                stop = res.stop_reason
                state = res.state
                pointer = checkpoints.write_checkpoint(objects, run_id, rnd, done, state, stop_reason=stop,
                                                       last_cost=last_cost)
                ledger.update_run(run_id, metrics={**acc.to_metrics(), "epochs_done": done})
            return self._finish(run_id, req, strategy, state, pointer, stop, last_cost, acc, t0)
        except RoundFailed as exc:
            reason = f"round {rnd} failed after {exc.attempts} attempt(s): {exc.reason}"
            ledger.update_run(run_id, status="failed", stop_reason="error", error=reason, ended_at=time.time(),
                              metrics={**acc.to_metrics(), "epochs_done": done})
            self._notify("Training Failed!", f"Training Failed! Run {run_id}: {reason}. Resume with "
                         f"`lambdanet resume {run_id}`", run_id=run_id, event="failed", error=reason)
            raise RunFailed(f"run {run_id} failed: {reason}; resume with `lambdanet resume {run_id}`") from exc
        except KeyboardInterrupt:
            try:
                ledger.update_run(run_id, status="interrupted", stop_reason="interrupted", ended_at=time.time(),
                                  metrics={**acc.to_metrics(), "epochs_done": done})
            finally:
                self._cleanup(store, run_id)
            raise
        except BaseException as exc:
            self._mark_failed(run_id, f"{type(exc).__name__}: {exc}")
            raise
        finally:
            if self.progress is not None:
                self.progress.finish()
            self._cleanup(store, run_id)
            store.close()
            if self._executor is None:
                executor.close()

    @staticmethod
    def _cleanup(store: Any, run_id: str) -> None:
        with contextlib.suppress(LambdanetError):
            store.delete_prefix(f"ln:{run_id}:")

    def _finish(self, run_id: str, req: TrainRequest, strategy: Any, state: State | None,
                pointer: dict[str, Any], stop: str | None, last_cost: float | None, acc: Accounting,
                t0: float) -> RunResult:
        services, config = self.services, req.config
        objects = services.objects
        if state is None:  # resumed after the last round: the checkpoint is the final state
            state = checkpoints.read_state(objects, pointer["file"])
        dataset = checkpoints.read_data(objects, run_id)
        fin = strategy.finish(config, state, dataset)
        stop_reason = stop or "epoch_limit"
        done = int(pointer["epochs_done"])
        metrics = {"train_accuracy": fin.train_accuracy, "test_accuracy": fin.test_accuracy,
                   "final_cost": last_cost}
        mv = services.registry.register(req.model_name, fin.weights,
                                        {**fin.metadata, "metrics": metrics, "run_id": run_id})
        model = f"{mv.name}:{mv.version}"
        services.ledger.update_run(run_id, status="completed", stop_reason=stop_reason, model=model,
                                   ended_at=time.time(), error=None,
                                   metrics={**metrics, **acc.to_metrics(), "epochs_done": done})
        if stop_reason == "threshold":
            msg = (f"Training stopped early at epoch {done}: cost {last_cost:.6f} <= threshold "
                   f"{config.threshold}. Final Cost = {last_cost:.6f}")
            self._notify("Training stopped early", msg, run_id=run_id, event="early_stop", cost=last_cost)
        cost_text = f"{last_cost:.6f}" if last_cost is not None else "n/a"
        self._notify("Training Completed Successfully!", f"Training Completed Successfully! Final Cost = "
                     f"{cost_text}", run_id=run_id, event="completed", cost=last_cost, model=model)
        return RunResult(
            run_id=run_id, status="completed", epochs_run=done, final_cost=last_cost,
            train_accuracy=fin.train_accuracy, test_accuracy=fin.test_accuracy,
            wall_seconds=round(time.time() - t0, 3), model=model, workers=req.workers, strategy=req.strategy,
            rounds=acc.rounds, retries=acc.retries, store_bytes=acc.store_bytes, worker_calls=acc.worker_calls,
            worker_seconds=round(acc.worker_seconds, 3), estimated_cost_usd=acc.estimated_cost_usd(),
            stop_reason=stop_reason,
        )
