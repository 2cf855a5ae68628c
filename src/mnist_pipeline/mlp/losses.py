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


class Loss:
    """``rows(logits, targets) -> (sum of the rows' losses, d sum / d logits)``, both for the rows given:
    a batch cut into row blocks gets its loss and gradient block by block. ``forward`` and ``backward``
    are the whole-batch mean and its gradient."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = label_smoothing  # cross_entropy only; the config rejects it > 0 for the others

    def rows(self, logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
        raise NotImplementedError

    def forward(self, logits: np.ndarray, targets: np.ndarray) -> float:
        total, self._grad = self.rows(logits, targets)
        return total / len(logits)

    def backward(self) -> np.ndarray:
        return self._grad / self._grad.dtype.type(len(self._grad))


@LOSSES.register("cross_entropy")
class SoftmaxCrossEntropy(Loss):
    """Mean cross-entropy of ``softmax(logits)``, with optional label smoothing.

    With smoothing ``eps`` the targets become ``(1 - eps) * onehot + eps / C``.
    """

    def rows(self, logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
        if self.label_smoothing:
            t = logits.dtype.type
            targets = targets * t(1 - self.label_smoothing) + t(self.label_smoothing / targets.shape[1])
        logp = log_softmax(logits)  # (B, C)
        grad = np.exp(logp)  # the probabilities
        grad -= targets
        return float(-(targets * logp).sum(dtype=np.float64)), grad


@LOSSES.register("mse_softmax")
class SoftmaxMSE(Loss):
    """``mean_b 0.5 * ||softmax(z_b) - t_b||^2`` (the quadratic cost of some tutorials)."""

    def rows(self, logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
        p = softmax(logits)
        d = p - targets  # (B, C)
        # Softmax Jacobian-vector product: p * (d - <p, d>)
        return float(0.5 * (d * d).sum(dtype=np.float64)), p * (d - (p * d).sum(axis=1, keepdims=True))


@LOSSES.register("mse_sigmoid")
class SigmoidMSE(Loss):
    """``mean_b 0.5 * ||sigmoid(z_b) - t_b||^2`` (Nielsen's network.py cost)."""

    def rows(self, logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
        p = sigmoid(logits)
        d = p - targets
        return float(0.5 * (d * d).sum(dtype=np.float64)), d * p * (1 - p)


def make_loss(name: str, label_smoothing: float = 0.0) -> Loss:
    return LOSSES.get(name)(label_smoothing)
