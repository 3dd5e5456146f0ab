"""The driver: runs a training run in rounds of K worker calls and records everything.

Usage::

    services = Services.open(Settings.from_env())
    req = TrainRequest(data="../shared/datasets/catvnoncat/datasets.h5", config=config,
                       workers=4, strategy="neuron", store_url="redis://127.0.0.1:6379/0",
                       executor="process")
    result = Driver(services, progress).train(req)      # RunResult; .to_json() for --json
    Driver(services).resume("r-20261125-0930-ab12cd")    # after a crash / Ctrl-C / failure

``train`` = :meth:`Driver.start` + :meth:`Driver.drive`. ``start`` checks what a request cannot
check by itself (strategy, model name, store vs executor, data vs config — its settings were
checked when it was made) before anything is written; creates the run
(status ``running``, config + engine settings with redacted URLs); writes the data (its
content-addressed snapshot ``datasets/<sha256>.npz`` unless a run on the same data wrote it
already, and the run's reference ``runs/<id>/data.json``) and the initial checkpoint. ``drive``
takes the run's lease and runs :class:`lambdanet.engine.session.RunSession` round by round
(each round followed by ONE ledger call for its epoch rows, the notifications, the progress
sink and a checkpoint), then finishes it: accuracies, a registered model version, the run
``completed`` and a :class:`RunResult`. The durable Lambda driver (:mod:`lambdanet.functions.training_function`)
runs the same session, one durable step per round, across as many invocations as the run needs.

Failures: a round that fails ``max_retries + 1`` times marks the run ``failed`` (reason in the
ledger and the notifier) and raises :class:`RunFailed`; Ctrl-C marks it ``interrupted`` and
re-raises ``KeyboardInterrupt``; both are resumable from the last checkpoint with the same
final weights as an uninterrupted run.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from lambdanet import adapters
from lambdanet.cpu_budget import CpuBudget
from lambdanet.engine import checkpoints
from lambdanet.engine.accounting import default_memory_mb
from lambdanet.engine.messages import Fault
from lambdanet.engine.requests import (
    ProgressSink,
    RunResult,
    TrainRequest,
    engine_settings,
    new_run_id,
    safe_url,
)
from lambdanet.engine.session import DriverIdentity, RunSession, open_executor
from lambdanet.engine.strategies import load_strategy, strategy_path
from lambdanet.errors import RunFailed, UserInputError
from lambdanet.ports.executor import BudgetedExecutor, Executor
from lambdanet.ports.ledger import RunRecord
from lambdanet.registry import check_name
from lambdanet.services import Services

__all__ = ["Driver", "ProgressSink", "RunResult", "TrainRequest", "new_run_id", "safe_url"]


class Driver:
    """Runs training runs; see the module docstring. ``executor`` and ``faults`` are test hooks:
    an Executor object to use instead of opening ``request.executor``; test faults
    (:class:`~lambdanet.engine.messages.Fault`, or their JSON: ``{"round": 1, "worker": 1, "action":
    "kill", "after_epochs": 2}``) handed to the matching worker calls and honoured only when the
    workers see ``LAMBDANET_FAULTS=1``."""

    def __init__(self, services: Services, progress: ProgressSink | None = None, *,
                 executor: Executor | None = None, faults: Iterable[Fault | Mapping[str, object]] = (),
                 retry_backoff_s: float = 0.5) -> None:
        self.services = services
        self.progress = progress
        self._executor = executor
        self.faults = [Fault.model_validate(f) for f in faults]
        self.retry_backoff_s = retry_backoff_s

    # ---- public API ------------------------------------------------------------------------
    def train(self, request: TrainRequest, run_id: str | None = None) -> RunResult:
        """Start a run (``run_id``: the id to give it, e.g. the upload trigger's) and drive it to the end."""
        run_id = self.start(request, run_id)
        # the request's own URLs: the recorded ones have their passwords redacted
        return self.drive(run_id, store_url=request.store_url, executor_name=request.executor)

    def start(self, request: TrainRequest, run_id: str | None = None, *, source: str | None = None) -> str:
        """Validate ``request``, create the run, write its data and initial checkpoint; return its id.
        ``source``: where the data came from, recorded instead of ``request.data`` (a trigger's
        temporary download)."""
        req = request
        check_name(req.model_name)  # before anything is written: a bad name must not cost a whole run
        target = strategy_path(req.config.kind, req.strategy)
        executor = open_executor(req.executor, req.store_url, self._executor, settings=self.services.settings)
        budget = (executor.planned_budget(req.workers, req.cpu_threads) if isinstance(executor, BudgetedExecutor)
                  else CpuBudget(source="none", workers=req.workers))
        if self._executor is None:
            executor.close()
        from lambdanet.data.readers import load_dataset

        dataset = load_dataset(req.data, req.config)  # image_size applies to folders, archives and arrays
        strategy = load_strategy(target)
        strategy.validate(req.config, req.workers, dataset)
        self._check_store(req.store_url)
        memory_mb = req.lambda_memory_mb or default_memory_mb()
        run_id = run_id or new_run_id()
        now = time.time()
        ledger, objects = self.services.ledger, self.services.objects
        # the objects first, the ledger row last: the row is the commit point, so a driver killed in
        # between leaves no run without data (a caller that kept the id, like a tune trial, starts it again)
        checkpoints.write_data(objects, run_id, dataset)
        checkpoints.write_checkpoint(objects, run_id, 0, 0, strategy.initial_state(req.config, dataset))
        ledger.create_run(RunRecord(
            run_id=run_id, status="running", kind=req.config.kind,
            config={**req.config.model_dump(), "engine": engine_settings(req, target, memory_mb, budget)},
            data=source or str(req.data), model=req.model_name, created_at=now, started_at=now,
        ))
        return run_id

    def resume(self, run_id: str, *, store_url: str | None = None, executor: str | None = None) -> RunResult:
        """Continue ``run_id`` from its last checkpoint (after a crash, Ctrl-C or a failure)."""
        rec = self.services.ledger.get_run(run_id)
        if rec.status == "completed":
            raise UserInputError(f"run {run_id} already completed (model {rec.model}); nothing to resume")
        return self.drive(run_id, store_url=store_url, executor_name=executor)

    def open_session(self, run_id: str, identity: DriverIdentity | None = None, *, store_url: str | None = None,
                     executor_name: str | None = None, since_created: bool = False) -> RunSession:
        """Take the lease of ``run_id`` and return its :class:`RunSession` (the durable driver's way in)."""
        return RunSession.open(self.services, run_id, identity or DriverIdentity.local(), store_url=store_url,
                               executor_name=executor_name, executor=self._executor, progress=self.progress,
                               faults=self.faults, retry_backoff_s=self.retry_backoff_s,
                               since_created=since_created)

    def drive(self, run_id: str, *, store_url: str | None = None, executor_name: str | None = None) -> RunResult:
        """Drive ``run_id`` to its end in this process (one long-lived driver, no durable SDK)."""
        session = self.open_session(run_id, store_url=store_url, executor_name=executor_name)
        try:
            while not session.next_round().finished:
                pass
            return session.finish()
        except KeyboardInterrupt:
            session.mark_interrupted()
            raise
        except RunFailed:  # recorded and notified by the session
            raise
        except BaseException as exc:
            if not session.stale:  # a driver that was taken over writes nothing more
                session.mark_failed(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            session.close()

    # ---- internals ---------------------------------------------------------------------------
    @staticmethod
    def _check_store(url: str) -> None:
        """One round trip to the tensor store before a run exists: a dead server or a wrong
        password ends in StoreUnavailable (exit 3) at once, not after every retry of round 1."""
        store = adapters.open_store(url)
        try:
            store.get_bytes("ln:probe")
        finally:
            store.close()
