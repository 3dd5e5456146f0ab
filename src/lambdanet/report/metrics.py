"""Classification metrics for the report: confusion matrix, per-class rates, accuracy.

Usage::

    cm = confusion_matrix(y_true, y_pred, n_classes=2)      # (C, C): rows = true, cols = predicted
    rows = per_class_metrics(cm, ["non-cat", "cat"])         # precision, recall, specificity, FPR, F1
    binary_counts(cm)                                        # {"TN": …, "FP": …, "FN": …, "TP": …}

Every rate whose denominator is zero is reported as ``None`` (rendered "n/a"), never NaN, so the
JSON output stays valid JSON.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ClassMetrics:
    """One-vs-rest figures for one class."""

    name: str
    support: int  # true samples of this class
    tp: int
    fp: int
    fn: int
    tn: int
    precision: float | None
    recall: float | None  # = sensitivity
    specificity: float | None
    fpr: float | None  # false-positive rate = 1 - specificity
    f1: float | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if den > 0 else None


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """int64 (C, C) counts; entry [i, j] = samples of true class i predicted as j."""
    t = np.asarray(y_true, dtype=np.int64).ravel()  # (m,)
    p = np.asarray(y_pred, dtype=np.int64).ravel()  # (m,)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} labels but y_pred has {p.size}")
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float | None:
    t = np.asarray(y_true).ravel()
    p = np.asarray(y_pred).ravel()
    return float(np.mean(t == p)) if t.size else None


def per_class_metrics(cm: np.ndarray, classes: list[str]) -> list[ClassMetrics]:
    """One-vs-rest precision, recall, specificity, FPR and F1 for every class of ``cm``."""
    cm = np.asarray(cm, dtype=np.int64)
    total = int(cm.sum())
    tp = np.diag(cm)  # (C,)
    fp = cm.sum(axis=0) - tp  # predicted as c but not c
    fn = cm.sum(axis=1) - tp  # c but predicted otherwise
    tn = total - tp - fp - fn
    out: list[ClassMetrics] = []
    for c, name in enumerate(classes):
        precision = _ratio(tp[c], tp[c] + fp[c])
        recall = _ratio(tp[c], tp[c] + fn[c])
        specificity = _ratio(tn[c], tn[c] + fp[c])
        fpr = _ratio(fp[c], fp[c] + tn[c])
        f1 = (
            2 * precision * recall / (precision + recall)
            if precision is not None and recall is not None and precision + recall > 0
            else (0.0 if precision is not None and recall is not None else None)
        )
        out.append(
            ClassMetrics(
                name=name, support=int(tp[c] + fn[c]), tp=int(tp[c]), fp=int(fp[c]), fn=int(fn[c]),
                tn=int(tn[c]), precision=precision, recall=recall, specificity=specificity,
                fpr=fpr, f1=f1,
            )
        )
    return out


def binary_counts(cm: np.ndarray) -> dict[str, int]:
    """TN/FP/FN/TP of a 2x2 matrix, class 1 being the positive class (itsacat's "cat")."""
    if cm.shape != (2, 2):
        raise ValueError(f"binary_counts needs a 2x2 matrix, got {cm.shape}")
    return {"TN": int(cm[0, 0]), "FP": int(cm[0, 1]), "FN": int(cm[1, 0]), "TP": int(cm[1, 1])}


def macro_average(rows: list[ClassMetrics], field: str) -> float | None:
    """Mean of ``field`` over the classes where it is defined."""
    values = [getattr(r, field) for r in rows if getattr(r, field) is not None]
    return float(np.mean(values)) if values else None


@dataclass
class Evaluation:
    """A model evaluated on a labelled set."""

    classes: list[str]
    y_true: np.ndarray  # int64 (m,)
    y_pred: np.ndarray  # int64 (m,)
    proba: np.ndarray  # float (m, C)
    cm: np.ndarray  # int64 (C, C)
    rows: list[ClassMetrics]
    accuracy: float | None

    @property
    def errors(self) -> np.ndarray:
        """Indices of the mislabelled samples, in data order."""
        return np.flatnonzero(self.y_true != self.y_pred)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "n": int(self.y_true.size),
            "accuracy": self.accuracy,
            "errors": int(self.errors.size),
            "confusion_matrix": self.cm.tolist(),
            "classes": list(self.classes),
            "per_class": [r.to_json() for r in self.rows],
            "macro_f1": macro_average(self.rows, "f1"),
        }
        if self.cm.shape == (2, 2):
            out["binary"] = binary_counts(self.cm)
            pos = self.rows[1]
            out["sensitivity"] = pos.recall
            out["specificity"] = pos.specificity
            out["precision"] = pos.precision
            out["fpr"] = pos.fpr
            out["f1"] = pos.f1
        return out


def evaluate(proba: np.ndarray, y_true: np.ndarray, classes: list[str]) -> Evaluation:
    """Build an :class:`Evaluation` from predicted probabilities (m, C) and true labels (m,)."""
    proba = np.asarray(proba, dtype=np.float64)
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    if proba.ndim != 2 or proba.shape[0] != y_true.size:
        raise ValueError(f"proba has shape {proba.shape}, expected ({y_true.size}, {len(classes)})")
    y_pred = proba.argmax(axis=1).astype(np.int64)  # (m,)
    cm = confusion_matrix(y_true, y_pred, len(classes))
    return Evaluation(
        classes=list(classes), y_true=y_true, y_pred=y_pred, proba=proba, cm=cm,
        rows=per_class_metrics(cm, list(classes)), accuracy=accuracy(y_true, y_pred),
    )
