"""Training-time data augmentation: random translations, vectorized."""

from __future__ import annotations

import numpy as np


def random_shift(x: np.ndarray, shape: tuple[int, int], k: int, rng: np.random.Generator) -> np.ndarray:
    """Translate each flattened image by independent integer offsets in ``[-k, k]``.

    Pixels shifted in from outside are the image's background: the minimum of
    ``x`` (0 for ``scale``, negative for ``standardize``). ``x`` is ``(N, H*W)``;
    returns a new ``(N, H*W)`` array of the same dtype.
    """
    if k == 0:
        return x
    n, (h, w) = len(x), shape
    background = x.min() if x.size else 0
    padded = np.full((n, h + 2 * k, w + 2 * k), background, dtype=x.dtype)  # (N, H+2k, W+2k)
    padded[:, k : k + h, k : k + w] = x.reshape(n, h, w)
    dy = rng.integers(-k, k + 1, size=n)  # (N,)
    dx = rng.integers(-k, k + 1, size=n)
    rows = (k - dy)[:, None] + np.arange(h)  # (N, H): source row for each output row
    cols = (k - dx)[:, None] + np.arange(w)  # (N, W)
    out = padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]  # (N, H, W)
    return out.reshape(n, h * w)
