"""Weight initializers ``(fan_in, fan_out, rng, dtype) -> W``; biases start at zero."""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike

from mnist_pipeline.mlp.registry import Registry

INITIALIZERS = Registry("initializer")


def _normal(std: float, shape: tuple[int, int], rng: np.random.Generator, dtype: DTypeLike) -> np.ndarray:
    return (rng.standard_normal(shape) * std).astype(dtype)


def _uniform(limit: float, shape: tuple[int, int], rng: np.random.Generator, dtype: DTypeLike) -> np.ndarray:
    return rng.uniform(-limit, limit, shape).astype(dtype)


@INITIALIZERS.register("zeros")
def zeros(fan_in: int, fan_out: int, rng: np.random.Generator, dtype: DTypeLike) -> np.ndarray:
    return np.zeros((fan_in, fan_out), dtype=dtype)


@INITIALIZERS.register("he_normal")
def he_normal(fan_in: int, fan_out: int, rng: np.random.Generator, dtype: DTypeLike) -> np.ndarray:
    return _normal(np.sqrt(2.0 / fan_in), (fan_in, fan_out), rng, dtype)


@INITIALIZERS.register("he_uniform")
def he_uniform(fan_in: int, fan_out: int, rng: np.random.Generator, dtype: DTypeLike) -> np.ndarray:
    return _uniform(np.sqrt(6.0 / fan_in), (fan_in, fan_out), rng, dtype)


@INITIALIZERS.register("glorot_normal")
def glorot_normal(fan_in: int, fan_out: int, rng: np.random.Generator, dtype: DTypeLike) -> np.ndarray:
    return _normal(np.sqrt(2.0 / (fan_in + fan_out)), (fan_in, fan_out), rng, dtype)


@INITIALIZERS.register("glorot_uniform")
def glorot_uniform(fan_in: int, fan_out: int, rng: np.random.Generator, dtype: DTypeLike) -> np.ndarray:
    return _uniform(np.sqrt(6.0 / (fan_in + fan_out)), (fan_in, fan_out), rng, dtype)


@INITIALIZERS.register("lecun_normal")
def lecun_normal(fan_in: int, fan_out: int, rng: np.random.Generator, dtype: DTypeLike) -> np.ndarray:
    return _normal(np.sqrt(1.0 / fan_in), (fan_in, fan_out), rng, dtype)
