"""Stage featurize: one-hot encoding and the validation split's invariants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mnist_pipeline.errors import ConfigError, DataError
from mnist_pipeline.io import load_npz
from mnist_pipeline.stages import featurize, prepare

C = 10


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    """1450 shuffled labels with unequal class sizes (class c has 100 + 10c examples)."""
    y = np.repeat(np.arange(C, dtype=np.uint8), [100 + 10 * c for c in range(C)])
    return np.random.default_rng(123).permutation(y)


def _split(y, val_size=300, stratify=True, seed=0):
    return featurize.split(y, val_size, stratify, C, np.random.default_rng(seed))


# --- one_hot -------------------------------------------------------------------------------------


def test_one_hot_invariants() -> None:
    y = np.array([3, 0, 9, 3, 1], dtype=np.uint8)
    out = featurize.one_hot(y, C)
    assert out.shape == (5, C) and out.dtype == np.float32
    assert np.array_equal(out.argmax(axis=1), y)
    assert np.all(out.sum(axis=1) == 1)
    assert set(np.unique(out)) == {0.0, 1.0}
    assert out[0, 3] == 1 and out[2, 9] == 1


def test_one_hot_dtype_and_empty() -> None:
    assert featurize.one_hot(np.array([1], np.uint8), 3, np.float64).dtype == np.float64
    assert featurize.one_hot(np.zeros(0, np.uint8), C).shape == (0, C)


# --- split ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("stratify", [True, False])
def test_split_is_a_partition_of_exact_sizes(labels, stratify: bool) -> None:
    train_idx, val_idx = _split(labels, 300, stratify)
    assert len(val_idx) == 300 and len(train_idx) == len(labels) - 300
    assert len(np.unique(val_idx)) == len(val_idx) and len(np.unique(train_idx)) == len(train_idx)
    assert len(np.intersect1d(train_idx, val_idx)) == 0
    assert np.array_equal(np.sort(np.concatenate([train_idx, val_idx])), np.arange(len(labels)))
    assert np.issubdtype(train_idx.dtype, np.integer) and np.issubdtype(val_idx.dtype, np.integer)


@pytest.mark.parametrize("stratify", [True, False])
def test_split_has_every_class_on_both_sides(labels, stratify: bool) -> None:
    train_idx, val_idx = _split(labels, 300, stratify)
    assert set(labels[train_idx]) == set(range(C))
    assert set(labels[val_idx]) == set(range(C))


@pytest.mark.parametrize("val_size", [1, 7, 300, 1000, 1449])
def test_stratified_split_matches_class_proportions(labels, val_size: int) -> None:
    _, val_idx = _split(labels, val_size, stratify=True)
    counts = np.bincount(labels, minlength=C)
    got = np.bincount(labels[val_idx], minlength=C)
    ideal = counts * val_size / len(labels)
    assert got.sum() == val_size
    assert np.all(np.abs(got - ideal) < 1), (got, ideal)


def test_unstratified_split_is_a_uniform_sample(labels) -> None:
    # Not stratified: proportions only hold on average, so check over many seeds.
    counts = np.bincount(labels, minlength=C)
    total = np.zeros(C)
    for seed in range(40):
        _, val_idx = _split(labels, 300, stratify=False, seed=seed)
        total += np.bincount(labels[val_idx], minlength=C)
    np.testing.assert_allclose(total / 40, counts * 300 / len(labels), rtol=0.1)


@pytest.mark.parametrize("stratify", [True, False])
def test_split_seed_determinism(labels, stratify: bool) -> None:
    a_train, a_val = _split(labels, 300, stratify, seed=7)
    b_train, b_val = _split(labels, 300, stratify, seed=7)
    c_train, c_val = _split(labels, 300, stratify, seed=8)
    assert np.array_equal(a_train, b_train) and np.array_equal(a_val, b_val)
    assert not np.array_equal(a_val, c_val)
    assert not np.array_equal(a_train, c_train)


@pytest.mark.parametrize("stratify", [True, False])
def test_split_is_shuffled(labels, stratify: bool) -> None:
    train_idx, val_idx = _split(labels, 300, stratify)
    assert not np.all(np.diff(train_idx) > 0)  # not in original order
    assert not np.all(np.diff(labels[val_idx].astype(int)) >= 0)  # validation not grouped by class


@pytest.mark.parametrize("val_size", [0, -5, 1450, 5000])
def test_split_rejects_impossible_val_size(labels, val_size: int) -> None:
    with pytest.raises(ConfigError, match=rf"featurize\.val_size={val_size} must be between 1 and 1449"):
        _split(labels, val_size)


def test_stratified_counts_sum_exactly_and_fit_each_class() -> None:
    rng = np.random.default_rng(5)
    for _ in range(50):
        y = rng.integers(0, C, size=int(rng.integers(20, 400)))
        val_size = int(rng.integers(1, len(y)))
        take = featurize.stratified_counts(y, val_size, C)
        counts = np.bincount(y, minlength=C)
        assert take.sum() == val_size
        assert np.all(take <= counts) and np.all(take >= 0)
        assert np.all(np.abs(take - counts * val_size / len(y)) < 1)


# --- main() on the tiny synthetic MNIST ----------------------------------------------------------


def test_main_writes_three_consistent_splits(tiny_workspace) -> None:
    prepare.main()
    featurize.main()
    prepared_train = load_npz("data/prepared/train.npz", ["x", "y"])
    prepared_test = load_npz("data/prepared/test.npz", ["x", "y"])
    out = {
        name: load_npz(f"data/features/{name}.npz", ["x", "y", "onehot", "meta"]) for name in ("train", "val", "test")
    }
    assert [len(out[n]["y"]) for n in ("train", "val", "test")] == [500, 100, 100]
    for split in out.values():
        assert split["x"].dtype == np.float32 and split["onehot"].dtype == np.float32
        assert np.array_equal(split["onehot"].argmax(axis=1), split["y"])
    # The test set passes through untouched, in order.
    assert np.array_equal(out["test"]["x"], prepared_test["x"])
    assert np.array_equal(out["test"]["y"], prepared_test["y"])
    # Train and val partition the prepared training rows (the synthetic rows are all distinct).
    rows = {r.tobytes() for r in prepared_train["x"]}
    assert len(rows) == 600
    train_rows = {r.tobytes() for r in out["train"]["x"]}
    val_rows = {r.tobytes() for r in out["val"]["x"]}
    assert not train_rows & val_rows and train_rows | val_rows == rows
    assert set(out["val"]["y"]) == set(range(C))


# --- the prepared arrays it reads ----------------------------------------------------------------


def _prepared(n: int = 12) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"x": rng.random((n, 6), dtype=np.float32), "y": (np.arange(n) % C).astype(np.uint8)}


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda a: {**a, "y": np.where(a["y"] == 1, 200, a["y"]).astype(np.uint8)}, "y must hold integer labels 0..9"),
        (lambda a: {**a, "y": a["y"].astype(np.float32)}, "y must hold integer labels"),  # was a TypeError
        (lambda a: {**a, "x": np.where(a["x"] > 0.5, np.nan, a["x"])}, "x holds NaN"),  # was written to the splits
        (lambda a: {**a, "x": a["x"].astype(np.int64)}, "non-float"),
        (lambda a: {**a, "x": a["x"].reshape(12, 2, 3)}, r"shapes x\(12, 2, 3\) y\(12,\) do not fit 6 features"),
        (lambda a: {**a, "x": a["x"][:0], "y": a["y"][:0]}, "do not fit"),
    ],
)
def test_prepared_arrays_that_are_not_what_prepare_writes_are_refused(mutate, needle: str) -> None:
    with pytest.raises(DataError, match=needle) as err:
        featurize.check_prepared(mutate(_prepared()), Path("data/prepared/train.npz"), 6, C)
    assert str(err.value).startswith("data/prepared/train.npz: ") and str(err.value).endswith("`dvc repro prepare`")
    featurize.check_prepared(_prepared(), Path("data/prepared/train.npz"), 6, C)  # and the real thing passes
