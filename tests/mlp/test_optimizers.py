"""Optimizers: two hand-worked steps of each, on a 2-element parameter, in float64.

Every test sets the gradient buffer, calls ``step(lr)``, sets the next gradient and steps again,
with a different learning rate on the second step (schedules change it between steps). The
expected values are worked out by hand from the formulas in ``mnist_pipeline.mlp.optimizers``
and written as literals or short expressions; the implementation is never used to compute them.

Shared numbers: ``w0 = [1, -2]``, ``g1 = [0.5, -1]``, ``g2 = [-0.25, 2]``, ``lr1 = 0.1``, ``lr2 = 0.05``.
The optimizers linear in ``lr * g`` (sgd, momentum, nesterov) are checked against the same hand
numbers twice: through ``step(lr)`` and through ``step_prescaled()`` with the gradient set to ``-lr * g``
(the trainer's path).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mnist_pipeline.mlp import optimizers
from mnist_pipeline.mlp.errors import MLPError
from mnist_pipeline.mlp.optimizers import BLOCK_ELEMENTS, OPTIMIZERS, OptimizerConfig, make_optimizer, row_blocks

W0 = [1.0, -2.0]
G1 = [0.5, -1.0]
G2 = [-0.25, 2.0]
LR1, LR2 = 0.1, 0.05


def two_steps(cfg: OptimizerConfig, shape=(2,), prescaled: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Parameter after step 1 and after step 2 (copies), gradients G1 then G2, lr LR1 then LR2.

    ``prescaled``: store ``-lr * g`` in the gradient buffer and call ``step_prescaled()`` instead.
    """
    w = np.array(W0, dtype=np.float64).reshape(shape)
    g = np.zeros_like(w)
    opt = make_optimizer(cfg, [w], [g])
    after = []
    for grad, lr in ((G1, LR1), (G2, LR2)):
        if prescaled:
            g[...] = -lr * np.reshape(grad, shape)
            opt.step_prescaled()
        else:
            g[...] = np.reshape(grad, shape)
            opt.step(lr)
        after.append(w.copy())
    return after[0], after[1]


BOTH_PATHS = pytest.mark.parametrize("prescaled", [False, True], ids=["step", "step_prescaled"])


def check(actual: np.ndarray, expected: list[float]) -> None:
    np.testing.assert_allclose(actual.ravel(), expected, rtol=1e-12, atol=1e-15)


@BOTH_PATHS
def test_sgd_two_steps(prescaled: bool) -> None:
    # w -= lr * g
    w1, w2 = two_steps(OptimizerConfig("sgd"), prescaled=prescaled)
    check(w1, [1.0 - 0.1 * 0.5, -2.0 + 0.1 * 1.0])  # [0.95, -1.9]
    check(w2, [0.95 + 0.05 * 0.25, -1.9 - 0.05 * 2.0])  # [0.9625, -2.0]
    check(w2, [0.9625, -2.0])


@BOTH_PATHS
def test_classical_momentum_two_steps(prescaled: bool) -> None:
    # v = mu * v - lr * g; w += v      (mu = 0.9)
    w1, w2 = two_steps(OptimizerConfig("momentum", momentum=0.9), prescaled=prescaled)
    # v1 = -0.1 * [0.5, -1] = [-0.05, 0.1]
    check(w1, [0.95, -1.9])
    # v2 = 0.9 * [-0.05, 0.1] - 0.05 * [-0.25, 2] = [-0.045 + 0.0125, 0.09 - 0.1] = [-0.0325, -0.01]
    check(w2, [0.95 - 0.0325, -1.9 - 0.01])  # [0.9175, -1.91]


@BOTH_PATHS
def test_momentum_zero_is_sgd(prescaled: bool) -> None:
    _, w2 = two_steps(OptimizerConfig("momentum", momentum=0.0), prescaled=prescaled)
    check(w2, [0.9625, -2.0])


@BOTH_PATHS
def test_nesterov_two_steps(prescaled: bool) -> None:
    # v = mu * v - lr * g; w += mu * v - lr * g      (mu = 0.9)
    w1, w2 = two_steps(OptimizerConfig("nesterov", momentum=0.9), prescaled=prescaled)
    # v1 = [-0.05, 0.1]; w1 = w0 + 0.9 * v1 - 0.1 * g1 = [1 - 0.045 - 0.05, -2 + 0.09 + 0.1]
    check(w1, [0.905, -1.81])
    # v2 = [-0.0325, -0.01]; w2 = w1 + 0.9 * v2 - 0.05 * g2 = [0.905 - 0.02925 + 0.0125, -1.81 - 0.009 - 0.1]
    check(w2, [0.88825, -1.919])


def test_ema_momentum_two_steps() -> None:
    # v = beta * v + (1 - beta) * g; w -= lr * v      (beta = 0.9)
    w1, w2 = two_steps(OptimizerConfig("ema_momentum", beta=0.9))
    # v1 = 0.1 * [0.5, -1] = [0.05, -0.1]; w1 = w0 - 0.1 * v1
    check(w1, [0.995, -1.99])
    # v2 = 0.9 * [0.05, -0.1] + 0.1 * [-0.25, 2] = [0.045 - 0.025, -0.09 + 0.2] = [0.02, 0.11]
    check(w2, [0.995 - 0.05 * 0.02, -1.99 - 0.05 * 0.11])  # [0.994, -1.9955]


def test_rmsprop_two_steps() -> None:
    # s = rho * s + (1 - rho) * g^2; w -= lr * g / (sqrt(s) + eps)      (rho = 0.9, eps = 1e-3)
    # A large eps makes its placement (outside the square root) visible in the result.
    w1, w2 = two_steps(OptimizerConfig("rmsprop", rho=0.9, eps=1e-3))
    # s1 = 0.1 * [0.25, 1] = [0.025, 0.1]
    w1_hand = [1.0 - 0.1 * 0.5 / (math.sqrt(0.025) + 1e-3), -2.0 + 0.1 * 1.0 / (math.sqrt(0.1) + 1e-3)]
    check(w1, w1_hand)
    # s2 = 0.9 * [0.025, 0.1] + 0.1 * [0.0625, 4] = [0.02875, 0.49]; sqrt(0.49) = 0.7
    w2_hand = [w1_hand[0] + 0.05 * 0.25 / (math.sqrt(0.02875) + 1e-3), w1_hand[1] - 0.05 * 2.0 / (0.7 + 1e-3)]
    check(w2, w2_hand)
    # Sanity of the hand numbers: about -lr * sign(g) / (1 + eps / |g| ...) on the first step.
    assert w1_hand[0] == pytest.approx(1.0 - 0.1 * 0.5 / 0.159114, rel=1e-6)


def adam_hand(decay: float = 0.0) -> tuple[list[float], list[float]]:
    """Two adam steps (beta1 0.9, beta2 0.999, eps 1e-8) by hand; ``decay``: adamw's ``w -= lr * wd * w`` first."""
    # step 1: m1 = 0.1 * g1 = [0.05, -0.1]; s1 = 0.001 * g1^2 = [0.00025, 0.001]
    #         m_hat = m1 / (1 - 0.9) = g1;  s_hat = s1 / (1 - 0.999) = g1^2 = [0.25, 1]
    w1 = [
        1.0 * (1 - 0.1 * decay) - 0.1 * 0.5 / (0.5 + 1e-8),
        -2.0 * (1 - 0.1 * decay) - 0.1 * -1.0 / (1.0 + 1e-8),
    ]
    # step 2: m2 = 0.9 * m1 + 0.1 * g2 = [0.045 - 0.025, -0.09 + 0.2] = [0.02, 0.11]
    #         s2 = 0.999 * s1 + 0.001 * g2^2 = [0.00024975 + 0.0000625, 0.000999 + 0.004] = [0.00031225, 0.004999]
    #         m_hat = m2 / (1 - 0.81) = m2 / 0.19;  s_hat = s2 / (1 - 0.998001) = s2 / 0.001999
    w2 = [
        w1[0] * (1 - 0.05 * decay) - 0.05 * (0.02 / 0.19) / (math.sqrt(0.00031225 / 0.001999) + 1e-8),
        w1[1] * (1 - 0.05 * decay) - 0.05 * (0.11 / 0.19) / (math.sqrt(0.004999 / 0.001999) + 1e-8),
    ]
    return w1, w2


def test_adam_two_steps() -> None:
    w1, w2 = two_steps(OptimizerConfig("adam", beta1=0.9, beta2=0.999, eps=1e-8))
    w1_hand, w2_hand = adam_hand()
    check(w1, w1_hand)
    check(w2, w2_hand)
    # Bias correction makes the first step exactly lr * sign(g) (up to eps).
    np.testing.assert_allclose(w1, [0.9, -1.9], rtol=1e-7)
    # m_hat2 = [0.105263..., 0.578947...], sqrt(s_hat2) = [0.395225..., 1.581376...]
    assert w2[0] == pytest.approx(0.9 - 0.05 * 0.1052631579 / 0.3952246, rel=1e-6)


def test_adamw_decays_weight_matrices_but_not_biases() -> None:
    cfg = OptimizerConfig("adamw", beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.5)
    w1, w2 = two_steps(cfg, shape=(1, 2))  # a (in, out) weight matrix: decoupled decay applies
    w1_hand, w2_hand = adam_hand(decay=0.5)
    check(w1, w1_hand)  # [0.95 - 0.1, -1.9 + 0.1] = [0.85, -1.8] up to eps
    np.testing.assert_allclose(w1.ravel(), [0.85, -1.8], rtol=1e-7)
    check(w2, w2_hand)
    b1, b2 = two_steps(cfg, shape=(2,))  # a bias vector: no decay, plain adam
    check(b1, adam_hand()[0])
    check(b2, adam_hand()[1])


def test_adamw_without_decay_is_adam() -> None:
    _, w2 = two_steps(OptimizerConfig("adamw", weight_decay=0.0), shape=(1, 2))
    check(w2, adam_hand()[1])


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_only_optimizers_linear_in_lr_times_g_take_prescaled_gradients(name: str) -> None:
    opt = make_optimizer(OptimizerConfig(name), [np.ones(2)], [np.ones(2)])
    assert opt.prescaled == (name in ("sgd", "momentum", "nesterov"))
    if not opt.prescaled:  # ema_momentum averages raw gradients; adaptive ones divide by their size
        with pytest.raises(NotImplementedError, match="takes plain gradients: call step"):
            opt.step_prescaled()


def assert_l2_matches_explicit_gradient(cfg: OptimizerConfig, feed) -> None:
    """``feed(opt, gw, gb, grad, lr, l2)`` sets ``opt``'s gradients and steps it with L2 folded in; the
    result must equal ``step(lr)`` on ``g + l2 * w`` for a matrix and on ``g`` alone for a vector.
    """
    l2 = 0.5
    w_ref, b_ref = np.array([[1.0, -2.0]]), np.array([1.0, -2.0])
    w, b = w_ref.copy(), b_ref.copy()
    gw_ref, gb_ref, gw, gb = (np.zeros(2).reshape(s) for s in ((1, 2), (2,), (1, 2), (2,)))
    ref = make_optimizer(cfg, [w_ref, b_ref], [gw_ref, gb_ref])
    opt = make_optimizer(cfg, [w, b], [gw, gb])
    for grad, lr in ((G1, LR1), (G2, LR2)):
        gw_ref[...] = np.reshape(grad, (1, 2)) + l2 * w_ref
        gb_ref[...] = grad  # biases: no L2
        ref.step(lr)
        feed(opt, gw, gb, grad, lr, l2)
        check(w, w_ref.ravel().tolist())
        check(b, b_ref.tolist())
    assert not np.allclose(w.ravel(), b)  # the penalty made the matrix and the vector differ


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov"])
def test_prescaled_decay_is_the_l2_gradient_of_weight_matrices_only(name: str) -> None:
    # step_prescaled(-lr * l2) on d = -lr * g
    def feed(opt, gw, gb, grad, lr, l2):
        gw[...], gb[...] = -lr * np.reshape(grad, (1, 2)), -lr * np.asarray(grad)
        opt.step_prescaled(-lr * l2)

    assert_l2_matches_explicit_gradient(OptimizerConfig(name, momentum=0.9), feed)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_step_l2_is_the_l2_gradient_of_weight_matrices_only(name: str) -> None:
    # step(lr, l2) on plain g
    def feed(opt, gw, gb, grad, lr, l2):
        gw[...], gb[...] = np.reshape(grad, (1, 2)), grad
        opt.step(lr, l2)

    assert_l2_matches_explicit_gradient(OptimizerConfig(name, momentum=0.9, weight_decay=0.1), feed)


def test_optimizer_updates_in_place_and_keeps_state_per_parameter() -> None:
    # Two parameters with different gradients: velocities must not be shared between them.
    a, b = np.array([1.0, -2.0]), np.array([[0.0, 1.0]])
    ga, gb = np.array([0.5, -1.0]), np.array([[2.0, 0.0]])
    ids = (id(a), id(b))
    opt = make_optimizer(OptimizerConfig("momentum", momentum=0.5), [a, b], [ga, gb])
    opt.step(0.1)
    opt.step(0.1)  # same gradients again: v2 = 0.5 * v1 - 0.1 * g = -0.15 * g; total -0.25 * g
    assert (id(a), id(b)) == ids
    check(a, [1.0 - 0.25 * 0.5, -2.0 + 0.25 * 1.0])
    check(b, [0.0 - 0.25 * 2.0, 1.0])


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_keeps_float32(name: str) -> None:
    w = np.array([[1.0, -2.0], [0.5, 3.0]], dtype=np.float32)
    g = np.array([[0.5, -1.0], [0.25, 2.0]], dtype=np.float32)
    opt = make_optimizer(OptimizerConfig(name, momentum=0.9, weight_decay=0.1), [w], [g])
    for _ in range(2):
        opt.step(0.1)
    assert w.dtype == np.float32 and g.dtype == np.float32
    state = [v for v in vars(opt).values() if isinstance(v, list)]
    for arrays in state:
        for s in arrays:
            assert s.dtype == np.float32, name
    assert not np.array_equal(w, [[1.0, -2.0], [0.5, 3.0]])


def test_registry_holds_the_seven_optimizers_and_names_them_on_a_miss() -> None:
    assert sorted(OPTIMIZERS) == sorted(["sgd", "momentum", "nesterov", "ema_momentum", "rmsprop", "adam", "adamw"])
    with pytest.raises(MLPError, match="unknown optimizer 'adagrad'; valid: adam, adamw"):
        OPTIMIZERS.get("adagrad")


def test_config_validates_every_registered_name_and_rejects_bad_values() -> None:
    for name in OPTIMIZERS:
        OptimizerConfig(name).validate("optimizer")  # the defaults are valid for every optimizer
    with pytest.raises(MLPError, match=r"^optimizer\.name='adagrad' is not one of: adam, adamw, ema_momentum, "):
        OptimizerConfig("adagrad").validate("optimizer")
    with pytest.raises(MLPError, match=r"^optimizer\.momentum=1\.0 is invalid: must be in \[0, 1\)$"):
        OptimizerConfig("momentum", momentum=1.0).validate("optimizer")


@pytest.mark.parametrize("shape", [(7,), (5, 3), (2 * BLOCK_ELEMENTS + 5,), (3, BLOCK_ELEMENTS + 1), (4000, 100)])
def test_row_blocks_cover_every_row_once_as_views_of_about_block_size(shape) -> None:
    a, b = np.zeros(shape), np.zeros(shape)
    blocks = list(row_blocks(a, b))
    row = a.size // len(a)
    for x, y in blocks:
        assert x.ndim == a.ndim and x.shape == y.shape
        assert x.size <= max(BLOCK_ELEMENTS, row)  # a block is one row at least
        x += 1  # views: the writes land in a
    assert (a == 1).all() and not b.any()
    assert sum(len(x) for x, _ in blocks) == len(a)
    if a.size > 2 * BLOCK_ELEMENTS and row < BLOCK_ELEMENTS:
        assert len(blocks) > 1


@pytest.mark.parametrize(
    ("name", "prescaled"),
    [(name, False) for name in sorted(OPTIMIZERS)] + [(name, True) for name in ("momentum", "nesterov", "sgd")],
)
def test_updating_block_by_block_equals_updating_whole_arrays(
    name: str, prescaled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A (1200, 300) matrix is three blocks; whole arrays (one block) must give bit-identical results.
    cfg = OptimizerConfig(name, momentum=0.9, weight_decay=0.1)
    results = []
    for block in (BLOCK_ELEMENTS, 10**9):
        monkeypatch.setattr(optimizers, "BLOCK_ELEMENTS", block)
        params = [np.ones((1200, 300), np.float32), np.ones(300, np.float32)]
        grads = [np.empty_like(p) for p in params]
        opt = make_optimizer(cfg, params, grads)
        draws = np.random.default_rng(3)
        for _ in range(3):
            for g in grads:
                g[...] = draws.standard_normal(g.shape, dtype=np.float32)
            opt.step_prescaled(-0.01 * 0.5) if prescaled else opt.step(0.01, 0.5)
        results.append([p.copy() for p in params])
        assert len(list(row_blocks(params[0]))) == (3 if block == BLOCK_ELEMENTS else 1)
    for blocked, whole in zip(*results, strict=True):
        np.testing.assert_array_equal(blocked, whole)
    assert not np.array_equal(results[0][0], np.ones((1200, 300), np.float32))
