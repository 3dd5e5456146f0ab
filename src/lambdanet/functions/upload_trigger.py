"""Upload-triggered training (itsacat's S3 ``training_input/`` trigger), for the CLI and Lambda.

Usage::

    services = Services.open()                                   # ledger, registry, notifier
    trigger = UploadTrigger(services, adapters.open_objects("s3://my-bucket"), workers=2)
    trigger.run_once()            # one run per new training_input/ upload (``lambdanet watch --once``)
    trigger.handle("training_input/datasets.h5", version="3HL4kqtJ…")   # one S3 event's object
    trigger.watch(interval_s=10)  # forever (``lambdanet watch``)

For each ``training_input/<name>.h5`` (any depth; ``.h5``/``.hdf5``, ``.npz``, or a ``.zip`` /
``.tar`` / ``.tar.gz`` / ``.tgz`` of class folders of photos) the trigger

1. claims ``<watched url>/<key>#<version>`` in the ledger (S3 VersionId or ETag; a folder's
   mtime-size) — the same object version seen twice (two S3 deliveries, two watchers) starts
   one run; a new upload of the same key is a new version and a new run;
2. reads ``training_input/parameters.json`` (itsacat's format, or a CNN config) and the data
   set — an archive is checked member by member and extracted safely
   (:mod:`lambdanet.data.archives`: no path out of it, no links, at most 1 GiB uncompressed,
   images in it), an ``.npz`` is size-checked before it is loaded, and the images are decoded
   with the config's ``image_size`` (:mod:`lambdanet.data.folders`) into the arrays the run
   trains on; a missing/invalid file is a *failed run* in the ledger with the reason, and a
   notification, and nothing is written to ``predict_input/`` or ``training_results/``;
3. starts the run under that same run id (:meth:`begin`: data snapshot and first checkpoint),
   drives it (:meth:`handle` in this process; the training function one round per durable
   step, see :mod:`lambdanet.functions.training_function`) — the driver checkpoints, registers
   the model version and sends itsacat's messages — and then (:meth:`publish`) writes
   ``predict_input/params.h5`` (datasets W1..WL, b1..bL; MLP models only) and, last,
   ``training_results/results.json`` (run id, start, end, per-epoch cost, metrics, model).
   Each object is written in one atomic put.

Upload ``parameters.json`` before the data: the data file is what triggers a run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path, PurePosixPath
from typing import Any

from lambdanet.adapters import redact
from lambdanet.config import parse_config
from lambdanet.engine.requests import new_run_id
from lambdanet.errors import (
    ConfigError,
    LambdanetError,
    NotifierUnavailable,
    ObjectNotFound,
    RunNotFound,
    Unavailable,
)
from lambdanet.ports import ObjectStore, RunRecord
from lambdanet.services import Services

INPUT_PREFIX = "training_input/"
PARAMS_KEY = "training_input/parameters.json"
PARAMS_H5_KEY = "predict_input/params.h5"
RESULTS_KEY = "training_results/results.json"
DATA_SUFFIXES = (".h5", ".hdf5", ".npz", ".zip", ".tar", ".tar.gz", ".tgz")


def is_training_input(key: str) -> bool:
    return key.startswith(INPUT_PREFIX) and key.lower().endswith(DATA_SUFFIXES)


@dataclass
class TriggerResult:
    """What happened to one uploaded object."""

    key: str
    version: str
    status: str  # "completed" | "failed" | "skipped" (already claimed) | "started" (begin: drive run_id)
    run_id: str | None = None
    error: str | None = None
    model: str | None = None
    outputs: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TriggerResult:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


class UploadTrigger:
    """Starts one training run per new ``training_input/`` data upload in a watched object store."""

    def __init__(self, services: Services, watched: ObjectStore, *, workers: int = 1,
                 strategy: str = "neuron", executor: str | None = None, store_url: str | None = None,
                 model_name: str | None = None,
                 epochs_per_round: int | None = None, round_seconds: float | None = None,
                 progress: Any = None) -> None:
        self.services = services
        self.watched = watched
        self.workers = workers
        self.strategy = strategy
        self.executor = executor or services.settings.executor
        self.store_url = store_url or services.settings.store_url
        self.model_name = model_name
        self.epochs_per_round = epochs_per_round
        self.round_seconds = round_seconds
        self.progress = progress

    # ---- discovery -----------------------------------------------------------------------------
    def claim_key(self, key: str, version: str) -> str:
        return f"{redact(self.watched.url)}/{key}#{version}"

    def uploads(self) -> list[tuple[str, str]]:
        """(key, version) of every training input in the watched store, sorted by key."""
        found = []
        for key in self.watched.list(INPUT_PREFIX):
            if is_training_input(key):
                try:
                    found.append((key, self.watched.info(key).version))
                except ObjectNotFound:
                    continue  # deleted between list and info
        return found

    def pending(self) -> list[tuple[str, str]]:
        """The uploads no run has claimed yet."""
        ledger = self.services.ledger
        return [(k, v) for k, v in self.uploads() if ledger.claimed_by(self.claim_key(k, v)) is None]

    def run_once(self) -> list[TriggerResult]:
        return [self.handle(key, version) for key, version in self.pending()]

    def watch(self, interval_s: float = 10.0, stop: threading.Event | None = None,
              on_result: Any = None) -> None:
        """Poll every ``interval_s`` seconds until ``stop`` is set (or Ctrl-C)."""
        stop = stop or threading.Event()
        while not stop.is_set():
            for result in self.run_once():
                if on_result is not None:
                    on_result(result)
            stop.wait(interval_s)

    # ---- one object ----------------------------------------------------------------------------
    def handle(self, key: str, version: str | None = None) -> TriggerResult:
        """Train on one uploaded object in this process (idempotent per key and version)."""
        begun = self.begin(key, version)
        if begun.status != "started" or begun.run_id is None:
            return begun
        from lambdanet.engine.driver import Driver

        try:
            Driver(self.services, progress=self.progress).drive(begun.run_id, store_url=self.store_url,
                                                                executor_name=self.executor)
        except Unavailable:
            raise
        except LambdanetError as exc:  # the driver recorded and notified the failure
            return TriggerResult(key, begun.version, "failed", run_id=begun.run_id, error=str(exc))
        return self.publish(key, begun.version, begun.run_id)

    @staticmethod
    def run_id_for(claim: str, execution: str | None, uploaded_at: float) -> str:
        """The run id of an upload's claim: a fresh random one without ``execution`` (``lambdanet
        watch``); derived from the claim and the durable execution with one, so that a retried
        ``begin`` of that execution finds its own claim (and every other execution a different id).
        The time in a derived id is the upload's (``uploaded_at``)."""
        if execution is None:
            return new_run_id()
        digest = hashlib.sha256(f"{claim}\n{execution}".encode()).hexdigest()[:12]
        return time.strftime("r-%Y%m%d-%H%M%S-", time.gmtime(uploaded_at)) + digest

    def begin(self, key: str, version: str | None = None, *, execution: str | None = None) -> TriggerResult:
        """Claim the upload and start its run: parameters read and checked, data set written as the
        run's snapshot, first checkpoint. ``status``: "started" (then drive ``run_id``), "skipped"
        (another delivery owns it) or "failed" (a bad upload: recorded and notified). This is the
        durable driver's first step; an infrastructure error raises so that it is retried.

        ``execution`` (the durable execution's ARN) makes it idempotent per execution: the run id
        is derived from the claim and the execution, so a retry of the step (after an error or a
        kill anywhere after the claim) finds the claim its own and finishes what the first attempt
        left undone — the data snapshot, the first checkpoint, the run's row — or returns what it
        recorded. Another execution for the same upload version still gets "skipped"."""
        if not is_training_input(key):
            return TriggerResult(key, version or "", "skipped",
                                 error="not a training_input/ data object (.h5, .npz, .zip, .tar, .tar.gz)")
        info = self.watched.info(key) if version is None or execution is not None else None
        if version is None:
            assert info is not None
            version = info.version
        ledger = self.services.ledger
        claim = self.claim_key(key, version)
        run_id = self.run_id_for(claim, execution, info.modified if info is not None else time.time())
        if not ledger.claim(claim, run_id):
            owner = ledger.claimed_by(claim)
            if owner != run_id:  # another delivery (execution, watcher) owns this upload version
                return TriggerResult(key, version, "skipped", run_id=owner,
                                     error=f"{key}#{version} is already claimed by run {owner} (another delivery "
                                           f"of the same upload trains it)")
            done = self._recorded(key, version, run_id)  # a retry of this execution's own begin
            if done is not None:
                return done
        source = f"{redact(self.watched.url)}/{key}"
        started = time.time()
        with tempfile.TemporaryDirectory(prefix="lambdanet-trigger-") as tmp:
            raw: Any = None
            try:
                raw = self._read_params()
                config = parse_config(raw, source=PARAMS_KEY)
                data_path = self._prepare_data(self._download(key, Path(tmp)), config)
            except LambdanetError as exc:
                if isinstance(exc, Unavailable):
                    raise
                return self._fail_before_run(run_id, key, version, source, str(exc), started,
                                             raw=raw if isinstance(raw, dict) else None)
            from lambdanet.engine.driver import Driver

            # a retry after a kill between the claim and the run's row (the row is Driver.start's
            # commit point) writes the same data snapshot and first checkpoint again, then the row;
            # never once the row exists (the run may have trained on from that checkpoint since)
            done = self._recorded(key, version, run_id)
            if done is not None:
                return done
            try:
                Driver(self.services).start(self._request(config, data_path), run_id, source=source)
            except Unavailable:
                raise
            except LambdanetError as exc:
                done = self._recorded(key, version, run_id)  # another attempt of this begin made the row
                if done is not None:
                    return done
                # refused while validating, or its data could not be written: the ledger has no row yet
                return self._fail_before_run(run_id, key, version, source, str(exc), started,
                                             raw=config.model_dump())
        return TriggerResult(key, version, "started", run_id=run_id)

    def _recorded(self, key: str, version: str, run_id: str) -> TriggerResult | None:
        """What an earlier attempt of this begin recorded for ``run_id`` (its ledger row: a started
        run, or an upload that failed its checks), or None when it made no row yet."""
        try:
            record = self.services.ledger.get_run(run_id)
        except RunNotFound:
            return None
        if record.status == "failed" and record.metrics.get("trigger_key") == key:  # _fail_before_run's row
            return TriggerResult(key, version, "failed", run_id=run_id, error=record.error)
        return TriggerResult(key, version, "started", run_id=run_id)

    def _read_params(self) -> Any:
        try:
            blob = self.watched.get(PARAMS_KEY)
        except ObjectNotFound:
            raise ConfigError(f"{PARAMS_KEY}: missing; upload parameters.json beside the .h5 "
                              "(before it), then upload the .h5 again") from None
        try:
            return json.loads(blob.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{PARAMS_KEY}: not valid JSON ({exc})") from None

    def _download(self, key: str, tmp: Path) -> Path:
        path = tmp / PurePosixPath(key).name
        path.write_bytes(self.watched.get(key))
        return path

    @staticmethod
    def _prepare_data(path: Path, config: Any) -> Path:
        """The upload read as the run will train on it — an archive checked and extracted safely,
        an ``.npz`` size-checked first, images decoded at the config's ``image_size`` — and
        written as one ``.npz`` beside it (the driver reads those arrays as they are)."""
        from lambdanet.data.archives import check_npz_size
        from lambdanet.data.readers import load_dataset, save_dataset

        try:
            if path.name.lower().endswith(".npz"):
                check_npz_size(path)
            ds = load_dataset(path, config)
            out = path.parent / "prepared"
            out.mkdir()
            return save_dataset(ds, out / f"{path.name.split('.')[0] or 'data'}.npz")
        except LambdanetError:
            raise
        except Exception as exc:
            from lambdanet.errors import DataError

            raise DataError(f"{path.name}: cannot read it as a data set ({type(exc).__name__}: {exc})") from None

    def _notify(self, subject: str, message: str, **fields: Any) -> None:
        with contextlib.suppress(NotifierUnavailable):  # a lost notification never fails the trigger
            self.services.notifier.notify(subject, message, **fields)

    def _fail_before_run(self, run_id: str, key: str, version: str, source: str, reason: str,
                         started: float, raw: dict[str, Any] | None) -> TriggerResult:
        now = time.time()
        done = self._recorded(key, version, run_id)
        if done is not None:  # recorded (and notified) by an earlier attempt of this begin
            return done
        self.services.ledger.create_run(RunRecord(
            run_id=run_id, status="failed", kind="cnn" if raw and "model" in raw else "mlp",
            config=raw or {}, data=source,
            model=self.model_name, created_at=started, started_at=started, ended_at=now,
            stop_reason="error", error=reason, metrics={"trigger_key": key, "trigger_version": version},
        ))
        self._notify("Training failed", f"Training Failed! {key}: {reason}", run_id=run_id, event="failed",
                     error=reason, key=key)
        return TriggerResult(key, version, "failed", run_id=run_id, error=reason)

    def _request(self, config: Any, data_path: Path) -> Any:
        from lambdanet.engine.driver import TrainRequest

        request = TrainRequest(
            data=str(data_path), config=config, workers=self.workers,
            strategy=self.strategy if config.kind == "mlp" else "data", store_url=self.store_url,
            executor=self.executor, epochs_per_round=self.epochs_per_round,
        )
        if self.model_name:
            request = request.replace(model_name=self.model_name)
        if self.round_seconds:
            request = request.replace(round_seconds=self.round_seconds)
        return request

    def publish(self, key: str, version: str, run_id: str) -> TriggerResult:
        """Write ``predict_input/params.h5`` (MLP) and then ``training_results/results.json`` for a
        completed run (idempotent: every object is one atomic put, and none is written again once
        results.json holds this run's results)."""
        record = self.services.ledger.get_run(run_id)
        if record.status != "completed":
            return TriggerResult(key, version, "failed", run_id=run_id,
                                 error=f"run ended {record.status} ({record.stop_reason})")
        with tempfile.TemporaryDirectory(prefix="lambdanet-publish-") as tmp:
            outputs = self._publish(record, key, version, Path(tmp))
        return TriggerResult(key, version, "completed", run_id=run_id, model=record.model, outputs=outputs)

    def _publish(self, record: RunRecord, key: str, version: str, tmp: Path) -> list[str]:
        """Write params.h5 (MLP) and then results.json into the watched store — unless results.json
        already holds exactly this run's results: it is written last, so both were written by an
        earlier attempt (a finish step replayed after a kill), and a versioned bucket keeps one
        version of each."""
        model = str(record.model or "")
        registry = self.services.registry
        mv = registry.load(model)
        mlp = mv.metadata.get("kind", "mlp") == "mlp"
        results = self._results(record, key, version)
        outputs = [PARAMS_H5_KEY, RESULTS_KEY] if mlp else [RESULTS_KEY]
        with contextlib.suppress(ObjectNotFound):
            if self.watched.get(RESULTS_KEY) == results:
                return outputs
        if mlp:
            out = registry.export_itsacat_h5(model, tmp / "params.h5")
            self.watched.put(PARAMS_H5_KEY, out.read_bytes())
        self.watched.put(RESULTS_KEY, results)
        return outputs

    def _results(self, record: RunRecord, key: str, version: str) -> bytes:
        """results.json of a completed run (the same bytes every time it is asked for)."""
        run_id = record.run_id
        model = str(record.model or "")
        metrics = record.metrics
        epochs = self.services.ledger.epochs(run_id)
        results = {
            "run_id": run_id, "source": key, "version": version, "model": model,
            "status": record.status, "stop_reason": record.stop_reason,
            "start": record.started_at, "end": record.ended_at,
            "epochs_run": metrics.get("epochs_done"), "final_cost": metrics.get("final_cost"),
            "train_accuracy": metrics.get("train_accuracy"), "test_accuracy": metrics.get("test_accuracy"),
            "costs": [{"epoch": e.epoch, "cost": e.cost} for e in epochs],
        }
        return json.dumps(results, indent=1, default=float).encode()
