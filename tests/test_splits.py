"""splits.load_feature_split: shapes, and no split that could make a metric NaN or silently wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mnist_pipeline.errors import DataError
from mnist_pipeline.io import save_npz
from mnist_pipeline.splits import load_feature_split

D, C = 6, 3


def write_split(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    onehot = np.zeros((len(x), C), np.float32)
    save_npz(path, {"normalize": "scale", "mean": 0.0, "std": 1.0}, x=x, y=y, onehot=onehot)
    return path


def good(n: int = 4) -> tuple[np.ndarray, np.ndarray]:
    return np.random.default_rng(0).random((n, D), dtype=np.float32), np.arange(n, dtype=np.uint8) % C


def test_a_good_split_loads_unchanged(tmp_path: Path) -> None:
    x, y = good()
    split = load_feature_split(write_split(tmp_path / "s.npz", x, y), D, C)
    np.testing.assert_array_equal(split.x, x)
    np.testing.assert_array_equal(split.y, y)


def test_a_split_whose_onehot_is_not_finite_is_refused_not_called_diverged(tmp_path: Path) -> None:
    x, y = good()
    path = write_split(tmp_path / "s.npz", x, y)
    arrays = dict(np.load(path))
    arrays["onehot"][0, 0] = np.nan
    np.savez(path, **arrays)
    with pytest.raises(
        DataError, match=r"s\.npz: onehot holds NaN, infinite or non-float values; rerun `dvc repro featurize`"
    ):
        load_feature_split(path, D, C)


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda x, y: (x[:0], y[:0]), "has no rows"),
        (lambda x, y: (np.where(np.arange(D) == 2, np.nan, x).astype(np.float32), y), "x holds NaN"),
        (lambda x, y: (np.full_like(x, np.inf), y), "x holds NaN, infinite"),
        (lambda x, y: (x.astype(np.int32), y), "non-float"),
        (lambda x, y: (x, y.astype(np.float32)), "y must hold integer labels 0..2"),
        (lambda x, y: (x, np.where(y == 1, 200, y).astype(np.uint8)), "y must hold integer labels 0..2"),
        (lambda x, y: (x[:, :-1], y), r"do not fit 6 features"),
        (lambda x, y: (x, y[:-1]), r"do not fit 6 features"),
    ],
)
def test_a_split_that_would_poison_the_metrics_is_refused(tmp_path: Path, mutate, needle: str) -> None:
    x, y = mutate(*good())
    with pytest.raises(DataError, match=needle) as err:
        load_feature_split(write_split(tmp_path / "s.npz", x, y), D, C)
    assert "s.npz" in str(err.value) and "dvc repro featurize" in str(err.value)
