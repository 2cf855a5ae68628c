"""Stage prepare: split checks, normalization from training statistics only, and a main() smoke run."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from mnist_pipeline import config, data_config
from mnist_pipeline.errors import ConfigError, DataError
from mnist_pipeline.io import load_npz, npz_meta
from mnist_pipeline.stages import prepare


@pytest.fixture
def dataset(params_dict: dict) -> data_config.DatasetConfig:
    return config.from_dict(params_dict).dataset


def _images(rng: np.random.Generator, n: int, low: int, high: int) -> np.ndarray:
    return rng.integers(low, high, size=(n, 28, 28), endpoint=True).astype(np.uint8)


# --- normalize -----------------------------------------------------------------------------------


def test_scale_maps_pixels_to_unit_interval_float32() -> None:
    train = np.zeros((3, 28, 28), dtype=np.uint8)
    train[0, 0, 0], train[1, 5, 7], train[2, 27, 27] = 255, 51, 1
    test = np.full((2, 28, 28), 255, dtype=np.uint8)
    x_train, x_test, stats = prepare.normalize_splits(train, test, "scale")
    assert x_train.dtype == np.float32 and x_test.dtype == np.float32
    assert x_train.shape == (3, 784) and x_test.shape == (2, 784)
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    assert x_train[1, 5 * 28 + 7] == np.float32(51) / np.float32(255)  # row-major flattening
    assert x_train[2, -1] == np.float32(1) / np.float32(255)
    assert np.all(x_test == 1.0)
    assert stats == {"normalize": "scale", "mean": 0.0, "std": 1.0}


def test_standardize_uses_training_statistics_only() -> None:
    rng = np.random.default_rng(0)
    train = _images(rng, 200, 0, 100)  # dark
    test = _images(rng, 50, 150, 255)  # bright: a very different distribution
    x_train, x_test, stats = prepare.normalize_splits(train, test, "standardize")

    pixels = train.astype(np.float64) / 255
    assert stats["normalize"] == "standardize"
    assert stats["mean"] == pytest.approx(pixels.mean(), rel=1e-6)  # float32-scaled pixels
    assert stats["std"] == pytest.approx(pixels.std(), rel=1e-6)
    # Train is centred and unit-variance; test is transformed with *train's* constants.
    assert abs(x_train.mean(dtype=np.float64)) < 1e-5
    assert x_train.std(dtype=np.float64) == pytest.approx(1.0, abs=1e-5)
    expected_test = (test.reshape(50, -1) / 255 - stats["mean"]) / stats["std"]
    np.testing.assert_allclose(x_test, expected_test, rtol=1e-5, atol=1e-5)
    assert x_test.mean() > 3  # far from 0: test statistics were not used
    assert x_train.dtype == np.float32 and x_test.dtype == np.float32


def test_test_set_does_not_influence_normalization() -> None:
    rng = np.random.default_rng(1)
    train = _images(rng, 100, 0, 255)
    x_a, _, stats_a = prepare.normalize_splits(train, _images(rng, 30, 0, 10), "standardize")
    x_b, _, stats_b = prepare.normalize_splits(train, _images(rng, 30, 240, 255), "standardize")
    assert stats_a == stats_b
    assert np.array_equal(x_a, x_b)


def test_normalize_leaves_inputs_untouched() -> None:
    rng = np.random.default_rng(2)
    train, test = _images(rng, 10, 0, 255), _images(rng, 5, 0, 255)
    train_copy, test_copy = train.copy(), test.copy()
    prepare.normalize_splits(train, test, "standardize")
    assert np.array_equal(train, train_copy) and np.array_equal(test, test_copy)


def test_standardize_rejects_constant_training_images() -> None:
    train = np.full((4, 28, 28), 7, dtype=np.uint8)
    with pytest.raises(DataError, match="constant"):
        prepare.normalize_splits(train, train, "standardize")


def test_unknown_normalization_is_rejected() -> None:
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    with pytest.raises(ConfigError, match=r"prepare\.normalize='minmax' is not one of: scale, standardize"):
        prepare.normalize_splits(images, images, "minmax")


# --- check_split ---------------------------------------------------------------------------------


def test_check_split_accepts_a_consistent_split(dataset) -> None:
    prepare.check_split(np.zeros((3, 28, 28), np.uint8), np.array([0, 9, 5], np.uint8), dataset, "ok")


@pytest.mark.parametrize("bad", [10, 255])
def test_check_split_label_out_of_range(dataset, bad: int) -> None:
    labels = np.array([0, bad, 3], dtype=np.uint8)
    with pytest.raises(DataError, match=rf"split-x: label {bad} outside 0\.\.9"):
        prepare.check_split(np.zeros((3, 28, 28), np.uint8), labels, dataset, "split-x")


def test_check_split_negative_label(dataset) -> None:
    with pytest.raises(DataError, match=r"label -1 outside 0\.\.9"):
        prepare.check_split(np.zeros((2, 28, 28), np.uint8), np.array([0, -1], np.int16), dataset, "s")


def test_check_split_count_mismatch(dataset) -> None:
    with pytest.raises(DataError, match="s: 3 images but 2 labels"):
        prepare.check_split(np.zeros((3, 28, 28), np.uint8), np.zeros(2, np.uint8), dataset, "s")


@pytest.mark.parametrize("shape", [(3, 28, 27), (3, 784), (3, 28, 28, 1)])
def test_check_split_wrong_image_shape(dataset, shape) -> None:
    with pytest.raises(DataError, match=r"s: images have shape .* expected \(N, 28, 28\)"):
        prepare.check_split(np.zeros(shape, np.uint8), np.zeros(3, np.uint8), dataset, "s")


def test_check_split_labels_must_be_one_dimensional(dataset) -> None:
    with pytest.raises(DataError, match=r"labels have shape \(3, 1\)"):
        prepare.check_split(np.zeros((3, 28, 28), np.uint8), np.zeros((3, 1), np.uint8), dataset, "s")


# --- load_split and main() on the tiny synthetic MNIST -------------------------------------------


def test_load_split_reads_tiny_mnist(tiny_mnist_dir, dataset) -> None:
    images, labels = prepare.read_raw_split(dataset, tiny_mnist_dir.dir, "train")
    assert np.array_equal(images, tiny_mnist_dir.arrays["train_images"])
    assert np.array_equal(labels, tiny_mnist_dir.arrays["train_labels"])
    assert labels.dtype == np.uint8


def test_load_split_detects_swapped_files(tiny_mnist_dir, dataset) -> None:
    images_path = tiny_mnist_dir.paths["test_images"]
    shutil.copy(tiny_mnist_dir.paths["test_labels"], images_path)
    with pytest.raises(DataError, match=rf"{images_path.name}: IDX magic 2049 .* expected 2051"):
        prepare.read_raw_split(dataset, tiny_mnist_dir.dir, "test")


def test_main_writes_float32_npz_with_meta(tiny_workspace) -> None:
    tiny_workspace.write_params(**{"prepare.normalize": "standardize"})
    prepare.main()
    train = load_npz("data/prepared/train.npz", ["x", "y", "meta"])
    test = load_npz("data/prepared/test.npz", ["x", "y", "meta"])
    assert train["x"].shape == (600, 784) and test["x"].shape == (100, 784)
    assert train["x"].dtype == np.float32 and train["y"].dtype == np.uint8
    assert np.array_equal(train["y"], tiny_workspace.mnist.arrays["train_labels"])
    meta = npz_meta(train, "train.npz")
    assert meta["normalize"] == "standardize" and meta == npz_meta(test, "test.npz")
    raw = tiny_workspace.mnist.arrays["train_images"].reshape(600, -1) / 255
    assert meta["mean"] == pytest.approx(raw.mean()) and meta["std"] == pytest.approx(raw.std())


def test_main_is_byte_reproducible(tiny_workspace) -> None:
    prepare.main()
    first = (tiny_workspace.root / "data/prepared/train.npz").read_bytes()
    prepare.main()
    assert (tiny_workspace.root / "data/prepared/train.npz").read_bytes() == first
