"""Classification metrics with scikit-learn's definitions, without scikit-learn.

Argument order is always ``(y_true, y_pred)``, as in scikit-learn. Per class:
precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2 TP / (2 TP + FP + FN)
(the harmonic mean of the two, computed the way scikit-learn does so the floats
agree bit for bit). A class that is never predicted has precision 0.0 and one
that never occurs has recall 0.0 (``zero_division=0``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mnist_pipeline.text import terminal

METRIC_KEYS = ("precision", "recall", "f1-score", "support")
AVERAGES = ("macro avg", "weighted avg")


def _check_labels(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    if y_true.ndim != 1 or y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} must be 1-D and equally long")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"{name} holds labels outside 0..{num_classes - 1}")
    return y_true, y_pred


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``C[i, j]`` = number of examples of true class ``i`` predicted as ``j``; ``(C, C)`` int64."""
    y_true, y_pred = _check_labels(y_true, y_pred, num_classes)
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` elementwise, 0.0 where ``den == 0`` (scikit-learn's ``zero_division=0``)."""
    return np.divide(num, den, out=np.zeros(num.shape, np.float64), where=den != 0)


def classification_report(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]
) -> dict[str, dict[str, float] | float]:
    """Per-class precision/recall/F1/support, accuracy, macro and weighted averages.

    Parameters
    ----------
    y_true, y_pred : ndarray of int, shape (N,)
        True and predicted labels in ``0..len(class_names) - 1``, in that order.
    class_names : sequence of str
        Name of each class; the report's keys.

    Returns
    -------
    dict
        Equal to ``sklearn.metrics.classification_report(y_true, y_pred,
        labels=range(C), target_names=class_names, output_dict=True,
        zero_division=0)``, key order included.
    """
    num_classes = len(class_names)
    cm = confusion_matrix(y_true, y_pred, num_classes).astype(np.float64)  # (C, C)
    tp = np.diag(cm)
    support = cm.sum(axis=1)  # true count per class
    predicted = cm.sum(axis=0)
    scores = {
        "precision": _safe_div(tp, predicted),
        "recall": _safe_div(tp, support),
        "f1-score": _safe_div(2 * tp, support + predicted),
    }
    report: dict[str, dict[str, float] | float] = {}
    for i, name in enumerate(class_names):
        report[name] = {**{k: float(v[i]) for k, v in scores.items()}, "support": float(support[i])}
    total = float(support.sum())
    report["accuracy"] = float(tp.sum() / total) if total else 0.0
    # scikit-learn averages with the raw counts as weights; all-zero weights fall back to a plain mean.
    weights = support if total else None
    for avg, w in zip(AVERAGES, (None, weights), strict=True):
        report[avg] = {**{k: float(np.average(v, weights=w)) for k, v in scores.items()}, "support": total}
    return report


def format_report(report: dict[str, Any], class_names: Sequence[str], digits: int = 4) -> str:
    """Render a report as scikit-learn's fixed-width text table, character for character."""
    shown = {name: terminal(name) for name in class_names}  # a name cannot split a line or colour the terminal
    width = max(len(n) for n in [*shown.values(), "weighted avg", "x" * digits])

    def line(name: str, values: Sequence[str]) -> str:
        return f"{name:>{width}} " + "".join(f" {v:>9}" for v in values) + "\n"

    def row(name: str) -> str:
        r = report[name]
        return line(shown.get(name, name), [*(f"{r[k]:.{digits}f}" for k in METRIC_KEYS[:3]), str(int(r["support"]))])

    total = str(int(report["macro avg"]["support"]))
    return "".join(
        [
            line("", METRIC_KEYS) + "\n",
            *(row(n) for n in class_names),
            "\n",
            line("accuracy", ["", "", f"{report['accuracy']:.{digits}f}", total]),
            *(row(a) for a in AVERAGES),
        ]
    )
