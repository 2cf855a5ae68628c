"""Pixels to network inputs, ``x = (pixels / 255 - mean) / std``: one definition for prepare and predict.

The same float32 operations in both, so an image gives predict bit for bit the vector it gave
the training pipeline.
"""

from __future__ import annotations

import numpy as np

NORMALIZATIONS = ("scale", "standardize")  # prepare.normalize: pixels/255, or that standardized


def normalize(pixels: np.ndarray, mean: float = 0.0, std: float = 1.0) -> np.ndarray:
    """``(N, rows, cols)`` pixels in 0..255 -> float32 ``(N, rows*cols)``, ``(pixels/255 - mean)/std``.

    With the defaults this is ``pixels / 255`` exactly (subtracting 0 and dividing by 1 round to
    the same float32 values).
    """
    x = pixels.reshape(len(pixels), -1).astype(np.float32) / np.float32(255)  # (N, D)
    x -= np.float32(mean)
    x /= np.float32(std)
    return x
