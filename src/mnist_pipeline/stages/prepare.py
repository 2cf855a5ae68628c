"""Stage ``prepare``: parse the raw IDX files, check them, normalize to float32.

Checks: IDX magic (2051 images, 2049 labels), header dims against the file
length, image shape against ``dataset.image_shape``, labels in
``0..num_classes-1``, and as many labels as images. Normalization
(``prepare.normalize``): ``scale`` maps pixels to [0, 1]; ``standardize`` then
subtracts the training set's mean and divides by its standard deviation (one
scalar each, from the training set only, so nothing leaks from test).

Writes ``data/prepared/{train,test}.npz`` with ``x`` (N, rows*cols) float32,
``y`` (N,) uint8 and JSON ``meta`` holding the normalization constants.

Run: ``python -m mnist_pipeline.stages.prepare``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from mnist_pipeline import data_config, idx
from mnist_pipeline.data_config import DatasetConfig
from mnist_pipeline.errors import DataError
from mnist_pipeline.io import save_npz
from mnist_pipeline.mlp.errors import check_choice
from mnist_pipeline.normalization import NORMALIZATIONS, normalize
from mnist_pipeline.params import as_config_error
from mnist_pipeline.paths import PREPARED_DIR, RAW_DIR

log = logging.getLogger(__name__)


def check_split(images: np.ndarray, labels: np.ndarray, dataset: DatasetConfig, name: str) -> None:
    """Raise DataError unless images and labels form a consistent split."""
    shape = tuple(dataset.image_shape)
    if images.ndim != 3 or images.shape[1:] != shape:
        raise DataError(f"{name}: images have shape {images.shape}, expected (N, {shape[0]}, {shape[1]})")
    if labels.ndim != 1:
        raise DataError(f"{name}: labels have shape {labels.shape}, expected (N,)")
    if len(images) != len(labels):
        raise DataError(f"{name}: {len(images)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= dataset.num_classes):
        bad = labels[(labels < 0) | (labels >= dataset.num_classes)][0]
        raise DataError(f"{name}: label {bad} outside 0..{dataset.num_classes - 1}")


def normalize_splits(train: np.ndarray, test: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Flatten uint8 images and normalize both splits with training statistics.

    Returns float32 ``(train, test, stats)``; ``stats`` has ``normalize``,
    ``mean`` and ``std`` such that ``x = (pixels / 255 - mean) / std``.

    Raises
    ------
    ConfigError
        If ``method`` is not one of :data:`NORMALIZATIONS`.
    DataError
        If ``standardize`` is asked of constant training images.
    """
    with as_config_error():
        check_choice("prepare.normalize", method, NORMALIZATIONS)
    x_train = normalize(train)  # (N, D) pixels / 255
    mean, std = 0.0, 1.0
    if method == "standardize":
        mean = float(x_train.mean(dtype=np.float64))
        std = float(x_train.std(dtype=np.float64))
        if std == 0:
            raise DataError("training images are constant; cannot standardize (use prepare.normalize=scale)")
        x_train = normalize(train, mean, std)
    return x_train, normalize(test, mean, std), {"normalize": method, "mean": mean, "std": std}


def read_raw_split(dataset: DatasetConfig, raw_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images_file = raw_dir / dataset.files[f"{split}_images"].name
    labels_file = raw_dir / dataset.files[f"{split}_labels"].name
    images = idx.read_gz(images_file, idx.IMAGES_MAGIC)
    labels = idx.read_gz(labels_file, idx.LABELS_MAGIC)
    check_split(images, labels, dataset, f"{images_file.name}/{labels_file.name}")
    return images, labels.astype(np.uint8)


def main() -> None:
    cfg = data_config.load()
    train_images, train_labels = read_raw_split(cfg.dataset, RAW_DIR, "train")
    test_images, test_labels = read_raw_split(cfg.dataset, RAW_DIR, "test")
    x_train, x_test, stats = normalize_splits(train_images, test_images, cfg.prepare.normalize)
    meta = {"dataset": cfg.dataset.name, **stats}
    save_npz(PREPARED_DIR / "train.npz", meta, x=x_train, y=train_labels)
    save_npz(PREPARED_DIR / "test.npz", meta, x=x_test, y=test_labels)
    log.info("prepared %d train and %d test images (%s)", len(x_train), len(x_test), cfg.prepare.normalize)


if __name__ == "__main__":
    from mnist_pipeline.cli import run

    run(main, "prepare")
