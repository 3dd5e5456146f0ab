"""Figures for the report, drawn with matplotlib's Agg canvas and returned as PNG bytes.

No pyplot global state is touched (each figure is a :class:`matplotlib.figure.Figure` on its
own Agg canvas), so figures can be drawn from any thread, e.g. inside the server.

Usage::

    png = cost_curve([1, 2, 3], [0.69, 0.61, 0.55])
    html_img = f'<img src="{data_uri(png)}">'
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image

from lambdanet.ports.ledger import CallRow
from lambdanet.report.timeline import classify

OK_COLOR = "#2f7ed8"
RETRY_COLOR = "#f28f43"
FAIL_COLOR = "#d62728"


def data_uri(png: bytes, mime: str = "image/png") -> str:
    """``data:image/png;base64,…`` for embedding in a self-contained HTML file."""
    return f"data:{mime};base64,{base64.b64encode(png).decode('ascii')}"


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def image_png(image: np.ndarray, size: int | None = None) -> bytes:
    """uint8 (H, W, C) or (H, W) image -> PNG bytes (upscaled with nearest to ``size`` px wide)."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    img = Image.fromarray(arr)
    if size is not None and img.width < size:
        scale = size / img.width
        img = img.resize((size, max(1, round(img.height * scale))), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def cost_curve(
    epochs: Sequence[int],
    costs: Sequence[float],
    accuracy: Sequence[tuple[int, float]] | None = None,
    title: str = "Cost per epoch",
) -> bytes:
    """Cost per epoch (left axis) and, where recorded, test accuracy per epoch (right axis)."""
    fig = Figure(figsize=(7.5, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(list(epochs), list(costs), color=OK_COLOR, lw=1.6, label="cost")
    if len(epochs) == 1:
        ax.scatter(list(epochs), list(costs), color=OK_COLOR)
    ax.set_xlabel("epoch")
    ax.set_ylabel("cost")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if accuracy:
        ax2 = ax.twinx()
        xs, ys = zip(*accuracy, strict=True)
        ax2.plot(xs, ys, color="#2ca02c", lw=1.2, marker="." if len(xs) < 50 else None,
                 label="test accuracy")
        ax2.set_ylabel("test accuracy", color="#2ca02c")
        ax2.set_ylim(0, 1.02)
        lines = ax.get_lines() + ax2.get_lines()
        ax.legend(lines, [str(line.get_label()) for line in lines], loc="center right")
    return _png(fig)


def compare_curves(series: Mapping[str, tuple[Sequence[int], Sequence[float]]]) -> bytes:
    """Several runs' cost curves on one axis (``label -> (epochs, costs)``)."""
    fig = Figure(figsize=(7.5, 3.8))
    ax = fig.add_subplot(1, 1, 1)
    for label, (epochs, costs) in series.items():
        if len(epochs):
            ax.plot(list(epochs), list(costs), lw=1.5, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("cost")
    ax.set_title("Cost per epoch")
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    return _png(fig)


def confusion(cm: np.ndarray, classes: Sequence[str], title: str = "Confusion matrix (test set)") -> bytes:
    """The confusion matrix as a heat map with the count in every cell (TN/FP/FN/TP for 2x2)."""
    cm = np.asarray(cm)
    n = cm.shape[0]
    side = 3.8 if n <= 2 else min(9.0, 2.4 + 0.6 * n)
    fig = Figure(figsize=(side + 0.8, side))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=max(1, int(cm.max())))
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n), labels=list(classes), rotation=45 if n > 2 else 0, ha="right" if n > 2 else "center")
    ax.set_yticks(range(n), labels=list(classes))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    names = {(0, 0): "TN", (0, 1): "FP", (1, 0): "FN", (1, 1): "TP"} if n == 2 else {}
    threshold = cm.max() / 2 if cm.size else 0
    for i in range(n):
        for j in range(n):
            label = f"{names[(i, j)]}\n{cm[i, j]}" if names else str(cm[i, j])
            ax.text(j, i, label, ha="center", va="center", fontsize=12 if n <= 2 else 8,
                    color="white" if cm[i, j] > threshold else "black")
    return _png(fig)


def timeline(calls: Sequence[CallRow], t0: float | None = None) -> bytes:
    """One row per worker; one bar per call (blue: the round's first attempt, orange hatched: a
    later attempt of the same round, red: failed), as :func:`~lambdanet.report.timeline.classify`
    sorts them — attempt ids are run-wide, so a round's smallest attempt id is its first try.

    Dotted vertical lines mark where each round started.
    """
    fig = Figure(figsize=(7.5, max(2.0, 0.9 + 0.35 * (1 + max((c.worker for c in calls), default=0)))))
    ax = fig.add_subplot(1, 1, 1)
    if not calls:
        ax.text(0.5, 0.5, "no worker calls recorded", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return _png(fig)
    start = t0 if t0 is not None else min(c.started_at for c in calls)
    colors = {"ok": OK_COLOR, "retry": RETRY_COLOR, "failed": FAIL_COLOR}
    for bar in classify(calls):
        c = bar.call
        width = max(c.ended_at - c.started_at, 1e-3)
        ax.broken_barh([(c.started_at - start, width)], (c.worker - 0.4, 0.8), facecolors=colors[bar.state],
                       edgecolors="black" if bar.retry else "white", linewidth=0.8,
                       hatch="//" if bar.retry else None)
    round_starts: dict[int, float] = {}
    for c in calls:
        round_starts[c.round] = min(round_starts.get(c.round, c.started_at), c.started_at)
    for r, t in sorted(round_starts.items()):
        ax.axvline(t - start, color="grey", ls=":", lw=0.8)
        if len(round_starts) <= 20:
            ax.text(t - start, ax.get_ylim()[1], f" r{r}", fontsize=7, va="bottom", color="grey")
    workers = sorted({c.worker for c in calls})
    ax.set_yticks(workers, labels=[f"worker {w}" for w in workers])
    ax.set_xlabel("seconds since the first call")
    ax.legend(handles=[Patch(color=OK_COLOR, label="call"),
                       Patch(facecolor=RETRY_COLOR, edgecolor="black", label="retry", hatch="//"),
                       Patch(color=FAIL_COLOR, label="failed")], fontsize=7, loc="upper left",
              bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)
