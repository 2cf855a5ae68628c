"""Losses: hand-worked values and gradients on a 2x2 problem, finite-difference gradient checks of
every variant w.r.t. the logits (float64, relative error < 1e-6), stability and dtype.

The hand problem uses logits whose softmax is exact: ``[0, ln 3] -> [1/4, 3/4]`` and
``[ln 3, 0] -> [3/4, 1/4]``, both with target class 0; sigmoid of ``[0, ln 3]`` is ``[1/2, 3/4]``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from helpers.gradcheck import numeric_grad, rel_error
from mnist_pipeline.mlp.errors import MLPError
from mnist_pipeline.mlp.losses import LOSSES, make_loss

LN3 = math.log(3)
LOGITS = np.array([[0.0, LN3], [LN3, 0.0]])  # (B=2, C=2)
TARGETS = np.array([[1.0, 0.0], [1.0, 0.0]])

VARIANTS = [
    ("cross_entropy", 0.0),
    ("cross_entropy", 0.1),
    ("cross_entropy", 0.3),
    ("mse_softmax", 0.0),
    ("mse_sigmoid", 0.0),
]

# (loss, smoothing) -> (mean loss, dL/dlogits), by hand
HAND = {
    ("cross_entropy", 0.0): (
        (math.log(4) + math.log(4 / 3)) / 2,  # -ln(1/4), -ln(3/4)
        [[(0.25 - 1) / 2, 0.75 / 2], [(0.75 - 1) / 2, 0.25 / 2]],  # (p - t) / B
    ),
    ("cross_entropy", 0.2): (  # targets (1 - 0.2) * onehot + 0.2 / 2 = [0.9, 0.1]
        (-(0.9 * math.log(0.25) + 0.1 * math.log(0.75)) - (0.9 * math.log(0.75) + 0.1 * math.log(0.25))) / 2,
        [[-0.65 / 2, 0.65 / 2], [-0.15 / 2, 0.15 / 2]],
    ),
    ("mse_softmax", 0.0): (
        # row 0: d = p - t = [-0.75, 0.75] -> 0.5 * 1.125; row 1: d = [-0.25, 0.25] -> 0.5 * 0.125
        (0.5625 + 0.0625) / 2,
        # p * (d - <p, d>): row 0 <p,d> = 0.375 -> [0.25 * -1.125, 0.75 * 0.375]
        #                   row 1 <p,d> = -0.125 -> [0.75 * -0.125, 0.25 * 0.375]
        [[-0.28125 / 2, 0.28125 / 2], [-0.09375 / 2, 0.09375 / 2]],
    ),
    ("mse_sigmoid", 0.0): (
        # row 0: s = [0.5, 0.75], d = [-0.5, 0.75]; row 1: s = [0.75, 0.5], d = [-0.25, 0.5]
        (0.5 * (0.25 + 0.5625) + 0.5 * (0.0625 + 0.25)) / 2,
        # d * s * (1 - s)
        [[-0.5 * 0.25 / 2, 0.75 * 0.1875 / 2], [-0.25 * 0.1875 / 2, 0.5 * 0.25 / 2]],
    ),
}


@pytest.mark.parametrize(("name", "smoothing"), sorted(HAND))
def test_hand_worked_value_and_gradient(name: str, smoothing: float) -> None:
    loss_fn = make_loss(name, smoothing)
    value = loss_fn.forward(LOGITS.copy(), TARGETS)
    expected_value, expected_grad = HAND[(name, smoothing)]
    assert isinstance(value, float)
    assert value == pytest.approx(expected_value, rel=1e-12)
    np.testing.assert_allclose(loss_fn.backward(), expected_grad, rtol=1e-12, atol=1e-15)


def test_hand_values_as_literals() -> None:
    # The same numbers once more as decimals, guarding the expressions above.
    assert make_loss("cross_entropy").forward(LOGITS, TARGETS) == pytest.approx(0.8369882167858357, rel=1e-12)
    assert make_loss("mse_softmax").forward(LOGITS, TARGETS) == pytest.approx(0.3125)
    assert make_loss("mse_sigmoid").forward(LOGITS, TARGETS) == pytest.approx(0.28125)


@pytest.mark.parametrize(("name", "smoothing"), VARIANTS)
@pytest.mark.parametrize("scale", [1.0, 4.0])
def test_gradient_matches_finite_differences(name: str, smoothing: float, scale: float) -> None:
    # 10 classes like MNIST; scale 4 puts sigmoid/softmax near saturation where mistakes show.
    rng = np.random.default_rng(int(scale * 10) + len(name))
    logits = scale * rng.standard_normal((6, 10))
    targets = np.eye(10)[rng.integers(0, 10, 6)]
    loss_fn = make_loss(name, smoothing)
    loss_fn.forward(logits.copy(), targets)
    analytic = loss_fn.backward()
    numeric = numeric_grad(lambda: make_loss(name, smoothing).forward(logits, targets), logits)
    assert np.linalg.norm(numeric) > 1e-4
    assert rel_error(analytic, numeric) < 1e-6


def test_label_smoothing_gradient_rows_sum_to_zero_and_target_is_the_smoothed_distribution() -> None:
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((4, 10))
    targets = np.eye(10)[[0, 3, 3, 9]]
    loss_fn = make_loss("cross_entropy", 0.1)
    loss_fn.forward(logits, targets)
    grad = loss_fn.backward()
    np.testing.assert_allclose(grad.sum(axis=1), 0, atol=1e-15)
    # The minimum is where softmax equals the smoothed targets: 0.91 on the label, 0.01 elsewhere.
    smoothed = np.where(targets == 1, 0.91, 0.01)
    best = make_loss("cross_entropy", 0.1)
    best.forward(np.log(smoothed), targets)
    np.testing.assert_allclose(best.backward(), 0, atol=1e-15)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_huge_logits_stay_finite(name: str) -> None:
    logits = np.array([[1000.0, -1000.0, 0.0], [-5e4, 5e4, 0.0]], dtype=np.float32)
    targets = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=np.float32)
    loss_fn = make_loss(name)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        value = loss_fn.forward(logits, targets)
        grad = loss_fn.backward()
    assert math.isfinite(value) and np.all(np.isfinite(grad))


@pytest.mark.parametrize(("name", "smoothing"), VARIANTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gradient_keeps_the_dtype(name: str, smoothing: float, dtype) -> None:
    logits = np.random.default_rng(0).standard_normal((3, 4)).astype(dtype)
    targets = np.eye(4, dtype=dtype)[[0, 1, 2]]
    loss_fn = make_loss(name, smoothing)
    loss_fn.forward(logits, targets)
    assert loss_fn.backward().dtype == dtype
    cached = [v for v in vars(loss_fn).values() if isinstance(v, np.ndarray)]
    assert cached and all(v.dtype == dtype for v in cached)


def test_unknown_loss_lists_the_valid_ones() -> None:
    with pytest.raises(MLPError, match="unknown loss 'hinge'; valid: cross_entropy, mse_sigmoid, mse_softmax"):
        make_loss("hinge")
