"""Stage ``featurize``: hold out a stratified validation set, shuffle, one-hot.

The validation set comes from the training set only; the test set passes
through untouched (same order) and is used once, by ``evaluate``. With
``featurize.stratify`` each class contributes to validation in proportion to
its share of the training set (largest-remainder rounding, so the total is
exactly ``featurize.val_size``). All randomness comes from one
``numpy.random.default_rng(featurize.seed)``.

Writes ``data/features/{train,val,test}.npz`` with ``x`` (N, D) float32,
``y`` (N,) uint8, ``onehot`` (N, C) float32 and the normalization ``meta``.

Run: ``python -m mnist_pipeline.stages.featurize``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from mnist_pipeline import data_config
from mnist_pipeline.errors import ConfigError, DataError
from mnist_pipeline.io import check_labelled, load_npz, npz_meta, save_npz
from mnist_pipeline.paths import FEATURES_DIR, PREPARED_DIR

log = logging.getLogger(__name__)


def one_hot(y: np.ndarray, num_classes: int, dtype: type[np.floating[Any]] = np.float32) -> np.ndarray:
    """``(N,)`` integer labels -> ``(N, C)`` one-hot rows."""
    out = np.zeros((len(y), num_classes), dtype=dtype)
    out[np.arange(len(y)), y] = 1
    return out


def stratified_counts(y: np.ndarray, val_size: int, num_classes: int) -> np.ndarray:
    """Per-class validation counts proportional to class frequency, summing to ``val_size``."""
    counts = np.bincount(y, minlength=num_classes)
    quota = counts * val_size / len(y)
    take = np.floor(quota).astype(np.int64)
    remainder = val_size - int(take.sum())
    # Largest fractional parts first; ties broken by class index (stable sort).
    order = np.argsort(-(quota - take), kind="stable")
    take[order[:remainder]] += 1
    return take


def split(
    y: np.ndarray, val_size: int, stratify: bool, num_classes: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Return shuffled, disjoint ``(train_idx, val_idx)`` covering ``range(len(y))``."""
    if not 0 < val_size < len(y):
        raise ConfigError(f"featurize.val_size={val_size} must be between 1 and {len(y) - 1} (training set size - 1)")
    perm = rng.permutation(len(y))
    if stratify:
        take = stratified_counts(y, val_size, num_classes)
        shuffled_labels = y[perm]
        val_parts = [perm[shuffled_labels == c][: take[c]] for c in range(num_classes)]
        val_idx = rng.permutation(np.concatenate(val_parts))
    else:
        val_idx = perm[:val_size]
    mask = np.ones(len(y), dtype=bool)
    mask[val_idx] = False
    train_idx = rng.permutation(np.flatnonzero(mask))
    return train_idx, val_idx


def check_prepared(arrays: dict[str, np.ndarray], path: Path, num_features: int, num_classes: int) -> None:
    """DataError unless ``arrays`` are what ``prepare`` writes: ``x`` finite floats (N, num_features) and
    ``y`` N integer labels below ``num_classes``, N at least 1 (so nothing wrong reaches the splits)."""
    x, y, fix = arrays["x"], arrays["y"], "rerun `dvc repro prepare`"
    if x.ndim != 2 or x.shape[1] != num_features or y.shape != (len(x),) or not len(x):
        raise DataError(f"{path}: shapes x{x.shape} y{y.shape} do not fit {num_features} features per row; {fix}")
    check_labelled(path, x, y, num_classes, fix)


def main() -> None:
    cfg = data_config.load()
    c = cfg.dataset.num_classes
    train = load_npz(PREPARED_DIR / "train.npz", ["x", "y", "meta"])
    test = load_npz(PREPARED_DIR / "test.npz", ["x", "y", "meta"])
    for arrays, name in ((train, "train.npz"), (test, "test.npz")):
        check_prepared(arrays, PREPARED_DIR / name, cfg.dataset.num_features, c)
    meta = npz_meta(train, PREPARED_DIR / "train.npz")
    if not isinstance(meta, dict):
        raise DataError(f"{PREPARED_DIR / 'train.npz'}: its metadata is not a JSON object; rerun `dvc repro prepare`")
    rng = np.random.default_rng(cfg.featurize.seed)
    train_idx, val_idx = split(train["y"], cfg.featurize.val_size, cfg.featurize.stratify, c, rng)
    parts = {
        "train": (train["x"][train_idx], train["y"][train_idx]),
        "val": (train["x"][val_idx], train["y"][val_idx]),
        "test": (test["x"], test["y"]),
    }
    for name, (x, y) in parts.items():
        save_npz(FEATURES_DIR / f"{name}.npz", meta, x=x, y=y, onehot=one_hot(y, c))
    log.info("train %d / val %d / test %d", len(train_idx), len(val_idx), len(test["y"]))


if __name__ == "__main__":
    from mnist_pipeline.cli import run

    run(main, "featurize")
