"""Training with :func:`mnist_pipeline.mlp.trainer.fit`: a short run learns, equal seeds give
bit-identical weights, divergence fails clearly; max-norm, early stopping with restore of the best
weights, divergence with the MSE losses and float64, dtype kept end to end.

Everything runs on small synthetic problems (Gaussian blobs in 10-D, three classes, chance
accuracy 1/3), a few milliseconds each. Weight checks spy on ``net.train_batch`` (and on
``net.forward`` for validation): every training pass after the first sees the weights that the
previous optimizer step (and its max-norm projection) left behind. The train stage's ``main()`` is
tested in ``tests/stages/test_train.py``.
"""

from __future__ import annotations

import itertools
from functools import partial

import numpy as np
import pytest

from mnist_pipeline.mlp import trainer
from mnist_pipeline.mlp.errors import MLPError
from mnist_pipeline.mlp.layers import ACTIVATIONS
from mnist_pipeline.mlp.losses import LOSSES, make_loss
from mnist_pipeline.mlp.network import Network
from mnist_pipeline.mlp.optimizers import OPTIMIZERS, OptimizerConfig, make_optimizer
from mnist_pipeline.mlp.schedules import ScheduleConfig
from mnist_pipeline.mlp.trainer import (
    BatchMaker,
    Split,
    TrainConfig,
    apply_max_norm,
    best_by_monitor,
    evaluate_split,
    fit,
    kept_epoch,
)

DIM, CLASSES = 10, 3
CENTERS = np.random.default_rng(42).standard_normal((CLASSES, DIM))


def blobs(
    n: int, seed: int | np.random.Generator, label_noise: float = 0.0, dtype=np.float32, spread: float = 1.0
) -> Split:
    """Gaussian classes around ``spread * CENTERS``; ``label_noise`` relabels that fraction at random.

    ``seed`` may be a generator, to draw several splits from one stream.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n)
    x = ((spread * CENTERS)[y] + rng.standard_normal((n, DIM))).astype(dtype)  # (N, D)
    if label_noise:
        y = np.where(rng.random(n) < label_noise, rng.integers(0, CLASSES, n), y)
    return Split(x, y, np.eye(CLASSES, dtype=dtype)[y])


def cfg(**overrides) -> TrainConfig:
    values = {"epochs": 5, "batch_size": 16, "lr": 0.1, "l2": 0.0, "seed": 0, "dtype": "float32"}
    return TrainConfig(**{**values, **overrides})


def weight_norms(net: Network) -> list[np.ndarray]:
    """Per weight matrix, the norm of each unit's incoming weights (a column of ``W``)."""
    return [np.linalg.norm(p.astype(np.float64), axis=0) for name, p, _ in net.parameters() if name.startswith("W")]


def assert_same_weights(a: Network, b: Network) -> None:
    sa, sb = a.state(), b.state()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert np.array_equal(sa[name], sb[name]), name


# --- a short run learns, reproducibly ------------------------------------------------------------

RUN_CFG = {"epochs": 15, "batch_size": 32, "l2": 1e-4}  # cfg() overrides of these runs


@pytest.fixture(scope="module")
def data() -> tuple[Split, Split]:
    """Three overlapping-ish Gaussian classes: learnable, but not by an untrained net."""
    rng = np.random.default_rng(0)
    return blobs(300, rng, spread=1.5), blobs(200, rng, spread=1.5)


def run(data, seed: int = 0, optimizer: str = "momentum", lr: float = 0.1, dropout: float = 0.0, **train_overrides):
    """Build a [10, 16, 3] ReLU net from ``seed`` and fit it; return (net, rows)."""
    rng = np.random.default_rng(seed)
    net = Network([DIM, 16, CLASSES], "relu", "he_normal", rng, np.float32, dropout)
    opt = OptimizerConfig(name=optimizer, momentum=0.9)
    run_cfg = cfg(**{**RUN_CFG, "lr": lr, "seed": seed, **train_overrides})
    rows, seconds = fit(net, *data, run_cfg, opt, ScheduleConfig("constant"), rng)
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
    assert_same_weights(net_a, net_b)
    assert rows_a == rows_b


def test_same_seed_with_dropout_is_bit_identical(data) -> None:
    a, _ = run(data, seed=5, dropout=0.3, epochs=3)
    b, _ = run(data, seed=5, dropout=0.3, epochs=3)
    assert_same_weights(a, b)


def test_different_seed_gives_different_weights(data) -> None:
    a, _ = run(data, seed=1, epochs=3)
    b, _ = run(data, seed=2, epochs=3)
    assert not np.array_equal(a.state()["W0"], b.state()["W0"])


def test_shuffle_differs_between_epochs_and_seeds(data) -> None:
    # Same init, different shuffling rng -> different weights: fit really draws from its rng.
    net_a = Network([DIM, 16, CLASSES], "relu", "he_normal", np.random.default_rng(0), np.float32)
    net_b = Network([DIM, 16, CLASSES], "relu", "he_normal", np.random.default_rng(0), np.float32)
    opt, sched = OptimizerConfig(name="sgd"), ScheduleConfig("constant")
    run_cfg = cfg(**{**RUN_CFG, "epochs": 2})
    fit(net_a, *data, run_cfg, opt, sched, np.random.default_rng(10))
    fit(net_b, *data, run_cfg, opt, sched, np.random.default_rng(11))
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


# --- config ------------------------------------------------------------------------------------


def test_config_validates_every_loss_and_early_stop_and_rejects_bad_values() -> None:
    for loss in LOSSES:
        for monitor in trainer.EARLY_STOP:
            cfg(loss=loss, early_stop=monitor).validate("train")
    with pytest.raises(MLPError, match=r"^train\.loss='hinge' is not one of: cross_entropy, mse_sigmoid, mse_softmax$"):
        cfg(loss="hinge").validate("train")
    with pytest.raises(MLPError, match=r"^train\.early_stop='val_f1' is not one of: none, val_loss, val_acc$"):
        cfg(early_stop="val_f1").validate("train")
    with pytest.raises(MLPError, match=r"^train\.batch_size=0 is invalid: must be a positive batch size$"):
        cfg(batch_size=0).validate("train")


# --- max-norm ----------------------------------------------------------------------------------

MAX_NORM = 1.6  # above every column norm at initialization (max 1.38), below where training takes them


def max_norm_run(max_norm: float) -> tuple[Network, list[float], list[float]]:
    """Fit with momentum; return the net and the largest column norm seen before each train/eval pass."""
    rng = np.random.default_rng(1)
    net = Network([DIM, 32, CLASSES], "relu", "glorot_uniform", rng)
    seen_train, seen_eval = [], []
    forward, train_batch = net.forward, net.train_batch

    def spy_train(x, targets, loss, scale=None, prepare=None, update=None, columns=None):
        seen_train.append(max(n.max() for n in weight_norms(net)))
        return train_batch(x, targets, loss, scale, prepare, update, columns)

    def spy_eval(x, train=False):
        assert not train  # fit trains through train_batch
        seen_eval.append(max(n.max() for n in weight_norms(net)))
        return forward(x, train)

    net.train_batch, net.forward = spy_train, spy_eval
    data = blobs(96, seed=0)
    run_cfg = cfg(lr=0.3, max_norm=max_norm)
    fit(net, data, data, run_cfg, OptimizerConfig("momentum", momentum=0.9), ScheduleConfig("constant"), rng)
    assert len(seen_train) == 5 * 6  # 6 steps per epoch
    return net, seen_train, seen_eval


def test_max_norm_holds_after_every_step_and_binds() -> None:
    _, free_train, _ = max_norm_run(0.0)
    assert free_train[0] < MAX_NORM  # initialization is inside the ball ...
    assert max(free_train) > 1.5 * MAX_NORM  # ... and unconstrained training leaves it: the test has teeth
    net, train_norms, eval_norms = max_norm_run(MAX_NORM)
    after_steps = train_norms[1:] + eval_norms + [max(n.max() for n in weight_norms(net))]
    assert all(n <= MAX_NORM * (1 + 1e-6) for n in after_steps)
    assert max(after_steps) > MAX_NORM * (1 - 1e-6)  # the constraint is active, not merely satisfied


def test_max_norm_applies_to_every_weight_matrix() -> None:
    net, _, _ = max_norm_run(MAX_NORM)
    for norms in weight_norms(net):
        assert np.all(norms <= MAX_NORM * (1 + 1e-6))


def test_apply_max_norm_rescales_only_long_columns_keeping_their_direction() -> None:
    w = np.array([[3.0, 0.6, 0.0], [4.0, 0.8, 0.0]])  # column norms 5, 1, 0
    apply_max_norm([w], 2.0)
    np.testing.assert_allclose(w, [[1.2, 0.6, 0.0], [1.6, 0.8, 0.0]], rtol=1e-15)  # 5 -> 2 along (0.6, 0.8)
    w32 = np.array([[30.0], [40.0]], dtype=np.float32)
    apply_max_norm([w32], 1.0)
    assert w32.dtype == np.float32
    assert np.linalg.norm(w32) == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("c", [0.5, 4.0, 1e6])
def test_apply_max_norm_handles_zero_columns_without_floating_point_errors(c: float) -> None:
    # A zero column (init "zeros", e.g. softmax_regression) must neither warn nor change.
    w = np.zeros((3, 2), dtype=np.float32)
    w[:, 1] = 5.0  # norm 8.66
    with np.errstate(all="raise"):
        apply_max_norm([w], c)
    assert not w[:, 0].any()
    assert np.linalg.norm(w[:, 1]) == pytest.approx(min(c, 5 * 3**0.5), rel=1e-6)


# --- early stopping ----------------------------------------------------------------------------


def early_stop_net(seed: int = 1) -> tuple[Network, np.random.Generator]:
    rng = np.random.default_rng(seed)
    return Network([DIM, 64, CLASSES], "relu", "he_normal", rng, dropout=0.2), rng


def train_for(epochs: int, data: tuple[Split, Split], **overrides) -> tuple[Network, list[dict]]:
    net, rng = early_stop_net()
    run_cfg = cfg(epochs=epochs, batch_size=10, lr=0.01, **overrides)
    rows, _ = fit(net, *data, run_cfg, OptimizerConfig("momentum", momentum=0.9), ScheduleConfig("constant"), rng)
    return net, rows


def scripted_evaluate(monkeypatch: pytest.MonkeyPatch, values: list[tuple[float, float]]) -> list[int]:
    """Replace the trainer's validation with a script of ``(val_loss, val_acc)`` per epoch."""
    calls: list[int] = []

    def fake(net, data, batch_size=4096):
        calls.append(len(calls))
        return values[len(calls) - 1]

    monkeypatch.setattr(trainer, "evaluate_split", fake)
    return calls


def test_early_stop_on_a_real_overfitting_run_restores_the_best_epoch() -> None:
    # 30 training points with 40 % wrong labels: validation loss falls, then rises as the net memorizes.
    data = (blobs(30, seed=1, label_noise=0.4), blobs(200, seed=2))
    net, rows = train_for(60, data, early_stop="val_loss", patience=4)
    losses = [r["val_loss"] for r in rows]
    best = best_by_monitor(rows, "val_loss")
    assert kept_epoch(rows, "val_loss") == best and kept_epoch(rows, "none") == rows[-1]["epoch"]
    assert 1 < best < len(rows)  # improved first, then got worse
    assert losses[best - 1] == min(losses)
    assert all(loss > losses[best - 1] for loss in losses[best:])
    assert len(rows) == best + 4 < 60  # stopped after exactly `patience` epochs without improvement
    reference, _ = train_for(best, data)  # same seed, no early stopping, exactly best epochs
    assert_same_weights(net, reference)
    assert trainer.evaluate_split(net, data[1])[0] == pytest.approx(min(losses), rel=1e-6)
    last, _ = train_for(len(rows), data)
    assert not np.array_equal(net.state()["W0"], last.state()["W0"])  # restoring changed the weights


def test_early_stop_on_val_loss_with_a_scripted_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    data = (blobs(40, seed=3), blobs(20, seed=4))
    script = [(1.0, 0.5), (0.8, 0.6), (0.5, 0.7), (0.6, 0.8), (0.7, 0.8), (0.9, 0.9), (0.4, 0.95), (0.3, 1.0)]
    calls = scripted_evaluate(monkeypatch, script)
    net, rows = train_for(8, data, early_stop="val_loss", patience=3)
    assert len(calls) == len(rows) == 6  # best at 3; 4, 5, 6 no better -> stop; 7 and 8 never run
    monkeypatch.undo()
    reference, _ = train_for(3, data)
    assert_same_weights(net, reference)


def test_early_stop_on_val_acc_counts_ties_as_no_improvement(monkeypatch: pytest.MonkeyPatch) -> None:
    data = (blobs(40, seed=3), blobs(20, seed=4))
    script = [(1.0, 0.5), (1.0, 0.7), (0.1, 0.7), (0.1, 0.6), (0.1, 0.99)]
    scripted_evaluate(monkeypatch, script)
    net, rows = train_for(5, data, early_stop="val_acc", patience=2)
    assert len(rows) == 4  # best 0.7 at epoch 2 (first of the tie); epochs 3 and 4 no better
    assert best_by_monitor(rows, "val_acc") == 2
    monkeypatch.undo()
    reference, _ = train_for(2, data)
    assert_same_weights(net, reference)


def test_best_weights_are_restored_even_when_patience_never_runs_out(monkeypatch: pytest.MonkeyPatch) -> None:
    data = (blobs(40, seed=3), blobs(20, seed=4))
    scripted_evaluate(monkeypatch, [(0.5, 0.5), (0.4, 0.5), (0.45, 0.5), (0.46, 0.5), (0.47, 0.5)])
    net, rows = train_for(5, data, early_stop="val_loss", patience=10)
    assert len(rows) == 5
    monkeypatch.undo()
    reference, _ = train_for(2, data)
    assert_same_weights(net, reference)


def test_without_early_stop_the_last_weights_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    data = (blobs(40, seed=3), blobs(20, seed=4))
    scripted_evaluate(monkeypatch, [(0.1, 0.9), (0.5, 0.5), (0.9, 0.1)])
    net, rows = train_for(3, data)
    assert len(rows) == 3
    monkeypatch.undo()
    reference, _ = train_for(3, data)
    assert_same_weights(net, reference)


# --- divergence --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loss", "dtype", "where"),
    [
        ("mse_softmax", "float32", "loss is nan at epoch 1 step 1"),  # softmax of inf logits: inf - inf
        ("mse_sigmoid", "float32", "validation loss is nan after epoch 1"),  # sigmoid saturates; val CE does not
        ("cross_entropy", "float64", r"loss is nan at epoch \d+ step \d+"),  # float64 takes a few steps to overflow
    ],
)
def test_divergence_stops_with_a_clear_error(loss: str, dtype: str, where: str) -> None:
    rng = np.random.default_rng(0)
    net = Network([DIM, 16, CLASSES], "relu", "he_normal", rng, np.dtype(dtype))
    data = blobs(64, seed=5, dtype=np.dtype(dtype))
    run_cfg = cfg(lr=1e30, loss=loss, dtype=dtype)
    with np.errstate(all="ignore"), pytest.raises(MLPError, match=rf"training diverged: {where}.*lower train\.lr"):
        fit(net, data, data, run_cfg, OptimizerConfig("sgd"), ScheduleConfig("constant"), rng)


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_nan_input_stops_at_the_first_step(loss: str) -> None:
    rng = np.random.default_rng(0)
    net = Network([DIM, 8, CLASSES], "tanh", "glorot_normal", rng, np.float64)
    data = blobs(32, seed=6, dtype=np.float64)
    data.x[5, 3] = np.nan
    with np.errstate(all="ignore"), pytest.raises(MLPError, match=r"loss is nan at epoch 1 step \d+; lower"):
        fit(net, data, data, cfg(dtype="float64", loss=loss), OptimizerConfig("sgd"), ScheduleConfig("constant"), rng)


# --- dtype -------------------------------------------------------------------------------------


def arrays_in(value) -> list[np.ndarray]:
    """The ndarrays in ``value``: itself, or those in its (nested) lists, tuples and dict values."""
    if isinstance(value, np.ndarray):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list | tuple):
        return [a for item in value for a in arrays_in(item)]
    return []


def float_arrays(obj) -> list[tuple[str, np.ndarray]]:
    """Every ndarray an object holds (attributes, and nested lists/dicts of arrays), by attribute name."""
    return [(name, a) for name, value in vars(obj).items() for a in arrays_in(value)]


def assert_only(dtype, *objects) -> None:
    for obj in objects:
        arrays = float_arrays(obj)
        for name, a in arrays:
            assert a.dtype in (dtype, np.bool_), f"{type(obj).__name__}.{name} is {a.dtype}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("activation", "loss"), list(itertools.product(sorted(ACTIVATIONS), sorted(LOSSES))))
def test_one_step_keeps_the_dtype_everywhere(activation: str, loss: str, dtype) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, DIM))  # float64 on purpose: the net's dtype must win
    targets = np.eye(CLASSES)[rng.integers(0, CLASSES, 8)].astype(dtype)
    for name in sorted(OPTIMIZERS):
        net = Network([DIM, 6, 5, CLASSES], activation, "he_normal", np.random.default_rng(1), dtype, dropout=0.3)
        params = net.parameters()
        opt = make_optimizer(
            OptimizerConfig(name, momentum=0.9, weight_decay=0.1), [p for _, p, _ in params], [g for _, _, g in params]
        )
        loss_fn = make_loss(loss, 0.1)
        eval_logits = net.forward(x.astype(dtype))
        logits = net.forward(x.astype(dtype), train=True)
        assert logits.dtype == dtype and eval_logits.dtype == dtype
        assert not np.array_equal(logits, eval_logits)  # the training pass applied dropout masks
        loss_fn.forward(logits, targets)
        grad = loss_fn.backward()
        assert grad.dtype == dtype
        grad_x = net.backward(grad, input_grad=True)
        assert grad_x.dtype == dtype, "d loss / d input"
        opt.step(0.01)
        opt.step(0.01)
        # the trainer's path: forward, loss and back-propagation, then the piecewise updates, in one hand-off
        opt.start_step(1e-3)
        if opt.prescaled:
            scale, update = -0.01, partial(opt.step_rows_prescaled, decay=-1e-5)
        else:
            scale, update = None, partial(opt.step_rows, lr=0.01, l2=1e-3)
        value, logits = net.train_batch(x.astype(dtype), targets, loss_fn, scale, update=update)
        assert isinstance(value, float) and logits.dtype == dtype
        assert_only(dtype, net, *net.dense, net.act, net.drop, loss_fn, opt)  # net: its buffers and masks
        assert all(p.dtype == dtype and g.dtype == dtype for _, p, g in net.parameters())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fit_with_every_option_keeps_the_dtype(dtype: str) -> None:
    # float64 inputs into a float32 run and vice versa: fit casts to the net's dtype once.
    other = np.float64 if dtype == "float32" else np.float32
    data = blobs(48, seed=7, dtype=other)
    rng = np.random.default_rng(0)
    net = Network([DIM, 12, 8, CLASSES], "gelu", "he_normal", rng, np.dtype(dtype), dropout=0.2)
    checked = []  # (method, dtypes of its float arrays in and out, and of the dtype it was asked for)

    def spy(obj, method: str) -> None:
        original = getattr(obj, method)

        def wrapper(*args, **kwargs):
            out = original(*args, **kwargs)
            values = [*args, *kwargs.values(), out]
            dtypes = [v.dtype for v in values if isinstance(v, np.ndarray) and v.dtype != np.bool_]
            dtypes += [v for v in values if isinstance(v, np.dtype)]
            checked.append((f"{type(obj).__name__}.{method}", dtypes))
            return out

        setattr(obj, method, wrapper)

    for dense in net.dense:
        for method in ("forward", "input_grad", "weight_grad", "bias_grad"):
            spy(dense, method)
    for method in ("forward", "backward"):
        spy(net.act, method)
    for method in ("mask", "forward", "backward"):
        spy(net.drop, method)
    run_cfg = cfg(
        epochs=2,
        dtype=dtype,
        l2=1e-3,
        loss="cross_entropy",
        label_smoothing=0.1,
        max_norm=2.0,
        early_stop="val_loss",
        patience=1,
    )
    fit(
        net,
        data,
        data,
        run_cfg,
        OptimizerConfig("adamw", weight_decay=0.01),
        ScheduleConfig("cosine", warmup_epochs=0.5),
        rng,
    )
    assert len(checked) > 50
    assert {method for method, _ in checked} == {
        *(f"Dense.{m}" for m in ("forward", "input_grad", "weight_grad", "bias_grad")),
        *(f"GELU.{m}" for m in ("forward", "backward")),
        *(f"Dropout.{m}" for m in ("mask", "forward", "backward")),
    }
    assert all(dtypes for _, dtypes in checked)
    assert all(d == dtype for _, dtypes in checked for d in dtypes), {c for c, ds in checked if set(ds) != {dtype}}
    assert_only(np.dtype(dtype), net, *net.dense, net.loss)  # net.loss: the validation pass's cache
    assert all(p.dtype == dtype for p in net.state().values())


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov"])
def test_prescaled_path_trains_exactly_like_step_lr(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # fit scales the loss gradient by -lr for these optimizers; with L2 and a per-step schedule the
    # weights must match the plain path (gradients as they are, step(lr)) up to rounding (float64).
    data = blobs(40, seed=3)
    opt_cfg = OptimizerConfig(name, momentum=0.9)
    sched = ScheduleConfig("cosine", warmup_epochs=1)

    def run() -> tuple[Network, list[dict]]:
        net = Network([DIM, 7, CLASSES], "relu", "he_normal", np.random.default_rng(4), np.float64)
        rows, _ = fit(
            net,
            data,
            data,
            cfg(epochs=3, batch_size=8, l2=1e-2, dtype="float64"),
            opt_cfg,
            sched,
            np.random.default_rng(5),
        )
        return net, rows

    prescaled_net, prescaled_rows = run()
    cls = OPTIMIZERS.get(name)
    monkeypatch.setattr(cls, "prescaled", False)
    plain_net, plain_rows = run()
    for (_, a, _), (_, b, _) in zip(prescaled_net.parameters(), plain_net.parameters(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
    assert [r["train_loss"] for r in prescaled_rows] == pytest.approx([r["train_loss"] for r in plain_rows], rel=1e-10)
    initial = Network([DIM, 7, CLASSES], "relu", "he_normal", np.random.default_rng(4), np.float64)
    assert not np.allclose(initial.parameters()[0][1], plain_net.parameters()[0][1])  # it did train


@pytest.mark.parametrize("options", [{}, {"augment_shift": 1}, {"augment_shift": 2, "augment_elastic_alpha": 1.0}])
def test_a_short_batch_is_made_the_same_whole_or_block_by_block(options) -> None:
    # The last batch of an epoch is shorter than the buffers: prepare(rows) must index the batch, not them.
    rng = np.random.default_rng(0)
    x = rng.random((20, 35), dtype=np.float32)
    y = np.arange(20) % CLASSES
    train = Split(x, y, np.eye(CLASSES)[y])  # float64 targets: cast to the net's float32 too
    cfg = TrainConfig(epochs=1, batch_size=8, lr=0.1, l2=0.0, seed=0, dtype="float32", **options)
    made = []
    for blocks in ([slice(None)], [slice(0, 2), slice(2, 5)]):
        maker = BatchMaker(train, cfg, np.dtype(np.float32), (5, 7))
        idx, xb, tb, prepare = maker.next(np.array([3, 17, 9, 0, 12]), np.random.default_rng(1))
        for rows in blocks:
            prepare(rows)
        made.append((idx.copy(), xb.copy(), tb.copy()))
    (idx, xb, tb), (idx2, xb2, tb2) = made
    assert xb.shape == (5, 35) and tb.dtype == np.float32 and np.array_equal(idx, idx2)
    assert np.array_equal(xb, xb2) and np.array_equal(tb, tb2) and np.array_equal(tb, np.eye(CLASSES)[y[idx]])


def test_epoch_columns_mark_exactly_the_columns_with_a_non_zero_in_each_batch() -> None:
    rng = np.random.default_rng(2)
    x = rng.random((43, 19), dtype=np.float32)  # 19 columns: their bits pad a byte and a half
    x[rng.random(x.shape) < 0.9] = 0
    x[5, 3] = np.nan  # not blank
    y = np.arange(43) % CLASSES
    train = Split(x, y, np.eye(CLASSES, dtype=np.float32)[y])
    config = TrainConfig(epochs=1, batch_size=8, lr=0.1, l2=0.0, seed=0, dtype="float32")
    perm = rng.permutation(43)  # five batches of 8 and one of 3
    marks = BatchMaker(train, config, np.dtype(np.float32), None, blank_columns=True).epoch_columns(perm)
    expected = [(x[perm[i : i + 8]] != 0).any(axis=0) for i in range(0, 43, 8)]
    assert marks.dtype == bool and np.array_equal(marks, expected)
    assert 0 < marks.sum() < marks.size  # some columns blank in a batch, some not
    # Not asked for, or with augmentation (which moves pixels): no marks.
    shifted = TrainConfig(epochs=1, batch_size=8, lr=0.1, l2=0.0, seed=0, dtype="float32", augment_shift=1)
    deformed = TrainConfig(epochs=1, batch_size=8, lr=0.1, l2=0.0, seed=0, dtype="float32", augment_rotate=5.0)
    for options, asked in ((config, False), (shifted, True), (deformed, True)):
        assert (
            BatchMaker(train, options, np.dtype(np.float32), (1, 19), blank_columns=asked).epoch_columns(perm) is None
        )
