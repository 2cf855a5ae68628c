"""Finite-difference gradient checks: central differences and the relative error (float64)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

H = 1e-6  # step of the central differences


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """``||a - b|| / (||a|| + ||b||)``: 0 when equal (both zero included), ~1 when unrelated."""
    denom = np.linalg.norm(a) + np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / denom) if denom else 0.0


def numeric_grad(f: Callable[[], float], array: np.ndarray, h: float = H) -> np.ndarray:
    """Central differences of scalar ``f()`` w.r.t. every entry of ``array`` (perturbed in place, restored)."""
    grad = np.zeros_like(array, dtype=np.float64)
    for i in np.ndindex(array.shape):
        saved = array[i]
        array[i] = saved + h
        plus = f()
        array[i] = saved - h
        minus = f()
        array[i] = saved
        grad[i] = (plus - minus) / (2 * h)
    return grad
