"""Classification report against scikit-learn (a dev-only dependency), by hand, and argument order."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import requires

import numpy as np
import pytest
from sklearn.metrics import classification_report as sk_report

from mnist_pipeline.metrics import classification_report, confusion_matrix, format_report

NAMES = [str(i) for i in range(10)]


def _sklearn(y_true: np.ndarray, y_pred: np.ndarray, names=NAMES, **kwargs):
    return sk_report(y_true, y_pred, labels=range(len(names)), target_names=names, zero_division=0, **kwargs)


def _random(seed: int, n: int, correct: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 10, n)
    return y_true, np.where(rng.random(n) < correct, y_true, rng.integers(0, 10, n))


def _adversarial() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    y_true, y_pred = _random(1, 400, 0.7)
    no_true_7 = y_true != 7
    never_2 = y_pred.copy()
    never_2[never_2 == 2] = 5
    return {
        "class missing from y_true": (y_true[no_true_7], y_pred[no_true_7]),  # 7 predicted but never true
        "class never predicted": (y_true, never_2),
        "several classes absent": (np.array([0, 0, 1, 3, 3]), np.array([0, 1, 1, 3, 0])),
        "all one class, all right": (np.full(50, 4), np.full(50, 4)),
        "all one class true, predictions spread": (np.full(50, 4), np.arange(50) % 10),
        "all one class predicted": (np.arange(50) % 10, np.full(50, 9)),
        "all wrong": (np.arange(30) % 10, (np.arange(30) + 1) % 10),
        "perfect": (np.arange(30) % 10, np.arange(30) % 10),
        "single example": (np.array([3]), np.array([8])),
    }


CASES = {
    **{f"random seed={s} n={n} p={p}": _random(s, n, p) for s, n, p in [(0, 1000, 0.9), (2, 37, 0.5), (3, 200, 0.0)]},
    **_adversarial(),
}


@pytest.mark.parametrize("case", list(CASES))
def test_equals_sklearn_output_dict(case: str) -> None:
    y_true, y_pred = CASES[case]
    ours = classification_report(y_true, y_pred, NAMES)
    theirs = _sklearn(y_true, y_pred, output_dict=True)
    assert ours == theirs  # exact floats: same formulas in the same order
    assert list(ours) == list(theirs)
    assert [list(v) for v in ours.values() if isinstance(v, dict)] == [
        list(v) for v in theirs.values() if isinstance(v, dict)
    ]


@pytest.mark.parametrize("case", ["random seed=0 n=1000 p=0.9", "class never predicted", "all one class predicted"])
@pytest.mark.parametrize("digits", [2, 4])
def test_text_equals_sklearn(case: str, digits: int) -> None:
    y_true, y_pred = CASES[case]
    text = format_report(classification_report(y_true, y_pred, NAMES), NAMES, digits)
    assert text == _sklearn(y_true, y_pred, digits=digits)


def test_other_class_names_label_the_report() -> None:
    names = ["T-shirt/top", "Trouser", "Pullover"]
    y_true, y_pred = np.array([0, 1, 2, 2, 1]), np.array([0, 2, 2, 1, 1])
    ours = classification_report(y_true, y_pred, names)
    assert ours == _sklearn(y_true, y_pred, names, output_dict=True)
    assert format_report(ours, names) == _sklearn(y_true, y_pred, names, digits=4)


def test_hand_worked_example() -> None:
    # Truth 0,0,1,2; predictions 0,1,1,1: class 2 is never predicted.
    r = classification_report(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), ["a", "b", "c"])
    assert r["a"] == {"precision": 1.0, "recall": 0.5, "f1-score": 2 / 3, "support": 2.0}
    assert r["b"]["precision"] == pytest.approx(1 / 3) and r["b"]["recall"] == 1.0
    assert r["c"] == {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 1.0}
    assert r["accuracy"] == 0.5
    assert r["macro avg"]["precision"] == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert r["weighted avg"]["recall"] == pytest.approx((2 * 0.5 + 1 * 1 + 1 * 0) / 4)


def test_argument_order_matters() -> None:
    y_true, y_pred = CASES["class never predicted"]
    ours = classification_report(y_true, y_pred, NAMES)
    swapped = classification_report(y_pred, y_true, NAMES)
    assert ours != swapped  # so a swapped call cannot pass the sklearn comparison above
    assert ours == _sklearn(y_true, y_pred, output_dict=True)
    assert swapped["2"]["precision"] == ours["2"]["recall"]  # swapping exchanges precision and recall
    assert ours["2"]["precision"] == 0.0 and ours["2"]["support"] > 0  # never predicted, but present


def test_confusion_matrix_rows_are_true_labels() -> None:
    cm = confusion_matrix(np.array([0, 0, 1]), np.array([1, 1, 1]), 3)
    assert cm.tolist() == [[0, 2, 0], [0, 1, 0], [0, 0, 0]]


@pytest.mark.parametrize(
    ("y_true", "y_pred"),
    [([0, 10], [0, 1]), ([0, 1], [-1, 1]), ([0, 1, 2], [0, 1]), ([[0, 1]], [[0, 1]])],
)
def test_rejects_bad_labels(y_true, y_pred) -> None:
    with pytest.raises(ValueError, match="y_true|y_pred"):
        classification_report(np.array(y_true), np.array(y_pred), NAMES)


def test_sklearn_is_not_a_runtime_dependency() -> None:
    runtime = [r for r in requires("mnist-pipeline") or [] if "extra ==" not in r]
    assert runtime and not any(r.lower().startswith("scikit-learn") for r in runtime)
    code = (
        "import sys, mnist_pipeline.metrics, mnist_pipeline.stages.evaluate, mnist_pipeline.stages.report; "
        "sys.exit(any(m == 'sklearn' or m.startswith('sklearn.') for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
