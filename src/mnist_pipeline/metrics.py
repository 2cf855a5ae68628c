"""Classification metrics with scikit-learn's definitions, without scikit-learn.

Argument order is always ``(y_true, y_pred)``, as in scikit-learn. A class that
is never predicted has precision 0.0 (``zero_division=0``); one that never
occurs has recall 0.0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``C[i, j]`` = number of examples of true class ``i`` predicted as ``j``."""
    return np.bincount(
        np.asarray(y_true, np.int64) * num_classes + np.asarray(y_pred, np.int64), minlength=num_classes**2
    ).reshape(num_classes, num_classes)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den != 0)


def classification_report(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]
) -> dict[str, dict[str, float] | float]:
    """Per-class precision/recall/F1/support, accuracy, macro and weighted averages.

    Structure and values match ``sklearn.metrics.classification_report(y_true,
    y_pred, labels=range(C), target_names=class_names, output_dict=True,
    zero_division=0)``.
    """
    cm = confusion_matrix(y_true, y_pred, len(class_names)).astype(np.float64)
    tp = np.diag(cm)
    support = cm.sum(axis=1)  # true counts per class
    predicted = cm.sum(axis=0)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    report: dict[str, dict[str, float] | float] = {}
    for i, name in enumerate(class_names):
        report[name] = {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1-score": float(f1[i]),
            "support": float(support[i]),
        }
    total = float(support.sum())
    report["accuracy"] = float(tp.sum() / total) if total else 0.0
    weights = support / total if total else np.zeros_like(support)
    for avg, w in (("macro avg", None), ("weighted avg", weights)):
        report[avg] = {
            "precision": float(np.average(precision, weights=w)) if w is None or total else 0.0,
            "recall": float(np.average(recall, weights=w)) if w is None or total else 0.0,
            "f1-score": float(np.average(f1, weights=w)) if w is None or total else 0.0,
            "support": total,
        }
    return report


def format_report(report: dict, class_names: Sequence[str], digits: int = 4) -> str:
    """Render a report as the familiar fixed-width text table."""
    width = max(len(n) for n in [*class_names, "weighted avg"])
    head = f"{'':>{width}} {'precision':>9} {'recall':>9} {'f1-score':>9} {'support':>9}"
    lines = [head, ""]
    for name in class_names:
        r = report[name]
        lines.append(
            f"{name:>{width}} {r['precision']:>9.{digits}f} {r['recall']:>9.{digits}f} "
            f"{r['f1-score']:>9.{digits}f} {int(r['support']):>9d}"
        )
    total = int(report["macro avg"]["support"])
    lines += ["", f"{'accuracy':>{width}} {'':>9} {'':>9} {report['accuracy']:>9.{digits}f} {total:>9d}"]
    for avg in ("macro avg", "weighted avg"):
        r = report[avg]
        lines.append(
            f"{avg:>{width}} {r['precision']:>9.{digits}f} {r['recall']:>9.{digits}f} "
            f"{r['f1-score']:>9.{digits}f} {total:>9d}"
        )
    return "\n".join(lines) + "\n"
