"""Training: a short run learns, equal seeds give bit-identical weights, divergence fails clearly.

Targets :func:`mnist_pipeline.mlp.trainer.fit` on a small synthetic problem (three Gaussian blobs,
chance accuracy 1/3), plus one smoke run of the train stage's ``main()`` on the tiny MNIST.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

from mnist_pipeline import paths
from mnist_pipeline.io import load_npz
from mnist_pipeline.mlp.errors import MLPError
from mnist_pipeline.mlp.network import Network
from mnist_pipeline.mlp.optimizers import OPTIMIZERS, OptimizerConfig
from mnist_pipeline.mlp.schedules import ScheduleConfig
from mnist_pipeline.mlp.trainer import Split, TrainConfig, evaluate_split, fit
from mnist_pipeline.model_file import load_network
from mnist_pipeline.stages import featurize, prepare, train

DIM, CLASSES = 10, 3


def blobs(n: int, rng: np.random.Generator) -> Split:
    """Three overlapping-ish Gaussian classes in 10-D: learnable, but not by an untrained net."""
    centers = 1.5 * np.random.default_rng(42).standard_normal((CLASSES, DIM))
    y = rng.integers(0, CLASSES, n)
    x = (centers[y] + rng.standard_normal((n, DIM))).astype(np.float32)  # (N, D)
    return Split(x, y.astype(np.uint8), np.eye(CLASSES, dtype=np.float32)[y])


@pytest.fixture(scope="module")
def data() -> tuple[Split, Split]:
    rng = np.random.default_rng(0)
    return blobs(300, rng), blobs(200, rng)


def train_cfg(**overrides) -> TrainConfig:
    values = {"epochs": 15, "batch_size": 32, "lr": 0.1, "l2": 1e-4, "seed": 0, "dtype": "float32"}
    return TrainConfig(**{**values, **overrides})


def run(data, seed: int = 0, optimizer: str = "momentum", lr: float = 0.1, dropout: float = 0.0, **train_overrides):
    """Build a [10, 16, 3] ReLU net from ``seed`` and fit it; return (net, rows)."""
    rng = np.random.default_rng(seed)
    net = Network([DIM, 16, CLASSES], "relu", "he_normal", rng, np.float32, dropout)
    opt = OptimizerConfig(name=optimizer, momentum=0.9)
    rows, seconds = fit(
        net, *data, train_cfg(lr=lr, seed=seed, **train_overrides), opt, ScheduleConfig("constant"), rng
    )
    assert len(seconds) == len(rows)
    return net, rows


@pytest.mark.parametrize(("optimizer", "lr"), [("momentum", 0.1), ("sgd", 0.3), ("adam", 0.01)])
def test_short_training_run_beats_chance_by_far(data, optimizer: str, lr: float) -> None:
    untrained = Network([DIM, 16, CLASSES], "relu", "he_normal", np.random.default_rng(0), np.float32)
    _, chance_acc = evaluate_split(untrained, data[1])
    net, rows = run(data, optimizer=optimizer, lr=lr)
    val_loss, val_acc = evaluate_split(net, data[1])
    assert chance_acc < 0.6  # the problem is not solved by initialization
    assert val_acc > 0.9  # chance is 1/3
    assert rows[-1]["train_loss"] < 0.5 * rows[0]["train_loss"]
    assert rows[-1]["val_acc"] == val_acc and rows[-1]["val_loss"] == pytest.approx(val_loss)


def test_log_rows_are_complete(data) -> None:
    _, rows = run(data, epochs=4)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    for row in rows:
        assert {"train_loss", "train_acc", "val_loss", "val_acc", "lr"} <= set(row)
        assert 0 <= row["train_acc"] <= 1 and 0 <= row["val_acc"] <= 1
        assert row["lr"] == pytest.approx(0.1)


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_same_seed_gives_bit_identical_weights(data, optimizer: str) -> None:
    net_a, rows_a = run(data, seed=3, optimizer=optimizer, lr=0.01, epochs=3)
    net_b, rows_b = run(data, seed=3, optimizer=optimizer, lr=0.01, epochs=3)
    state_a, state_b = net_a.state(), net_b.state()
    assert state_a.keys() == state_b.keys()
    for name in state_a:
        assert np.array_equal(state_a[name], state_b[name]), name
    assert rows_a == rows_b


def test_same_seed_with_dropout_is_bit_identical(data) -> None:
    a, _ = run(data, seed=5, dropout=0.3, epochs=3)
    b, _ = run(data, seed=5, dropout=0.3, epochs=3)
    assert all(np.array_equal(a.state()[k], b.state()[k]) for k in a.state())


def test_different_seed_gives_different_weights(data) -> None:
    a, _ = run(data, seed=1, epochs=3)
    b, _ = run(data, seed=2, epochs=3)
    assert not np.array_equal(a.state()["W0"], b.state()["W0"])


def test_shuffle_differs_between_epochs_and_seeds(data) -> None:
    # Same init, different shuffling rng -> different weights: fit really draws from its rng.
    net_a = Network([DIM, 16, CLASSES], "relu", "he_normal", np.random.default_rng(0), np.float32)
    net_b = Network([DIM, 16, CLASSES], "relu", "he_normal", np.random.default_rng(0), np.float32)
    opt, sched = OptimizerConfig(name="sgd"), ScheduleConfig("constant")
    fit(net_a, *data, train_cfg(epochs=2), opt, sched, np.random.default_rng(10))
    fit(net_b, *data, train_cfg(epochs=2), opt, sched, np.random.default_rng(11))
    assert not np.array_equal(net_a.state()["W0"], net_b.state()["W0"])


def test_weights_stay_float32(data) -> None:
    net, _ = run(data, epochs=2)
    assert all(p.dtype == np.float32 for p in net.state().values())


@pytest.mark.parametrize("lr", [1e3, 1e6])
def test_divergence_raises_a_clear_error(data, lr: float) -> None:
    with np.errstate(all="ignore"), pytest.raises(MLPError, match=r"diverged.*lower train\.lr"):
        run(data, lr=lr)


def test_batch_larger_than_training_set_is_an_error(data) -> None:
    with pytest.raises(MLPError, match=r"train\.batch_size=1000 exceeds the 300 training examples"):
        run(data, batch_size=1000)


# --- the stage's main() on the tiny synthetic MNIST ----------------------------------------------


def test_train_main_writes_model_and_log_reproducibly(tiny_workspace) -> None:
    tiny_workspace.write_params(**{"model.hidden": [32], "train.epochs": 3})
    prepare.main()
    featurize.main()
    train.main()
    model = tiny_workspace.root / paths.MODEL_FILE
    first = model.read_bytes()
    with open(tiny_workspace.root / paths.TRAIN_LOG_FILE, newline="") as f:
        log_rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in log_rows] == [1, 2, 3]
    assert float(log_rows[-1]["val_acc"]) > 0.9  # the synthetic digits are learnable

    net, meta = load_network(model)
    assert meta["weights_epoch"] == 3  # no early stopping: the last epoch's weights
    assert net.sizes == [784, 32, 10] and meta["activation"] == tiny_workspace.params["model"]["activation"]
    test = load_npz("data/features/test.npz", ["x", "y"])
    assert (net.predict_proba(test["x"]).argmax(axis=1) == test["y"]).mean() > 0.9

    train.main()
    assert model.read_bytes() == first  # same params -> bit-identical model.npz
