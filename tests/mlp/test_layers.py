"""Layers: inverted dropout (statistics, eval identity, gradients with a fixed mask), activation
values, and a finite-difference check of a whole network with dropout and a non-default loss.

Finite differences are central, ``h = 1e-6``, in float64; the relative error
``||a - n|| / (||a|| + ||n||)`` must stay below ``1e-6``. Dropout draws a fresh mask at every
training forward pass, so the checks give each Dropout layer a freshly seeded generator before
every pass: the mask is then the same in the analytic pass and in every perturbed pass.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from helpers.gradcheck import numeric_grad, rel_error
from mnist_pipeline.mlp.layers import ACTIVATIONS, Dense, Dropout
from mnist_pipeline.mlp.losses import make_loss
from mnist_pipeline.mlp.network import Network

TOL = 1e-6


# --- Dropout -----------------------------------------------------------------------------------


def test_dropout_eval_mode_returns_the_input_unchanged() -> None:
    x = np.random.default_rng(0).standard_normal((5, 7))
    before = x.copy()
    layer = Dropout(0.5, np.random.default_rng(1))
    out = layer.forward(x, train=False)
    assert out is x
    assert np.array_equal(x, before)
    grad = np.ones_like(x)
    assert layer.backward(grad) is grad  # no mask applied after an eval pass
    assert Dropout(0.5, np.random.default_rng(1)).forward(x) is x  # eval is the default


def test_dropout_eval_after_training_pass_is_still_identity() -> None:
    layer = Dropout(0.5, np.random.default_rng(1))
    x = np.ones((4, 4))
    layer.forward(x, train=True)
    assert layer.forward(x, train=False) is x
    assert np.array_equal(layer.backward(np.full((4, 4), 3.0)), np.full((4, 4), 3.0))


def test_dropout_zero_is_identity_in_training() -> None:
    x = np.arange(6.0).reshape(2, 3)
    assert Dropout(0.0, np.random.default_rng(0)).forward(x, train=True) is x


@pytest.mark.parametrize(("p", "dtype"), [(0.3, np.float64), (0.5, np.float32), (0.8, np.float32)])
def test_dropout_training_mode_preserves_the_mean(p: float, dtype) -> None:
    n = 1_000_000
    x = np.ones((1000, 1000), dtype=dtype)
    out = Dropout(p, np.random.default_rng(2)).forward(x, train=True)
    assert out.dtype == dtype and out.shape == x.shape
    keep = 1 - p
    # Each output is Bernoulli(keep) / keep: mean 1, variance p / keep. Five standard errors.
    assert abs(out.mean(dtype=np.float64) - 1.0) < 5 * math.sqrt(p / keep / n)
    # Units are dropped with probability p (not kept with probability p): std of a binomial fraction.
    dropped = (out == 0).mean()
    assert abs(dropped - p) < 5 * math.sqrt(p * keep / n)
    survivors = out[out != 0]
    np.testing.assert_allclose(survivors, dtype(1 / keep), rtol=1e-6)  # inverted: scaled by 1 / keep


def test_dropout_preserves_each_units_expected_activation() -> None:
    rng = np.random.default_rng(3)
    n, p = 200_000, 0.4
    x = np.tile(rng.uniform(-2, 2, 5), (n, 1))  # (N, 5): each column one value
    out = Dropout(p, rng).forward(x, train=True)
    # column mean of out - x has standard error |x| * sqrt(p / keep / N)
    se = np.abs(x[0]) * math.sqrt(p / (1 - p) / n)
    assert np.all(np.abs(out.mean(axis=0) - x[0]) < 5 * se)


def test_dropout_masks_differ_between_passes_and_backward_uses_the_forward_mask() -> None:
    layer = Dropout(0.5, np.random.default_rng(4))
    x = np.ones((8, 16))
    a = layer.forward(x, train=True)
    b = layer.forward(x, train=True)
    assert not np.array_equal(a, b)  # a new mask per pass
    grad = layer.backward(np.ones_like(x))
    assert np.array_equal(grad, b)  # d(out)/d(x) = mask / keep of the latest pass


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dropout_gradient_with_a_fixed_mask(p: float) -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 6))
    upstream = rng.standard_normal((4, 6))  # f = sum(upstream * dropout(x))
    layer = Dropout(p, np.random.default_rng(0))

    def f() -> float:
        layer.rng = np.random.default_rng(11)  # the same mask every pass
        return float((upstream * layer.forward(x, train=True)).sum())

    f()
    mask = layer.mask.copy()
    assert 0 < mask.sum() < mask.size  # some units dropped, some kept: a real test
    analytic = layer.backward(upstream.copy())
    numeric = numeric_grad(f, x)
    assert np.array_equal(layer.mask, mask)  # finite differences saw the same mask
    assert rel_error(analytic, numeric) < TOL
    assert np.all(analytic[~mask] == 0)


# --- activation values (the gradient checks cannot see a wrong forward) -------------------------

GELU_C = math.sqrt(2 / math.pi)


def gelu(v: float) -> float:
    return 0.5 * v * (1 + math.tanh(GELU_C * (v + 0.044715 * v**3)))


ACTIVATION_VALUES = {
    "identity": lambda v: v,
    "relu": lambda v: max(v, 0.0),
    "leaky_relu": lambda v: v if v > 0 else 0.01 * v,
    "sigmoid": lambda v: 1 / (1 + math.exp(-v)),
    "tanh": math.tanh,
    "gelu": gelu,
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_values(name: str) -> None:
    points = [-3.0, -1.0, -0.25, 0.0, 0.5, 1.0, 2.5]
    out = ACTIVATIONS.get(name)().forward(np.array([points]))
    np.testing.assert_allclose(out[0], [ACTIVATION_VALUES[name](v) for v in points], rtol=1e-12, atol=1e-15)


def test_activation_hand_values() -> None:
    assert ACTIVATIONS.get("gelu")().forward(np.array([[1.0]]))[0, 0] == pytest.approx(0.8411919906, rel=1e-9)
    assert ACTIVATIONS.get("leaky_relu")().forward(np.array([[-2.0]]))[0, 0] == pytest.approx(-0.02)
    assert ACTIVATIONS.get("sigmoid")().forward(np.array([[-800.0, 800.0]])).tolist() == [[0.0, 1.0]]  # no overflow


# --- a whole network with dropout and a non-default loss ---------------------------------------


def reseed_dropout(net: Network, seed: int = 21) -> None:
    for i, layer in enumerate(net.layers):
        if isinstance(layer, Dropout):
            layer.rng = np.random.default_rng(seed + i)


@pytest.mark.parametrize(
    ("activation", "loss", "smoothing"),
    [("tanh", "mse_softmax", 0.0), ("sigmoid", "mse_sigmoid", 0.0), ("gelu", "cross_entropy", 0.2)],
)
def test_network_with_dropout_gradients_match_finite_differences(activation: str, loss: str, smoothing: float) -> None:
    sizes = [6, 8, 7, 4]
    rng = np.random.default_rng(6)
    net = Network(sizes, activation, "glorot_normal", rng, np.float64, dropout=0.4)
    assert sum(isinstance(layer, Dropout) for layer in net.layers) == 2  # one per hidden layer
    for dense in net.dense:
        dense.params["b"][...] = 0.3 * rng.standard_normal(dense.params["b"].shape)
    x = rng.standard_normal((5, sizes[0]))
    targets = np.eye(sizes[-1])[rng.integers(0, sizes[-1], 5)]

    def f() -> float:
        reseed_dropout(net)
        return make_loss(loss, smoothing).forward(net.forward(x.copy(), train=True), targets)

    loss_fn = make_loss(loss, smoothing)
    reseed_dropout(net)
    loss_fn.forward(net.forward(x.copy(), train=True), targets)
    masks = [layer.mask.copy() for layer in net.layers if isinstance(layer, Dropout)]
    assert all(0 < m.sum() < m.size for m in masks)
    grad_logits = loss_fn.backward()
    net.backward(grad_logits.copy())
    analytic = {name: g.copy() for name, _, g in net.parameters()}
    grad_x = grad_logits.copy()
    for layer in reversed(net.layers):
        grad_x = layer.backward(grad_x)
    for name, param, _ in net.parameters():
        numeric = numeric_grad(f, param)
        assert np.linalg.norm(numeric) > 1e-5, name
        assert rel_error(analytic[name], numeric) < TOL, name
    assert rel_error(grad_x, numeric_grad(f, x)) < TOL
    masks_after = [layer.mask for layer in net.layers if isinstance(layer, Dropout)]
    assert all(np.array_equal(a, b) for a, b in zip(masks, masks_after, strict=True))


def test_network_with_dropout_is_deterministic_at_eval() -> None:
    # Eval mode skips dropout entirely: same output as the same weights without dropout layers.
    with_dropout = Network([6, 8, 3], "relu", "he_normal", np.random.default_rng(7), np.float64, dropout=0.5)
    plain = Network([6, 8, 3], "relu", "he_normal", np.random.default_rng(7), np.float64)
    x = np.random.default_rng(8).standard_normal((4, 6))
    assert np.array_equal(with_dropout.forward(x.copy()), plain.forward(x.copy()))
    assert not np.array_equal(with_dropout.forward(x.copy(), train=True), plain.forward(x.copy()))


def test_dense_forward_is_x_at_w_plus_b() -> None:
    layer = Dense(2, 3, "zeros", np.random.default_rng(0), np.float64)
    layer.params["W"][...] = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    layer.params["b"][...] = [0.5, -0.5, 1.0]
    out = layer.forward(np.array([[1.0, -1.0], [2.0, 0.5]]))
    assert out.tolist() == [[-2.5, -3.5, -2.0], [4.5, 6.0, 10.0]]
