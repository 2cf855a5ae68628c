"""Initializers: each one's spread matches its formula on a large matrix; lecun_normal is exactly
``randn * sqrt(1 / fan_in)``; shapes, dtypes, zero biases, and the registry.

``fan_in != fan_out`` so that fan-in and Glorot (fan-in + fan-out) scalings cannot be confused.
Tolerances are five standard errors: the sample std of ``n`` normals has relative standard
error ``1 / sqrt(2n)``; a uniform(-a, a) has variance ``a^2 / 3`` and its sample std has relative
standard error ``sqrt(0.8 / (4n))`` (excess kurtosis -1.2).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mnist_pipeline.mlp.errors import MLPError
from mnist_pipeline.mlp.initializers import INITIALIZERS
from mnist_pipeline.mlp.layers import Dense

FAN_IN, FAN_OUT = 400, 900
N = FAN_IN * FAN_OUT

NORMAL_STD = {
    "he_normal": math.sqrt(2 / FAN_IN),  # 0.0707
    "glorot_normal": math.sqrt(2 / (FAN_IN + FAN_OUT)),  # 0.0392
    "lecun_normal": math.sqrt(1 / FAN_IN),  # 0.05
}
UNIFORM_LIMIT = {
    "he_uniform": math.sqrt(6 / FAN_IN),  # 0.1225
    "glorot_uniform": math.sqrt(6 / (FAN_IN + FAN_OUT)),  # 0.0679
}


def draw(name: str, dtype=np.float64, seed: int = 0) -> np.ndarray:
    return INITIALIZERS.get(name)(FAN_IN, FAN_OUT, np.random.default_rng(seed), dtype)


@pytest.mark.parametrize("name", sorted(NORMAL_STD))
def test_normal_initializers_have_the_formula_std(name: str) -> None:
    w = draw(name)
    std = NORMAL_STD[name]
    assert w.shape == (FAN_IN, FAN_OUT)
    assert abs(w.mean()) < 5 * std / math.sqrt(N)
    assert abs(w.std() / std - 1) < 5 / math.sqrt(2 * N)  # about 0.6 %
    assert np.abs(w).max() > 3 * std  # unbounded tails: not a uniform with the same std
    assert abs((np.abs(w) < std).mean() - 0.6827) < 0.005  # normal shape: 68 % within one std


@pytest.mark.parametrize("name", sorted(UNIFORM_LIMIT))
def test_uniform_initializers_have_the_formula_limit(name: str) -> None:
    w = draw(name)
    limit = UNIFORM_LIMIT[name]
    assert w.shape == (FAN_IN, FAN_OUT)
    assert np.abs(w).max() <= limit
    assert np.abs(w).max() > limit * (1 - 1e-3)  # the bound is reached, so it is the bound
    assert abs(w.mean()) < 5 * limit / math.sqrt(3 * N)
    assert abs(w.std() / (limit / math.sqrt(3)) - 1) < 5 * math.sqrt(0.2 / N)  # about 0.4 %
    # flat density: each tenth of [-a, a] holds a tenth of the entries
    counts, _ = np.histogram(w, bins=10, range=(-limit, limit))
    assert np.all(np.abs(counts / N - 0.1) < 5 * math.sqrt(0.09 / N))


def test_lecun_normal_is_randn_times_sqrt_one_over_fan_in() -> None:
    w = draw("lecun_normal", seed=7)
    expected = np.random.default_rng(7).standard_normal((FAN_IN, FAN_OUT)) * math.sqrt(1 / FAN_IN)
    assert np.array_equal(w, expected)  # bit for bit: the same draws, the same scaling


def test_zeros() -> None:
    w = draw("zeros", dtype=np.float32)
    assert w.shape == (FAN_IN, FAN_OUT) and w.dtype == np.float32 and not w.any()


@pytest.mark.parametrize("name", sorted(INITIALIZERS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_and_seed_determinism(name: str, dtype) -> None:
    a, b = draw(name, dtype, seed=3), draw(name, dtype, seed=3)
    assert a.dtype == dtype
    assert np.array_equal(a, b)
    if name != "zeros":
        assert not np.array_equal(a, draw(name, dtype, seed=4))


@pytest.mark.parametrize("name", sorted(INITIALIZERS))
def test_dense_uses_the_initializer_for_w_and_zeros_for_b(name: str) -> None:
    layer = Dense(FAN_IN, 5, name, np.random.default_rng(1), np.float32)
    expected = INITIALIZERS.get(name)(FAN_IN, 5, np.random.default_rng(1), np.float32)
    assert np.array_equal(layer.params["W"], expected)
    assert layer.params["b"].shape == (5,) and not layer.params["b"].any()
    assert layer.params["b"].dtype == np.float32


def test_registry_names_and_error() -> None:
    assert sorted(INITIALIZERS) == [
        "glorot_normal",
        "glorot_uniform",
        "he_normal",
        "he_uniform",
        "lecun_normal",
        "zeros",
    ]
    with pytest.raises(MLPError, match="unknown initializer 'xavier'; valid: glorot_normal, glorot_uniform"):
        INITIALIZERS.get("xavier")
