"""Reading the featurize stage's split files (``data/features/{train,val,test}.npz``) as checked arrays."""

from __future__ import annotations

from pathlib import Path

from mnist_pipeline.errors import DataError
from mnist_pipeline.io import load_npz
from mnist_pipeline.mlp.trainer import Split


def load_feature_split(path: Path, num_features: int, num_classes: int) -> Split:
    """``x`` (N, D), ``y`` (N,) and ``onehot`` (N, C) of one split; DataError unless the shapes fit."""
    arrays = load_npz(path, ["x", "y", "onehot"])
    x, y, onehot = arrays["x"], arrays["y"], arrays["onehot"]
    if x.ndim != 2 or x.shape[1] != num_features or onehot.shape != (len(x), num_classes) or len(y) != len(x):
        raise DataError(
            f"{path}: shapes x{x.shape} y{y.shape} onehot{onehot.shape} do not fit "
            f"{num_features} features and {num_classes} classes; rerun `dvc repro featurize`"
        )
    return Split(x, y, onehot)
