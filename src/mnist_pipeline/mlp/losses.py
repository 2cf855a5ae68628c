"""Losses on logits ``(B, C)`` against one-hot targets ``(B, C)``.

Each loss has ``forward(logits, targets) -> float`` (mean over the batch) and
``backward() -> dL/dlogits``. Softmax + cross-entropy is fused and numerically
stable (max-shifted log-sum-exp); its gradient is ``(softmax - targets) / B``.
"""

from __future__ import annotations

import numpy as np

from mnist_pipeline.mlp.registry import Registry

LOSSES = Registry("loss")


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise ``log softmax`` via the max-shifted log-sum-exp (no overflow)."""
    shifted = logits - logits.max(axis=1, keepdims=True)  # (B, C), max entry 0
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for any finite logits."""
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function without overflow: ``0.5 * (1 + tanh(x / 2))``."""
    half = x.dtype.type(0.5)
    return half * (1 + np.tanh(half * x))


@LOSSES.register("cross_entropy")
class SoftmaxCrossEntropy:
    """Mean cross-entropy of ``softmax(logits)``, with optional label smoothing.

    With smoothing ``eps`` the targets become ``(1 - eps) * onehot + eps / C``.
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = label_smoothing

    def forward(self, logits: np.ndarray, targets: np.ndarray) -> float:
        if self.label_smoothing:
            t = logits.dtype.type
            targets = targets * t(1 - self.label_smoothing) + t(self.label_smoothing / targets.shape[1])
        logp = log_softmax(logits)  # (B, C)
        self._probs = np.exp(logp)
        self._targets = targets
        return float(-(targets * logp).sum(dtype=np.float64) / len(logits))

    def backward(self) -> np.ndarray:
        grad = self._probs - self._targets  # (B, C)
        grad /= grad.dtype.type(len(grad))
        return grad


@LOSSES.register("mse_softmax")
class SoftmaxMSE:
    """``mean_b 0.5 * ||softmax(z_b) - t_b||^2`` (the quadratic cost of some tutorials)."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = label_smoothing  # uniform interface; config rejects it > 0 for mse losses

    def forward(self, logits: np.ndarray, targets: np.ndarray) -> float:
        self._p = softmax(logits)
        self._d = self._p - targets  # (B, C)
        return float(0.5 * (self._d * self._d).sum(dtype=np.float64) / len(logits))

    def backward(self) -> np.ndarray:
        # Softmax Jacobian-vector product: p * (d - <p, d>), then / B
        d, p = self._d, self._p
        grad = p * (d - (p * d).sum(axis=1, keepdims=True))
        grad /= grad.dtype.type(len(grad))
        return grad


@LOSSES.register("mse_sigmoid")
class SigmoidMSE:
    """``mean_b 0.5 * ||sigmoid(z_b) - t_b||^2`` (Nielsen's network.py cost)."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = label_smoothing

    def forward(self, logits: np.ndarray, targets: np.ndarray) -> float:
        self._p = sigmoid(logits)
        self._d = self._p - targets
        return float(0.5 * (self._d * self._d).sum(dtype=np.float64) / len(logits))

    def backward(self) -> np.ndarray:
        grad = self._d * self._p * (1 - self._p)
        grad /= grad.dtype.type(len(grad))
        return grad


def make_loss(name: str, label_smoothing: float = 0.0):
    return LOSSES.get(name)(label_smoothing)
