"""Reading the featurize stage's split files (``data/features/{train,val,test}.npz``) as checked arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mnist_pipeline.errors import DataError
from mnist_pipeline.io import check_labelled, load_npz
from mnist_pipeline.mlp.trainer import Split


def load_feature_split(path: Path, num_features: int, num_classes: int) -> Split:
    """``x`` (N, D), ``y`` (N,) and ``onehot`` (N, C) of one split.

    DataError unless the shapes fit, the split has rows, ``x`` is finite floats and ``y`` holds
    integer labels below ``num_classes`` (so no metric can come out NaN or silently wrong).
    """
    arrays = load_npz(path, ["x", "y", "onehot"])
    x, y, onehot = arrays["x"], arrays["y"], arrays["onehot"]
    if x.ndim != 2 or x.shape[1] != num_features or onehot.shape != (len(x), num_classes) or y.shape != (len(x),):
        raise DataError(
            f"{path}: shapes x{x.shape} y{y.shape} onehot{onehot.shape} do not fit "
            f"{num_features} features and {num_classes} classes; rerun `dvc repro featurize`"
        )
    fix = "rerun `dvc repro featurize`"
    if not len(x):
        raise DataError(f"{path} has no rows; {fix}")
    check_labelled(path, x, y, num_classes, fix)
    if onehot.dtype.kind != "f" or not np.isfinite(onehot).all():  # else a NaN looks like a diverged run
        raise DataError(f"{path}: onehot holds NaN, infinite or non-float values; {fix}")
    return Split(x, y, onehot)
