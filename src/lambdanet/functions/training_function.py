"""The training function (AWS Lambda): S3 ``ObjectCreated`` events start training runs that
outlive any one invocation (itsacat's *LaunchLambda*, as an AWS Lambda **durable function**).

Handler: ``lambdanet.functions.training_function.handler`` (``@durable_execution`` from
``aws-durable-execution-sdk-python``). S3 sends (abridged)::

    {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                  "s3": {"bucket": {"name": "my-bucket"},
                         "object": {"key": "training_input/datasets.h5", "size": 2572022,
                                    "eTag": "d41d8…", "versionId": "3HL4kqtJ…"}}}]}

For every record on ``training_input/*.h5`` the execution runs these durable steps, each one's
small JSON result checkpointed by the service:

1. ``begin-<i>``: :meth:`lambdanet.functions.upload_trigger.UploadTrigger.begin` — claim
   ``<bucket>/<key>#<version>`` in the ledger (the same event delivered twice starts ONE run;
   the other execution's step answers ``skipped``), read and check ``parameters.json``, write
   the data snapshot and the first checkpoint. The run id is derived from the claim and this
   execution's ARN, so the SDK's retry of this step (after an error or a kill that followed the
   claim: steps run at least once) finds the claim its own and finishes the same run;
2. ``<run>-round-<n>``: one round of :class:`lambdanet.engine.session.RunSession` (workers on
   Lithops, epoch rows, checkpoint) — the same code ``lambdanet train`` loops over on a laptop;
   its result is a :class:`~lambdanet.engine.messages.RoundStep` (or a :class:`RunLeft`: the run
   failed, or another execution drives it). The step also decides whether the next round still
   fits in this invocation (``RoundStep.handoff``), and when it does not, the execution waits one
   second (``<run>-handoff-<n>``): the invocation ends, unbilled, and a new one replays the
   checkpointed steps in milliseconds and trains the next round;
3. ``<run>-finish``: register the model (once: a replay finds the version this run registered),
   mark the run completed, notify, then write ``predict_input/params.h5`` and
   ``training_results/results.json`` (not again when results.json already holds this run's).

An invocation the platform kills mid-round is retried and replayed: its round step runs again
from the newest in-round checkpoint of that round (else the last committed checkpoint), under a
new generation of the run's lease, so the killed
invocation (should it still be running) can never commit a round (see
:mod:`lambdanet.engine.session`). A round that fails all its retries ends the execution with the
run failed (recorded and notified); an infrastructure error raises inside the step, which the
SDK retries.

Configuration comes from the environment (set by ``deploy/template.yaml``):
``LAMBDANET_LEDGER`` (``dynamodb://…``), ``LAMBDANET_OBJECTS`` (``s3://bucket/lambdanet``),
``LAMBDANET_NOTIFIER`` (``sns://arn…``), ``LAMBDANET_STORE`` (``redis://…``),
``LAMBDANET_EXECUTOR`` (``local`` | ``lithops``), ``LAMBDANET_LITHOPS_CONFIG``,
``LAMBDANET_WORKERS``, ``LAMBDANET_STRATEGY``, ``LAMBDANET_MODEL``,
``LAMBDANET_EPOCHS_PER_ROUND``, ``LAMBDANET_ROUND_SECONDS`` (default: a third of the
invocation, at most 300 s) and ``LAMBDANET_INVOCATION_SECONDS`` (a limit below the function's
own, for tests); ``LAMBDANET_HOME`` defaults to ``/tmp/lambdanet``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote_plus

from aws_durable_execution_sdk_python import DurableContext, durable_execution
from aws_durable_execution_sdk_python.config import Duration
from aws_durable_execution_sdk_python.exceptions import StepError

from lambdanet import adapters
from lambdanet.engine.messages import Message, RoundStep
from lambdanet.engine.session import DriverIdentity, RunSession
from lambdanet.errors import LambdanetError, LeaseHeld, RunFailed
from lambdanet.functions.upload_trigger import TriggerResult, UploadTrigger, is_training_input
from lambdanet.services import Services
from lambdanet.settings import Settings

log = logging.getLogger("lambdanet.functions.training_function")

LAMBDA_LIMIT_S = 900.0
HANDOFF_WAIT = Duration.from_seconds(1)  # the shortest wait: the execution resumes at once


def parse_records(event: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """(bucket, key, version) of every S3 ObjectCreated record in ``event``."""
    out: list[tuple[str, str, str | None]] = []
    for record in event.get("Records") or []:
        if record.get("eventSource") != "aws:s3" or not str(record.get("eventName", "")).startswith(
                "ObjectCreated"):
            continue
        s3 = record.get("s3") or {}
        bucket = (s3.get("bucket") or {}).get("name")
        obj = s3.get("object") or {}
        key = obj.get("key")
        if not bucket or not key:
            continue
        version = obj.get("versionId") or obj.get("eTag") or None
        out.append((str(bucket), unquote_plus(str(key)), str(version).strip('"') if version else None))
    return out


@dataclass(frozen=True)
class InvocationClock:
    """How long this invocation may still run: the function's remaining time, or
    ``LAMBDANET_INVOCATION_SECONDS`` if smaller, minus a margin for the handoff itself."""

    deadline: float  # time.monotonic() at which the invocation must have handed off
    limit_s: float

    @classmethod
    def start(cls, lambda_context: Any) -> InvocationClock:
        limit = LAMBDA_LIMIT_S
        if lambda_context is not None:
            limit = min(limit, lambda_context.get_remaining_time_in_millis() / 1000.0)
        configured = Settings.from_env().function_invocation_seconds
        if configured is not None:
            limit = min(limit, configured)
        margin = min(30.0, 0.1 * limit)  # the step's own checkpoint, the wait, Lambda's shutdown
        return cls(time.monotonic() + limit - margin, limit)

    def has_time_for(self, seconds: float) -> bool:
        """True when a round like the last one (``seconds``, with 25 % slack) still fits."""
        return time.monotonic() + 1.25 * seconds < self.deadline

    def round_seconds(self) -> float:
        """The round budget: a third of the invocation, at most 300 s (``LAMBDANET_ROUND_SECONDS``)."""
        return Settings.from_env().function_round_seconds or min(300.0, self.limit_s / 3)


def _test_faults(settings: Settings) -> list[dict[str, Any]]:
    """Fault-injection specs for the workers (``LAMBDANET_FAULTS_JSON``), honoured only with
    ``LAMBDANET_FAULTS=1`` — as the workers honour them (tests only)."""
    return [dict(f) for f in settings.faults_json] if settings.faults else []


def function_settings() -> Settings:
    """The functions' settings: ``LAMBDANET_HOME`` defaults to ``/tmp/lambdanet`` (Lambda's only
    writable folder)."""
    return Settings.from_env(default_home="/tmp/lambdanet")


def _trigger(services: Services, bucket: str, clock: InvocationClock) -> UploadTrigger:
    settings = services.settings  # the Lithops config reaches the executor as one of its options
    return UploadTrigger(
        services, adapters.open_objects(f"s3://{bucket}"), workers=settings.function_workers,
        strategy=settings.function_strategy, model_name=settings.function_model,
        epochs_per_round=settings.function_epochs_per_round, round_seconds=clock.round_seconds(),
    )


class RunLeft(Message):
    """A round step's result when the run leaves this execution: ``failed`` (recorded and notified
    by the session) or ``skipped`` (another execution holds its lease)."""

    status: Literal["failed", "skipped"]
    reason: str


def step_result(raw: object) -> RoundStep | RunLeft:
    """A round step's checkpointed result (JSON), typed."""
    return RunLeft.from_json(raw) if isinstance(raw, dict) and "status" in raw else RoundStep.from_json(raw)


class _Invocation:
    """What one invocation opens (services, one session per run), closed when it ends — by a
    handoff, the end of the execution, or an error."""

    def __init__(self, context: DurableContext) -> None:
        self.clock = InvocationClock.start(context.lambda_context)
        self.identity = DriverIdentity.invocation(context.execution_context.durable_execution_arn)
        self._services: Services | None = None
        self.sessions: dict[str, RunSession] = {}

    @property
    def services(self) -> Services:
        if self._services is None:
            self._services = Services.open(function_settings())
        return self._services

    def session(self, run_id: str) -> RunSession:
        session = self.sessions.get(run_id)
        if session is None:
            from lambdanet.engine.driver import Driver

            settings = self.services.settings  # the configured URLs: the recorded ones are redacted
            session = Driver(self.services, faults=_test_faults(settings)).open_session(
                run_id, self.identity, store_url=settings.store_url,
                                                         executor_name=settings.executor, since_created=True)
            self.sessions[run_id] = session
        return session

    def close_session(self, run_id: str, *, cleanup: bool) -> None:
        session = self.sessions.pop(run_id, None)
        if session is not None:
            session.close(cleanup=cleanup)

    def close(self) -> None:
        for run_id in list(self.sessions):
            self.close_session(run_id, cleanup=False)
        if self._services is not None:
            self._services.close()

    # ---- the steps' bodies -------------------------------------------------------------------
    def begin(self, bucket: str, key: str, version: str | None) -> dict[str, Any]:
        # the run id derives from the claim and this execution: a retry of the step continues it
        result = _trigger(self.services, bucket, self.clock).begin(key, version, execution=self.identity.execution)
        log.info("s3://%s/%s#%s: %s %s %s", bucket, key, version, result.status, result.run_id, result.error or "")
        return result.to_json()

    def round(self, run_id: str) -> RoundStep | RunLeft:
        try:
            step = self.session(run_id).next_round()
        except RunFailed as exc:  # recorded and notified; the execution ends with the run failed
            self.close_session(run_id, cleanup=True)
            return RunLeft(status="failed", reason=str(exc))
        except LeaseHeld as exc:  # another execution drives this run: leave it alone
            return RunLeft(status="skipped", reason=str(exc))
        # decided inside the step, so that a replay follows the same path as the first run
        return step.model_copy(update={"handoff": not step.finished and not self.clock.has_time_for(step.seconds)})

    def fail(self, run_id: str, reason: str) -> dict[str, Any]:
        """Record a run the execution gives up on (once: this is a durable step) and notify."""
        self.close_session(run_id, cleanup=True)
        record = self.services.ledger.get_run(run_id)
        if record.status != "completed":
            self.services.ledger.update_run(run_id, status="failed", stop_reason="error", error=reason,
                                            ended_at=time.time())
            with contextlib.suppress(LambdanetError):
                self.services.notifier.notify("Training Failed!", f"Training Failed! Run {run_id}: {reason}. "
                                              f"Resume with `lambdanet resume {run_id}`", run_id=run_id,
                                              event="failed", error=reason)
        return {"failed": reason}

    def finish(self, bucket: str, begun: TriggerResult) -> dict[str, Any]:
        assert begun.run_id is not None
        record = self.services.ledger.get_run(begun.run_id)
        if record.status != "completed":  # a re-run of this step after a kill skips what was done
            self.session(begun.run_id).finish()
            self.close_session(begun.run_id, cleanup=True)
        result = _trigger(self.services, bucket, self.clock).publish(begun.key, begun.version, begun.run_id)
        return result.to_json()


def _begin_step(inv: _Invocation, bucket: str, key: str, version: str | None) -> Callable[[Any], dict[str, Any]]:
    def begin(_: Any) -> dict[str, Any]:
        return inv.begin(bucket, key, version)
    return begin


def _drive_run(context: DurableContext, inv: _Invocation, bucket: str, begun: TriggerResult) -> dict[str, Any]:
    """Round steps (with handoffs) until the run ends, then the finish step; the TriggerResult."""
    run_id = str(begun.run_id)

    def one_round(_: Any) -> dict[str, Any]:
        return inv.round(run_id).to_json()  # the SDK checkpoints JSON

    def finish(_: Any) -> dict[str, Any]:
        return inv.finish(bucket, begun)

    def give_up(reason: str) -> Callable[[Any], dict[str, Any]]:
        def fail(_: Any) -> dict[str, Any]:
            return inv.fail(run_id, reason)
        return fail

    n = 0
    while True:
        n += 1
        try:
            step = step_result(context.step(one_round, name=f"{run_id}-round-{n}"))
        except StepError as exc:  # the SDK's retries of an infrastructure error are spent
            reason = f"round step {n} failed after its retries: {exc}"
            context.step(give_up(reason), name=f"{run_id}-failed")
            return TriggerResult(begun.key, begun.version, "failed", run_id=run_id, error=reason).to_json()
        if isinstance(step, RunLeft):
            return TriggerResult(begun.key, begun.version, step.status, run_id=run_id, error=step.reason).to_json()
        if step.finished:
            done: dict[str, Any] = context.step(finish, name=f"{run_id}-finish")
            return done
        if step.handoff:
            inv.close_session(run_id, cleanup=False)
            context.wait(HANDOFF_WAIT, name=f"{run_id}-handoff-{n}")


def drive_event(event: dict[str, Any], context: DurableContext) -> dict[str, Any]:
    """The durable execution of one S3 event (see the module docstring)."""
    logging.getLogger().setLevel(logging.INFO)
    inv = _Invocation(context)
    results: list[dict[str, Any]] = []
    try:
        for i, (bucket, key, version) in enumerate(parse_records(event)):
            if not is_training_input(key):
                log.info("ignoring s3://%s/%s (not training_input/*.h5)", bucket, key)
                continue
            begun = TriggerResult.from_json(context.step(_begin_step(inv, bucket, key, version), name=f"begin-{i}"))
            if begun.status != "started" or begun.run_id is None:
                results.append(begun.to_json())
                continue
            results.append(_drive_run(context, inv, bucket, begun))
    finally:
        inv.close()
    return {"results": results}


handler = durable_execution(drive_event)


def handle_event(event: dict[str, Any], services: Services | None = None) -> list[TriggerResult]:
    """Run the trigger in this process for each training input in ``event`` (no durable
    execution: the whole run in one call — what ``lambdanet watch`` does per upload)."""
    own = services is None
    services = services or Services.open(function_settings())
    clock = InvocationClock(time.monotonic() + LAMBDA_LIMIT_S, LAMBDA_LIMIT_S)
    results: list[TriggerResult] = []
    try:
        for bucket, key, version in parse_records(event):
            if is_training_input(key):
                results.append(_trigger(services, bucket, clock).handle(key, version))
    finally:
        if own:
            services.close()
    return results
