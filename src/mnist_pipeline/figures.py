"""The report's figures, rendered headless and byte-for-byte deterministic.

Every public figure function takes arrays (no file I/O) and returns PNG bytes
(the ``fig`` parameter in its signature is supplied by :func:`_png`). Figures
are drawn on :class:`matplotlib.figure.Figure` with an explicit Agg canvas:
pyplot is never imported, so no GUI backend is ever selected and no global
figure state leaks between calls. Determinism: fixed size in inches and dpi
(pixels = inches * dpi), one bundled font (DejaVu Sans), constrained layout,
and PNG metadata without the ``Software`` entry (matplotlib writes no
timestamp into PNGs), so equal inputs give identical bytes.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mnist_pipeline.text import terminal

# Figure name -> size in inches; the PNG is round(w * dpi) x round(h * dpi) pixels.
SIZES: dict[str, tuple[float, float]] = {
    "learning_curves": (12.0, 4.8),
    "confusion_matrix": (8.0, 7.0),
    "misclassified": (9.0, 10.0),
    "weights": (10.0, 9.0),
    "per_class": (12.0, 4.8),
}
STYLE: dict[Any, Any] = {  # matplotlib types rc keys as literals; these are valid ones
    "font.family": "DejaVu Sans",  # ships with matplotlib: same glyphs everywhere
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "figure.titlesize": 14,
    "legend.fontsize": 10,
    "image.interpolation": "nearest",
    "figure.facecolor": "white",
}
NAMES = {"parse_math": False}  # text properties of a user's string (a class name): a $ is a dollar sign, not mathtext


def _png(name: str) -> Callable[[Callable[..., None]], Callable[..., bytes]]:
    """Run the decorated drawer on a fresh ``SIZES[name]`` figure under ``STYLE``; return PNG bytes."""

    def decorate(draw: Callable[..., None]) -> Callable[..., bytes]:
        @functools.wraps(draw)
        def render(*args: Any, dpi: int = 100, **kwargs: Any) -> bytes:
            with matplotlib.rc_context(STYLE):
                fig = Figure(figsize=SIZES[name], dpi=dpi, layout="constrained")
                FigureCanvasAgg(fig)
                draw(fig, *args, **kwargs)
                buf = io.BytesIO()
                fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
            return buf.getvalue()

        return render

    return decorate


def max_val_acc_index(log: Mapping[str, np.ndarray]) -> int:
    """0-based index of the epoch with the highest validation accuracy (the first, on ties)."""
    return int(np.argmax(log["val_acc"]))


@_png("learning_curves")
def learning_curves(fig: Figure, log: Mapping[str, np.ndarray]) -> None:
    """Loss and accuracy per epoch, train vs validation, the epoch of max validation accuracy marked.

    ``log`` maps ``epoch, train_loss, val_loss, train_acc, val_acc`` to ``(E,)`` arrays.
    """
    epoch, best = log["epoch"], max_val_acc_index(log)
    for ax, metric, label in zip(fig.subplots(1, 2), ("loss", "acc"), ("loss", "accuracy"), strict=True):
        train, val = log[f"train_{metric}"], log[f"val_{metric}"]
        ax.plot(epoch, train, marker="o", markersize=3, label="train")
        ax.plot(epoch, val, marker="o", markersize=3, label="validation")
        ax.axvline(
            epoch[best], color="0.45", linestyle="--", linewidth=1, label=f"max val accuracy (epoch {epoch[best]})"
        )
        ax.plot(epoch[best], val[best], marker="*", markersize=15, color="C3", linestyle="none", zorder=3)
        if metric == "loss" and np.all(np.concatenate([train, val]) > 0):
            ax.set_yscale("log")  # the late epochs' small differences stay visible
            label += " (log scale)"
        ax.set(xlabel="epoch", ylabel=label, title=f"{label.split(' ')[0].capitalize()}: train vs validation")
        ax.set_xlim(epoch[0] - 0.5, epoch[-1] + 0.5)  # room for the max-val-accuracy star at either end
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.suptitle(f"Learning curves: max validation accuracy {log['val_acc'][best]:.4f} at epoch {epoch[best]}")


@_png("confusion_matrix")
def confusion_matrix(fig: Figure, cm: np.ndarray, class_names: Sequence[str]) -> None:
    """Heatmap of the ``(C, C)`` count matrix (rows true, columns predicted), coloured by row fraction."""
    c = len(class_names)
    frac = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)  # (C, C) row-normalized
    ax = fig.subplots()
    im = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    size = max(5.0, min(10.0, 100.0 / c))
    for i, j in np.ndindex(cm.shape):
        color = "white" if frac[i, j] > 0.5 else "black"
        ax.text(j, i, str(cm[i, j]), ha="center", va="center", color=color, fontsize=size)
    labels = [terminal(name) for name in class_names]
    ax.set_xticks(range(c), labels=labels, rotation=90 if max(map(len, labels)) > 3 else 0, **NAMES)
    ax.set_yticks(range(c), labels=labels, **NAMES)
    ax.set(xlabel="predicted label", ylabel="true label")
    ax.set_title(f"Confusion matrix, test set ({int(cm.sum())} examples; counts annotated)")
    fig.colorbar(im, ax=ax, shrink=0.8, label="fraction of the true class (row-normalized)")


def most_confident_errors(proba: np.ndarray, y_true: np.ndarray, n: int) -> np.ndarray:
    """Indices of up to ``n`` wrong predictions, most confident first (ties: lower index first)."""
    y_pred = proba.argmax(axis=1)
    confidence = proba[np.arange(len(proba)), y_pred]  # (N,)
    wrong = np.flatnonzero(y_pred != y_true)
    return wrong[np.argsort(-confidence[wrong], kind="stable")][:n]


def _grid(fig: Figure, n: int) -> np.ndarray:
    cols = max(1, math.ceil(math.sqrt(n)))
    axes = np.atleast_1d(fig.subplots(math.ceil(n / cols) if n else 1, cols, squeeze=False)).ravel()
    for ax in axes:
        ax.set_axis_off()
    return axes


@_png("misclassified")
def misclassified(
    fig: Figure, images: np.ndarray, y_true: np.ndarray, proba: np.ndarray, class_names: Sequence[str], n: int
) -> None:
    """Grid of the ``n`` most confidently wrong images: true label, predicted label, confidence.

    ``images``: ``(N, rows, cols)`` pixels in [0, 1]; ``proba``: ``(N, C)`` predicted probabilities.
    """
    idx = most_confident_errors(proba, y_true, n)
    for ax, i in zip(_grid(fig, len(idx)), idx, strict=False):
        pred = int(proba[i].argmax())
        ax.imshow(images[i], cmap="gray_r", vmin=0.0, vmax=1.0)
        sure = math.floor(float(proba[i, pred]) * 1000) / 10  # truncated: 99.96% shows as 99.9%, not 100.0%
        true, predicted = terminal(class_names[y_true[i]]), terminal(class_names[pred])
        ax.set_title(f"true {true}, pred {predicted}\n{sure:.1f}% sure", fontsize=10, **NAMES)
    if not len(idx):
        fig.text(0.5, 0.5, "no misclassified test images", ha="center", va="center")
    fig.suptitle(
        f"The {len(idx)} most confidently misclassified test images (of {int((proba.argmax(1) != y_true).sum())})"
    )


def _mosaic(tiles: np.ndarray, cols: int) -> np.ndarray:
    """``(K, r, c)`` tiles -> one ``(rows*(r+1)-1, cols*(c+1)-1)`` image, NaN between and after tiles."""
    k, r, c = tiles.shape
    rows = math.ceil(k / cols)
    canvas = np.full((rows * (r + 1) - 1, cols * (c + 1) - 1), np.nan)
    for i, tile in enumerate(tiles):
        y, x = divmod(i, cols)
        canvas[y * (r + 1) : y * (r + 1) + r, x * (c + 1) : x * (c + 1) + c] = tile
    return canvas


@_png("weights")
def weights(
    fig: Figure, w: np.ndarray, image_shape: Sequence[int], max_units: int, class_names: Sequence[str] | None
) -> None:
    """First-layer weights ``w`` ``(D, K)`` as ``image_shape`` images, red positive, blue negative.

    With ``class_names`` (a model without hidden layers) each column is a class
    template; otherwise the first ``max_units`` hidden units are drawn, tiled
    into one image (one ``imshow`` rather than 64 axes: clearer and much faster).
    """
    k = w.shape[1] if class_names is not None else min(max_units, w.shape[1])
    tiles = w[:, :k].T.reshape(k, *image_shape)  # (k, rows, cols)
    # One colour scale for all, centred on zero; clipped at the 99.5th percentile of |w| so that a few
    # large weights do not wash out the rest (the colour bar's pointed ends mark the clipping).
    limit = float(np.quantile(np.abs(tiles), 0.995)) or 1.0
    style: dict[str, Any] = {
        "cmap": matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.6"),
        "vmin": -limit,
        "vmax": limit,
    }
    if class_names is not None:
        axes = _grid(fig, k)
        for ax, tile, name in zip(axes, tiles, class_names, strict=False):
            im = ax.imshow(tile, **style)
            ax.set_title(f"class {terminal(name)}", **NAMES)
        fig.suptitle("First-layer weights: one template per class (model without hidden layers)")
    else:
        cols = math.ceil(math.sqrt(k))
        ax, (r, c) = fig.subplots(), image_shape
        im = ax.imshow(_mosaic(tiles, cols), **style)
        ax.set_xticks([x * (c + 1) + c / 2 for x in range(cols)], labels=[f"+{x}" for x in range(cols)])
        ax.set_yticks(
            [y * (r + 1) + r / 2 for y in range(math.ceil(k / cols))], labels=[str(y) for y in range(0, k, cols)]
        )
        ax.set(xlabel="column: unit index = row label + column offset", ylabel="row: index of its first unit")
        ax.set_title(f"First-layer weights of hidden units 0-{k - 1} (of {w.shape[1]}), one {r}x{c} image each")
    fig.colorbar(im, ax=fig.axes, shrink=0.6, extend="both", label="weight (0 = white; pointed ends: clipped)")


@_png("per_class")
def per_class(fig: Figure, report: Mapping[str, Mapping[str, float]], class_names: Sequence[str]) -> None:
    """Grouped precision / recall / F1 bars per class, from a :func:`~mnist_pipeline.metrics.classification_report`."""
    keys, labels = ("precision", "recall", "f1-score"), ("precision", "recall", "F1")
    values = np.array([[report[name][k] for k in keys] for name in class_names])  # (C, 3)
    lowest = float(values.min())
    bottom = 0.0 if lowest < 0.5 else math.floor((lowest - 0.02) * 50) / 50  # zoom so differences show
    ax = fig.subplots()
    x, width = np.arange(len(class_names)), 0.27
    for i, label in enumerate(labels):
        ax.bar(x + (i - 1) * width, values[:, i] - bottom, width, bottom=bottom, label=label)
    ticks = [f"{terminal(name)}\nn={int(report[name]['support'])}" for name in class_names]
    ax.set_xticks(x, labels=ticks, **NAMES)
    ax.set_ylim(bottom, 1.0)
    ax.set(xlabel="class (test support)", ylabel=f"score (axis starts at {bottom:.2f})")
    ax.set_title("Per-class precision, recall and F1, test set")
    ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="outside upper right", ncols=3)
