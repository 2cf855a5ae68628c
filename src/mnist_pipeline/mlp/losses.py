"""Losses on logits: fused, numerically stable softmax + cross-entropy."""

from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise ``log softmax`` via the max-shifted log-sum-exp (no overflow)."""
    shifted = logits - logits.max(axis=1, keepdims=True)  # (B, C), max entry 0
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for any finite logits."""
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class SoftmaxCrossEntropy:
    """Mean cross-entropy of ``softmax(logits)`` against one-hot targets.

    ``forward`` returns the scalar loss; ``backward`` returns
    ``(softmax - onehot) / B``, the gradient with respect to the logits.
    """

    def forward(self, logits: np.ndarray, targets: np.ndarray) -> float:
        logp = log_softmax(logits)  # (B, C)
        self._probs = np.exp(logp)
        self._targets = targets
        return float(-(targets * logp).sum(dtype=np.float64) / len(logits))

    def backward(self) -> np.ndarray:
        grad = self._probs - self._targets  # (B, C)
        grad /= grad.dtype.type(len(grad))
        return grad
