"""Layers: inverted dropout (statistics, masks, gradients with a fixed mask, no mask at evaluation),
activation values and gradients, Dense by rows, and a finite-difference check of a whole network with
dropout and a non-default loss.

Finite differences are central, ``h = 1e-6``, in float64; the relative error
``||a - n|| / (||a|| + ||n||)`` must stay below ``1e-6``. A network draws a fresh mask per hidden
layer from its Dropout's generator at every training pass, so the network check gives that Dropout a
freshly seeded generator before every pass: the masks are then the same in the analytic pass and in
every perturbed pass.
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


def dropout_pair(seed: int = 1) -> tuple[Network, Network]:
    """The same [6, 8, 3] ReLU weights with dropout 0.5 and without dropout (float64)."""
    with_dropout = Network([6, 8, 3], "relu", "he_normal", np.random.default_rng(seed), np.float64, dropout=0.5)
    plain = Network([6, 8, 3], "relu", "he_normal", np.random.default_rng(seed), np.float64)
    return with_dropout, plain


def test_dropout_eval_mode_returns_the_input_unchanged() -> None:
    # Evaluation draws no mask (the generator is untouched) and applies none (the plain net's output).
    net, plain = dropout_pair()
    x = np.random.default_rng(0).standard_normal((5, 6))
    before = x.copy()
    state = net.drop.rng.bit_generator.state
    out = net.forward(x)  # eval is the default
    assert np.array_equal(x, before)
    assert net.drop.rng.bit_generator.state == state
    assert np.array_equal(out, plain.forward(x))
    assert np.array_equal(net.forward(x, train=False), out)


def test_dropout_eval_after_training_pass_is_still_identity() -> None:
    net, plain = dropout_pair()
    x = np.ones((4, 6))
    train_out = net.forward(x, train=True).copy()
    state = net.drop.rng.bit_generator.state
    assert np.array_equal(net.forward(x), plain.forward(x))
    assert net.drop.rng.bit_generator.state == state  # no mask drawn
    assert not np.array_equal(train_out, plain.forward(x))  # the training pass did drop units


def test_dropout_zero_is_identity_in_training() -> None:
    x = np.arange(6.0).reshape(2, 3)
    layer = Dropout(0.0, np.random.default_rng(0))
    mask = layer.mask(x.shape, x.dtype)
    assert mask.all()
    assert np.array_equal(layer.forward(x, mask), x)
    assert np.array_equal(layer.backward(np.full((2, 3), 3.0), mask), np.full((2, 3), 3.0))
    net = Network([3, 4, 2], "tanh", "glorot_normal", np.random.default_rng(0), np.float64, dropout=0.0)
    assert net.drop is None
    assert np.array_equal(net.forward(x, train=True), net.forward(x))


@pytest.mark.parametrize(("p", "dtype"), [(0.3, np.float64), (0.5, np.float32), (0.8, np.float32)])
def test_dropout_training_mode_preserves_the_mean(p: float, dtype) -> None:
    n = 1_000_000
    x = np.ones((1000, 1000), dtype=dtype)
    layer = Dropout(p, np.random.default_rng(2))
    mask = layer.mask(x.shape, x.dtype)
    out = layer.forward(x, mask)
    assert mask.dtype == np.bool_ and mask.shape == x.shape
    assert out.dtype == dtype and out.shape == x.shape
    keep = 1 - p
    # Each output is Bernoulli(keep) / keep: mean 1, variance p / keep. Five standard errors.
    assert abs(out.mean(dtype=np.float64) - 1.0) < 5 * math.sqrt(p / keep / n)
    # Units are dropped with probability p (not kept with probability p): std of a binomial fraction.
    dropped = (out == 0).mean()
    assert abs(dropped - p) < 5 * math.sqrt(p * keep / n)
    assert np.array_equal(out != 0, mask)  # exactly the masked-out units are zero
    survivors = out[out != 0]
    np.testing.assert_allclose(survivors, dtype(1 / keep), rtol=1e-6)  # inverted: scaled by 1 / keep


def test_dropout_preserves_each_units_expected_activation() -> None:
    rng = np.random.default_rng(3)
    n, p = 200_000, 0.4
    x = np.tile(rng.uniform(-2, 2, 5), (n, 1))  # (N, 5): each column one value
    layer = Dropout(p, rng)
    out = layer.forward(x, layer.mask(x.shape, x.dtype))
    # column mean of out - x has standard error |x| * sqrt(p / keep / N)
    se = np.abs(x[0]) * math.sqrt(p / (1 - p) / n)
    assert np.all(np.abs(out.mean(axis=0) - x[0]) < 5 * se)


def test_dropout_masks_differ_between_passes_and_backward_uses_the_forward_mask() -> None:
    layer = Dropout(0.5, np.random.default_rng(4))
    x = np.ones((8, 16))
    first, second = layer.mask(x.shape, x.dtype), layer.mask(x.shape, x.dtype)
    replay = np.random.default_rng(4)  # drawn from the layer's generator, one mask after the other
    assert np.array_equal(first, replay.random(x.shape) < 0.5)
    assert np.array_equal(second, replay.random(x.shape) < 0.5)
    a = layer.forward(x, first)
    out = np.empty_like(x)
    b = layer.forward(x, second, out=out)
    assert b is out
    assert not np.array_equal(a, b)  # a new mask per pass
    upstream = np.ones_like(x)
    grad = layer.backward(upstream, second)
    assert grad is upstream  # in place
    assert np.array_equal(grad, b)  # d(out)/d(x) = mask / keep of the pass's own mask


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dropout_gradient_with_a_fixed_mask(p: float) -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 6))
    upstream = rng.standard_normal((4, 6))  # f = sum(upstream * dropout(x))
    layer = Dropout(p, np.random.default_rng(11))
    mask = layer.mask(x.shape, x.dtype)
    saved = mask.copy()
    assert 0 < mask.sum() < mask.size  # some units dropped, some kept: a real test

    def f() -> float:
        return float((upstream * layer.forward(x, mask)).sum())

    analytic = layer.backward(upstream.copy(), mask)
    numeric = numeric_grad(f, x)
    assert np.array_equal(mask, saved)  # finite differences saw the same mask
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
    act = ACTIVATIONS.get(name)()
    z = np.array([points])
    out = np.empty_like(z)
    a = act.forward(z, out)
    assert a is out  # written into the buffer the network hands it
    assert z.tolist() == [points]  # the input is left alone
    np.testing.assert_allclose(a[0], [ACTIVATION_VALUES[name](v) for v in points], rtol=1e-12, atol=1e-15)
    if not act.keeps_input:  # may then write over its input: the same values in place
        in_place = z.copy()
        assert act.forward(in_place, in_place) is in_place
        assert np.array_equal(in_place, a)


def activate(name: str, z: np.ndarray) -> np.ndarray:
    return ACTIVATIONS.get(name)().forward(z, np.empty_like(z))


def test_activation_hand_values() -> None:
    assert activate("gelu", np.array([[1.0]]))[0, 0] == pytest.approx(0.8411919906, rel=1e-9)
    assert activate("leaky_relu", np.array([[-2.0]]))[0, 0] == pytest.approx(-0.02)
    assert activate("sigmoid", np.array([[-800.0, 800.0]])).tolist() == [[0.0, 1.0]]  # no overflow


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_gives_the_bits_of_maximum_with_a_scalar_zero_for_every_kind_of_float(dtype) -> None:
    """ReLU compares with an array of zeros (a faster loop); the results are np.maximum(z, 0)'s bit for bit,
    signed zeros, NaN, infinities and subnormals included, on odd shapes and non-contiguous inputs."""
    info = np.finfo(dtype)
    tiny = info.smallest_subnormal
    special = [0.0, -0.0, np.nan, -np.nan, np.inf, -np.inf, tiny, -tiny, 1.5, -2.5]
    rng = np.random.default_rng(3)
    relu = ACTIVATIONS.get("relu")()
    bits = np.uint32 if dtype == np.float32 else np.uint64
    for shape in [(3, 7), (64, 256), (5, 1), (3, 7), (5, 256)]:  # cached zeros reused, (5, 256) their first rows
        z = rng.integers(0, np.iinfo(bits).max, size=shape, dtype=bits, endpoint=True).view(dtype)
        z.flat[: len(special)] = np.array(special, dtype)[: z.size]
        for view in (z, z[:, ::2], z.T):
            out = np.empty_like(view)
            assert relu.forward(view, out).view(bits).tolist() == np.maximum(view, 0).view(bits).tolist()


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_backward_matches_finite_differences(name: str) -> None:
    # f = sum(upstream * act(z)); backward turns upstream into d f / d z in place, from z and act(z).
    rng = np.random.default_rng(9)
    z = 2 * rng.standard_normal((4, 5))  # no entry within h of ReLU's kink at 0
    upstream = rng.standard_normal((4, 5))
    act = ACTIVATIONS.get(name)()
    a = act.forward(z, np.empty_like(z))
    grad = upstream.copy()
    analytic = act.backward(grad, z, a)
    assert analytic is grad
    numeric = numeric_grad(lambda: float((upstream * activate(name, z)).sum()), z)
    assert np.linalg.norm(numeric) > 1e-3
    assert rel_error(analytic, numeric) < TOL


# --- a whole network with dropout and a non-default loss ---------------------------------------

MASK_SEED = 21


def reseed_dropout(net: Network) -> None:
    net.drop.rng = np.random.default_rng(MASK_SEED)


@pytest.mark.parametrize(
    ("activation", "loss", "smoothing"),
    [("tanh", "mse_softmax", 0.0), ("sigmoid", "mse_sigmoid", 0.0), ("gelu", "cross_entropy", 0.2)],
)
def test_network_with_dropout_gradients_match_finite_differences(activation: str, loss: str, smoothing: float) -> None:
    sizes, batch, p = [6, 8, 7, 4], 5, 0.4
    rng = np.random.default_rng(6)
    net = Network(sizes, activation, "glorot_normal", rng, np.float64, dropout=p)
    for dense in net.dense:
        dense.params["b"][...] = 0.3 * rng.standard_normal(dense.params["b"].shape)
    x = rng.standard_normal((batch, sizes[0]))
    targets = np.eye(sizes[-1])[rng.integers(0, sizes[-1], batch)]

    def f() -> float:
        reseed_dropout(net)
        return make_loss(loss, smoothing).forward(net.forward(x, train=True), targets)

    loss_fn = make_loss(loss, smoothing)
    reseed_dropout(net)
    logits = net.forward(x, train=True)
    # One mask per hidden layer, drawn in layer order from the Dropout's generator ...
    replay = Dropout(p, np.random.default_rng(MASK_SEED))
    masks = [replay.mask((batch, h), net.dtype) for h in sizes[1:-1]]
    assert net.drop.rng.bit_generator.state == replay.rng.bit_generator.state
    assert all(0 < m.sum() < m.size for m in masks)
    # ... and applied after each hidden layer's activation.
    h = x
    for dense, mask in zip(net.dense, masks, strict=False):
        h = activate(activation, h @ dense.params["W"] + dense.params["b"]) * mask / (1 - p)
    expected = h @ net.dense[-1].params["W"] + net.dense[-1].params["b"]
    np.testing.assert_allclose(logits, expected, rtol=1e-12, atol=1e-15)
    loss_fn.forward(logits, targets)
    grad_x = net.backward(loss_fn.backward(), input_grad=True)
    analytic = {name: g.copy() for name, _, g in net.parameters()}
    for name, param, _ in net.parameters():
        numeric = numeric_grad(f, param)
        assert np.linalg.norm(numeric) > 1e-5, name
        assert rel_error(analytic[name], numeric) < TOL, name
    assert rel_error(grad_x, numeric_grad(f, x)) < TOL
    # the perturbed passes drew the same masks again (and nothing else)
    assert net.drop.rng.bit_generator.state == replay.rng.bit_generator.state


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
    x = np.array([[1.0, -1.0], [2.0, 0.5]])
    assert layer.forward(x).tolist() == [[-2.5, -3.5, -2.0], [4.5, 6.0, 10.0]]
    out = np.empty((2, 3))
    assert layer.forward(x, out=out) is out
    assert out.tolist() == [[-2.5, -3.5, -2.0], [4.5, 6.0, 10.0]]


def test_dense_gradients_by_hand_and_by_rows_of_w() -> None:
    layer = Dense(3, 2, "zeros", np.random.default_rng(0), np.float64)
    layer.params["W"][...] = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]  # (in, out)
    x = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])  # (B, in)
    grad = np.array([[1.0, 0.0], [0.0, 2.0]])  # d loss / d Z, (B, out)
    assert layer.input_grad(grad).tolist() == [[1.0, 3.0, 5.0], [4.0, 8.0, 12.0]]  # grad @ W^T
    out = np.empty((2, 3))
    assert layer.input_grad(grad, out=out) is out and out.tolist() == [[1.0, 3.0, 5.0], [4.0, 8.0, 12.0]]
    layer.grads["W"][...] = -7.0
    layer.weight_grad(x, grad, rows=slice(1, 3))  # rows 1 and 2 of x^T @ grad only
    assert layer.grads["W"].tolist() == [[-7.0, -7.0], [2.0, 10.0], [3.0, 12.0]]
    layer.weight_grad(x, grad)
    assert layer.grads["W"].tolist() == [[1.0, 8.0], [2.0, 10.0], [3.0, 12.0]]
    layer.bias_grad(grad)
    assert layer.grads["b"].tolist() == [1.0, 2.0]


def test_dense_over_some_input_columns_is_the_product_with_the_others_zero() -> None:
    # x holds only the columns cols (the others being zero): forward takes their rows of W, weight_grad
    # fills the rows of W's gradient in cols from them and every other row of ``rows`` with zeros.
    rng = np.random.default_rng(0)
    layer = Dense(9, 5, "he_normal", rng, np.float64)
    layer.params["b"][...] = rng.standard_normal(5)
    cols = np.array([1, 2, 6, 8])
    x = np.zeros((4, 9))
    x[:, cols] = rng.standard_normal((4, len(cols)))  # (B, in), zero outside cols
    grad = rng.standard_normal((4, 5))  # (B, out)
    assert np.allclose(layer.forward(x[:, cols], w=layer.params["W"][cols]), layer.forward(x), rtol=1e-13, atol=0)
    scratch = np.empty((len(cols) + 1) * 5)
    for rows in [slice(None), slice(0, 4), slice(3, 9), slice(3, 7), slice(3, 6), slice(7, 7)]:  # (3, 6): none of cols
        layer.grads["W"][...] = np.nan
        layer.weight_grad(x[:, cols], grad, rows, cols, scratch)
        assert np.allclose(layer.grads["W"][rows], x[:, rows].T @ grad, rtol=1e-13, atol=0), rows
        outside = np.ones(9, bool)
        outside[rows] = False
        assert np.isnan(layer.grads["W"][outside]).all(), rows  # rows outside ``rows`` untouched
    with pytest.raises(ValueError, match="needs scratch"):
        layer.weight_grad(x[:, cols], grad, cols=cols)
