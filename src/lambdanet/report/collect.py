"""Gather everything a report shows about one run: ledger rows, the model's predictions on the
run's own data, and predictions on a folder of photos.

Usage::

    services = Services.open()
    report = collect(services, "r-…", images_dir=Path("photos"))
    report.test.accuracy, report.test.cm, report.notes

Nothing here raises for a half-finished or broken run except an unknown run id
(:class:`~lambdanet.errors.RunNotFound`): a missing model, unreadable data or an undecodable
photo becomes a line in ``report.notes`` (or in that photo's ``error``) and the report renders
what it can.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lambdanet.errors import LambdanetError
from lambdanet.ports.ledger import CallRow, EpochRow, RunRecord
from lambdanet.report.metrics import Evaluation, evaluate
from lambdanet.report.timeline import TimelineCall, classify, retried_attempts
from lambdanet.runview import RunView, clean_json, epochs_done, retry_lines, setting, training_config
from lambdanet.services import Services

__all__ = ["PhotoPrediction", "RunReport", "clean_json", "collect", "epochs_done", "setting", "summarise",
           "training_config"]

MAX_TRAIN_EVAL = 20_000  # above this many training samples, train accuracy comes from the ledger
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".heic", ".avif"}


@dataclass
class PhotoPrediction:
    """The model's answer for one photo of ``--images`` (or why there is none)."""

    name: str
    label: str | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    thumbnail: np.ndarray | None = None  # uint8 (h, w, 3), at most 128 px

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "probabilities": self.probabilities,
                "error": self.error}


@dataclass
class RunReport:
    """All the facts one report renders."""

    run: RunRecord
    epochs: list[EpochRow]
    calls: list[CallRow]
    summary: dict[str, Any]
    train: Evaluation | None = None
    test: Evaluation | None = None
    test_images: np.ndarray | None = None  # uint8 (m, H, W, C), the test set as evaluated
    photos: list[PhotoPrediction] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    generated_at: float = field(default_factory=time.time)

    @property
    def timeline(self) -> list[TimelineCall]:
        """The calls as the timeline draws them: each with its try within its round (a retry is a
        second or later attempt of the same round; attempt ids are run-wide)."""
        return classify(self.calls)

    @property
    def test_accuracy_curve(self) -> list[tuple[int, float]]:
        return [(e.epoch, float(e.extra["test_accuracy"])) for e in self.epochs
                if isinstance(e.extra.get("test_accuracy"), int | float)]

    def to_json(self) -> dict[str, Any]:
        """The report's metrics as plain JSON (what ``lambdanet report --json`` writes)."""
        out: dict[str, Any] = clean_json({
            "run_id": self.run.run_id,
            "summary": self.summary,
            "config": self.run.config,
            "epochs": [{"epoch": e.epoch, "cost": e.cost, "seconds": e.seconds, **e.extra}
                       for e in self.epochs],
            "train": self.train.to_json() if self.train else None,
            "test": self.test.to_json() if self.test else None,
            "mislabelled": (
                [{"index": int(i), "true": self.test.classes[self.test.y_true[i]],
                  "predicted": self.test.classes[self.test.y_pred[i]],
                  "probability": float(self.test.proba[i, self.test.y_pred[i]])}
                 for i in self.test.errors] if self.test else []
            ),
            "photos": [p.to_json() for p in self.photos],
            "calls": [{"round": c.round, "attempt": c.attempt, "try": t.try_no, "retry": t.retry,
                       "worker": c.worker, "started_at": c.started_at, "ended_at": c.ended_at, "ok": c.ok,
                       "error": c.error}
                      for t in self.timeline for c in (t.call,)],
            "notes": self.notes,
            "generated_at": self.generated_at,
        })
        return out


def summarise(run: RunRecord, epochs: list[EpochRow], calls: list[CallRow]) -> dict[str, Any]:
    """The summary table: what ran, how long, how far, why it stopped and what it cost."""
    m = run.metrics
    view = RunView.of(run)
    cfg = view.training
    wall = m.get("wall_seconds")
    if wall is None and run.started_at and run.ended_at:
        wall = run.ended_at - run.started_at
    worker_seconds = m.get("worker_seconds")
    if worker_seconds is None and calls:
        worker_seconds = sum(max(0.0, c.ended_at - c.started_at) for c in calls)
    final_cost = m.get("final_cost")
    if final_cost is None and epochs:
        final_cost = epochs[-1].cost
    out: dict[str, Any] = clean_json({
        "run_id": run.run_id,
        "status": run.status,
        "kind": run.kind,
        "model": run.model,
        "data": run.data,
        "strategy": view.setting("strategy"),
        "workers": view.setting("workers"),
        "executor": view.setting("executor"),
        "store": view.setting("store_url"),
        "epochs_run": epochs_done(run, epochs),
        "epochs_configured": cfg.get("epochs"),
        "stop_reason": run.stop_reason or m.get("stop_reason"),
        "error": run.error,
        "final_cost": final_cost,
        "train_accuracy": m.get("train_accuracy"),
        "test_accuracy": m.get("test_accuracy"),
        "wall_seconds": wall,
        "rounds": m.get("rounds", len({c.round for c in calls}) if calls else None),
        "retries": m.get("retries", retried_attempts(calls) if calls else None),
        "retry_reasons": retry_lines(m.get("retry_log")),
        "worker_calls": m.get("worker_calls", len(calls) if calls else None),
        "worker_seconds": worker_seconds,
        "store_bytes": m.get("store_bytes"),
        "sync_seconds": m.get("sync_seconds"),
        "lambda_memory_mb": view.setting("lambda_memory_mb"),
        "cpu_threads": view.engine.cpu_budget.threads,  # per worker (None: not limited / not recorded)
        "cpu_threads_source": view.engine.cpu_budget.source,
        "estimated_cost_usd": m.get("estimated_cost_usd"),
        "created_at": run.created_at,
        "started_at": run.started_at,
        "ended_at": run.ended_at,
    })
    return out


def _load_data(services: Services, run: RunRecord) -> Any:
    """The data the run trained on: its snapshot (``runs/<id>/data.json`` → ``datasets/<sha256>.npz``,
    written by the driver), else the data set at ``run.data``."""
    from lambdanet.data.readers import load_dataset

    try:
        from lambdanet.engine.checkpoints import read_data

        return read_data(services.objects, run.run_id)
    except (LambdanetError, ImportError, KeyError, ValueError, OSError):
        pass
    return load_dataset(run.data)


def _fit(images: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 (m, H, W, C) resized to the model's input shape where it differs."""
    if images.ndim == 4 and tuple(images.shape[1:]) == tuple(shape):
        return images
    from lambdanet.data.readers import fit_images

    return fit_images(images, (int(shape[0]), int(shape[1])))  # the training data path's resize policy


def predict_in_chunks(predictor: Any, images: np.ndarray, chunk: int = 2000) -> np.ndarray:
    """(m, C) probabilities, ``chunk`` images at a time (bounded memory for CIFAR-10)."""
    shape = tuple(predictor.input_shape)
    parts = [np.asarray(predictor.predict_proba(_fit(images[i:i + chunk], shape)))
             for i in range(0, len(images), chunk)]
    return np.concatenate(parts, axis=0) if parts else np.zeros((0, len(predictor.classes)))


def list_photos(folder: Path) -> list[Path]:
    """The files of ``folder`` to predict (hidden files skipped), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def predict_photos(predictor: Any, folder: Path) -> list[PhotoPrediction]:
    """One :class:`PhotoPrediction` per file of ``folder``; a file that cannot be read or
    decoded gets an ``error`` line instead of a label."""
    from PIL import Image

    from lambdanet.data.images import decode_image, photo_to_array

    out: list[PhotoPrediction] = []
    for path in list_photos(folder):
        photo = PhotoPrediction(name=path.name)
        out.append(photo)
        try:
            data = path.read_bytes()
            img = decode_image(data)
            x = photo_to_array(data, tuple(predictor.input_shape))[None]  # (1, H, W, C), fitted as serve fits it
            proba = np.asarray(predictor.predict_proba(x))[0]  # (C,)
        except LambdanetError as exc:
            photo.error = f"{path.name}: {exc}"
            continue
        except OSError as exc:
            photo.error = f"{path.name}: cannot read the file ({exc.strerror or exc.__class__.__name__})"
            continue
        photo.probabilities = {c: float(p) for c, p in zip(predictor.classes, proba, strict=True)}
        photo.label = predictor.classes[int(proba.argmax())]
        thumb = img.convert("RGB")
        thumb.thumbnail((128, 128), Image.Resampling.BILINEAR)
        photo.thumbnail = np.asarray(thumb, dtype=np.uint8)
    return out


def collect(services: Services, run_id: str, images_dir: Path | None = None,
            predictions: bool = True) -> RunReport:
    """Build the :class:`RunReport` of ``run_id`` (RunNotFound if the ledger has no such run)."""
    run = services.ledger.get_run(run_id)
    epochs = services.ledger.epochs(run_id)
    calls = sorted(services.ledger.calls(run_id), key=lambda c: (c.round, c.attempt, c.worker))
    report = RunReport(run=run, epochs=epochs, calls=calls, summary=summarise(run, epochs, calls))
    if not epochs:
        report.notes.append(f"run {run_id} has no epochs recorded yet (status: {run.status})")
    if not predictions and images_dir is None:
        return report
    if not run.model or ":" not in run.model:
        report.notes.append(f"run {run_id} has no registered model yet (status: {run.status}); "
                            "no predictions, confusion matrix or photo predictions")
        return report
    try:
        from lambdanet.predictor import load_predictor

        predictor = load_predictor(services.registry.load(run.model))
    except LambdanetError as exc:
        report.notes.append(f"cannot load model {run.model}: {exc}")
        return report
    if predictions:
        _evaluate(services, run, predictor, report)
    if images_dir is not None:
        if not images_dir.is_dir():
            report.notes.append(f"--images {images_dir}: not a folder")
        else:
            report.photos = predict_photos(predictor, images_dir)
            if not report.photos:
                report.notes.append(f"--images {images_dir}: the folder has no files")
    return report


def _evaluate(services: Services, run: RunRecord, predictor: Any, report: RunReport) -> None:
    try:
        data = _load_data(services, run)
    except LambdanetError as exc:
        report.notes.append(f"cannot read the run's data {run.data}: {exc}")
        return
    classes = list(predictor.classes)
    x_train, y_train, x_test, y_test = _run_arrays(run, data)
    if x_test is not None and y_test is not None and len(y_test):
        report.test = evaluate(predict_in_chunks(predictor, x_test), y_test, classes)
        report.test_images = x_test
    else:
        report.notes.append(f"the data set {run.data} has no test set; metrics are on the training set")
    if len(y_train) <= MAX_TRAIN_EVAL:
        report.train = evaluate(predict_in_chunks(predictor, x_train), y_train, classes)
    else:
        report.notes.append(f"training set has {len(y_train)} samples; train accuracy is the one "
                            "the run recorded")


def _run_arrays(run: RunRecord, data: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The samples the run trained and tested on: a CNN config's ``limit_train``/``limit_test``
    pick the same shuffled subsets as the CNN strategy (``torchnet.data.subset``)."""
    cfg = training_config(run)
    x, y, xt, yt = data.x_train, data.y_train, data.x_test, data.y_test
    limit_train, limit_test = cfg.get("limit_train"), cfg.get("limit_test")
    if run.kind == "cnn" and (limit_train or limit_test):
        from lambdanet.torchnet.data import subset

        seed = int(cfg.get("seed", 0))
        if isinstance(limit_train, int) and limit_train < len(y):
            i = subset(len(y), limit_train, seed)
            x, y = x[i], y[i]
        if yt is not None and isinstance(limit_test, int) and limit_test < len(yt):
            i = subset(len(yt), limit_test, seed + 1)
            xt, yt = xt[i], yt[i]
    return x, y, xt, yt
