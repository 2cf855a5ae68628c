"""Finite-difference gradient checks (float64) of the whole network and its loss; dtype preservation.

Central differences ``(f(w + h) - f(w - h)) / 2h`` against ``backward`` for every weight, bias and
input of a [7, 5, 4, 3] network, once per registered activation (new activations are picked up
automatically); d loss / d input comes from ``Network.backward(..., input_grad=True)``. Every forward
pass gets a fresh copy of the input, so a pass that wrote into it could not spoil the next one.
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers.gradcheck import numeric_grad, rel_error
from mnist_pipeline.mlp.layers import ACTIVATIONS
from mnist_pipeline.mlp.losses import LOSSES, SoftmaxCrossEntropy
from mnist_pipeline.mlp.network import Network

SIZES = [7, 5, 4, 3]
BATCH = 6
TOL = 1e-6


def make_problem(activation: str, dtype=np.float64, seed: int = 0):
    rng = np.random.default_rng(seed)
    net = Network(sizes=SIZES, activation=activation, init="glorot_normal", rng=rng, dtype=dtype)
    for dense in net.dense:  # non-zero biases: check the gradient at a generic point
        dense.params["b"][...] = 0.5 * rng.standard_normal(dense.params["b"].shape)
    x = rng.standard_normal((BATCH, SIZES[0])).astype(dtype)  # (B, in)
    targets = np.eye(SIZES[-1], dtype=dtype)[rng.integers(0, SIZES[-1], BATCH)]  # (B, C)
    return net, x, targets


def backprop(net: Network, x: np.ndarray, targets: np.ndarray):
    """Loss, parameter grads (copies, by name) and the gradient w.r.t. the input."""
    loss_fn = SoftmaxCrossEntropy()
    loss = loss_fn.forward(net.forward(x.copy(), train=True), targets)
    grad_x = net.backward(loss_fn.backward(), input_grad=True)
    grads = {name: g.copy() for name, _, g in net.parameters()}
    return loss, grads, grad_x


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_network_gradients_match_finite_differences(activation: str) -> None:
    net, x, targets = make_problem(activation)
    _, grads, grad_x = backprop(net, x, targets)

    def loss() -> float:
        return SoftmaxCrossEntropy().forward(net.forward(x.copy(), train=True), targets)

    checked = 0
    for name, param, _ in net.parameters():
        expected = numeric_grad(loss, param)
        assert np.linalg.norm(expected) > 1e-4, f"{name}: gradient too small to test"
        assert grads[name].shape == param.shape
        assert rel_error(grads[name], expected) < TOL, f"{activation} {name}"
        checked += 1
    assert checked == 2 * (len(SIZES) - 1)  # W and b of every Dense layer
    expected_x = numeric_grad(loss, x)
    assert grad_x.shape == x.shape
    assert rel_error(grad_x, expected_x) < TOL, f"{activation} input"


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_a_wrong_gradient_would_be_caught(activation: str) -> None:
    # Guard against a vacuous check: perturbing one analytic entry must exceed the tolerance.
    net, x, targets = make_problem(activation)
    _, grads, _ = backprop(net, x, targets)
    w0 = net.parameters()[0][1]
    numeric = numeric_grad(lambda: SoftmaxCrossEntropy().forward(net.forward(x.copy()), targets), w0)
    wrong = grads["W0"].copy()
    wrong.flat[np.argmax(np.abs(wrong))] *= 1.01
    assert rel_error(wrong, numeric) > TOL


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_softmax_cross_entropy_gradient_and_value(smoothing: float) -> None:
    rng = np.random.default_rng(1)
    logits = 3 * rng.standard_normal((BATCH, 5))
    targets = np.eye(5)[rng.integers(0, 5, BATCH)]
    loss_fn = SoftmaxCrossEntropy(label_smoothing=smoothing)
    value = loss_fn.forward(logits.copy(), targets)
    grad = loss_fn.backward()

    soft = targets * (1 - smoothing) + smoothing / 5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert value == pytest.approx(-(soft * np.log(probs)).sum() / BATCH, rel=1e-12)
    np.testing.assert_allclose(grad, (probs - soft) / BATCH, rtol=1e-10, atol=1e-14)
    numeric = numeric_grad(lambda: SoftmaxCrossEntropy(label_smoothing=smoothing).forward(logits, targets), logits)
    assert rel_error(grad, numeric) < TOL


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_registered_loss_gradient(name: str) -> None:
    rng = np.random.default_rng(2)
    logits = 2 * rng.standard_normal((BATCH, 4))
    targets = np.eye(4)[rng.integers(0, 4, BATCH)]
    loss_fn = LOSSES.get(name)()
    loss_fn.forward(logits.copy(), targets)
    grad = loss_fn.backward()
    numeric = numeric_grad(lambda: LOSSES.get(name)().forward(logits, targets), logits)
    assert np.linalg.norm(numeric) > 1e-4
    assert rel_error(grad, numeric) < TOL


def test_softmax_cross_entropy_is_stable_for_huge_logits() -> None:
    logits = np.array([[1000.0, 0.0, -1000.0], [-1e4, 1e4, 0.0]])
    targets = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    loss_fn = SoftmaxCrossEntropy()
    value = loss_fn.forward(logits, targets)
    grad = loss_fn.backward()
    assert value == pytest.approx((0.0 + 2e4) / 2)  # row 1 is right (loss 0), row 2 off by 2e4
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad, [[0, 0, 0], [-0.5, 0.5, 0]], atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_dtype_is_preserved_through_forward_and_backward(activation: str, dtype) -> None:
    net, x, targets = make_problem(activation, dtype=dtype)
    loss_fn = SoftmaxCrossEntropy()
    logits = net.forward(x.copy(), train=True)
    assert logits.dtype == dtype
    assert isinstance(loss_fn.forward(logits, targets), float)
    grad = loss_fn.backward()
    assert grad.dtype == dtype
    backward_dtypes = []  # of every gradient back-propagated through a layer

    def recording(method):
        def wrapper(*args, **kwargs):
            out = method(*args, **kwargs)
            backward_dtypes.append((method.__qualname__, out.dtype))
            return out

        return wrapper

    net.act.backward = recording(net.act.backward)
    for dense in net.dense:
        dense.input_grad = recording(dense.input_grad)
    grad_x = net.backward(grad, input_grad=True)
    for name, param, g in net.parameters():
        assert param.dtype == dtype and g.dtype == dtype, name
    assert len(backward_dtypes) == 2 * (len(SIZES) - 2) + 1  # two hidden layers, then the input
    assert all(d == dtype for _, d in backward_dtypes), backward_dtypes
    assert grad_x.dtype == dtype and grad_x.shape == x.shape
    assert net.predict_proba(x).dtype == dtype
