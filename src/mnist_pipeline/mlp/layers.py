"""Layers: :class:`Dense`, element-wise activations and :class:`Dropout`, without per-call state.

The :class:`~mnist_pipeline.mlp.network.Network` keeps every intermediate array and computes a batch
in row blocks on several threads at once, so a layer holds no per-call state (ReLU keeps constant
zeros, nothing else): each method takes what it needs and writes into ``out`` (a block of the
network's buffer) where it can. An activation's
``forward(z, out)`` returns ``f(z)``; its ``backward(grad, z, a)`` turns ``d loss / d a`` into
``d loss / d z`` in place, from the pre-activation ``z`` and the output ``a``. ``out`` may be ``z``
itself unless the activation sets ``keeps_input`` (its backward reads ``z``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from mnist_pipeline.mlp.initializers import INITIALIZERS
from mnist_pipeline.mlp.losses import sigmoid
from mnist_pipeline.mlp.registry import Registry

ACTIVATIONS = Registry("activation")


class Dense:
    """Affine map ``Z = X @ W + b``; ``W: (in, out)``, ``b: (out,)``; gradients in ``grads`` (same keys)."""

    def __init__(
        self, fan_in: int, fan_out: int, init: str, rng: np.random.Generator, dtype: DTypeLike = np.float32
    ) -> None:
        self.params = {
            "W": INITIALIZERS.get(init)(fan_in, fan_out, rng, dtype),  # (in, out)
            "b": np.zeros(fan_out, dtype=dtype),  # (out,)
        }
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    def forward(self, x: np.ndarray, out: np.ndarray | None = None, w: np.ndarray | None = None) -> np.ndarray:
        """``x @ W + b`` for ``x: (B, in)``, into ``out`` (B, out) if given.

        ``w``: the rows of ``W`` that match the columns of ``x``, when ``x`` holds only some input columns
        (see :meth:`Network.train_batch`'s ``columns``; the others being zero, their terms are left out of the sums).
        """
        z = np.matmul(x, self.params["W"] if w is None else w, out=out)  # (B, out)
        z += self.params["b"]
        return z

    def input_grad(self, grad: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``d loss / d x = grad @ W^T`` (B, in) from ``grad = d loss / d Z`` (B, out)."""
        return np.matmul(grad, self.params["W"].T, out=out)

    def weight_grad(
        self,
        x: np.ndarray,
        grad: np.ndarray,
        rows: slice = slice(None),
        cols: np.ndarray | None = None,
        scratch: np.ndarray | None = None,
    ) -> None:
        """``grads["W"][rows] = x[:, rows]^T @ grad``: rows of ``d loss / d W`` from the whole batch.

        With ``cols`` (sorted input columns), ``x`` holds only those columns of the input, the others being
        zero: the rows of ``rows`` in ``cols`` come from their columns, the rest are zero. ``scratch``: flat,
        room for ``(rows in cols + 1) * out_features`` elements.
        """
        gw = self.grads["W"]
        if cols is None:
            np.matmul(x[:, rows].T, grad, out=gw[rows])
            return
        if scratch is None:
            raise ValueError("weight_grad over some columns needs scratch")
        start, stop, _ = rows.indices(len(gw))
        first, last = np.searchsorted(cols, (start, stop))  # x[:, first:last] holds the columns in rows
        m, width = last - first, gw.shape[1]
        part = scratch[: (m + 1) * width].reshape(m + 1, width)  # (m + 1, out): a zero row last
        np.matmul(x[:, first:last].T, grad, out=part[:m])
        part[m] = 0
        where = np.full(stop - start, m)  # each row's row of part
        where[cols[first:last] - start] = np.arange(m)
        np.take(part, where, axis=0, mode="clip", out=gw[start:stop])

    def bias_grad(self, grad: np.ndarray) -> None:
        """``grads["b"] = grad`` summed over the batch."""
        np.sum(grad, axis=0, out=self.grads["b"])


class Activation:
    """``f`` applied element-wise; subclasses define ``forward`` and ``backward``."""

    keeps_input = False  # True: backward reads z, so forward must not overwrite it

    def forward(self, z: np.ndarray, out: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        raise NotImplementedError


@ACTIVATIONS.register("identity")
class Identity(Activation):
    def forward(self, z: np.ndarray, out: np.ndarray) -> np.ndarray:
        if out is not z:
            np.copyto(out, z)
        return out

    def backward(self, grad: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        return grad


@ACTIVATIONS.register("relu")
class ReLU(Activation):
    """``max(z, 0)``, against an array of zeros: numpy's loop for two contiguous arrays runs 3-5x faster
    than the one for an array and a scalar, and gives the same bits (every float32 checked, docs/performance.md).

    The zeros are one read-only array per row width and dtype, as tall as the tallest ``z`` seen; a shorter
    ``z`` takes its first rows (still contiguous).
    """

    def __init__(self) -> None:
        self._zeros: dict[tuple[tuple[int, ...], np.dtype[Any]], np.ndarray] = {}

    def forward(self, z: np.ndarray, out: np.ndarray) -> np.ndarray:
        key = (z.shape[1:], z.dtype)
        zeros = self._zeros.get(key)
        if zeros is None or len(zeros) < len(z):  # two threads may both make one: equal arrays, either is kept
            zeros = np.zeros(z.shape, z.dtype)
            zeros.flags.writeable = False
            self._zeros[key] = zeros
        return np.maximum(z, zeros[: len(z)], out=out)

    def backward(self, grad: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        grad *= a > 0
        return grad


@ACTIVATIONS.register("leaky_relu")
class LeakyReLU(Activation):
    slope = 0.01

    def forward(self, z: np.ndarray, out: np.ndarray) -> np.ndarray:
        negative = ~(z > 0)  # NaN too, as np.where(z > 0, z, slope * z) treats it
        if out is not z:
            np.copyto(out, z)
        return np.multiply(out, out.dtype.type(self.slope), out=out, where=negative)

    def backward(self, grad: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        # slope > 0, so a > 0 exactly where z > 0
        return np.multiply(grad, grad.dtype.type(self.slope), out=grad, where=~(a > 0))


@ACTIVATIONS.register("sigmoid")
class Sigmoid(Activation):
    def forward(self, z: np.ndarray, out: np.ndarray) -> np.ndarray:
        np.copyto(out, sigmoid(z))
        return out

    def backward(self, grad: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        grad *= a
        grad *= 1 - a
        return grad


@ACTIVATIONS.register("tanh")
class Tanh(Activation):
    def forward(self, z: np.ndarray, out: np.ndarray) -> np.ndarray:
        return np.tanh(z, out=out)

    def backward(self, grad: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        grad *= 1 - a * a
        return grad


@ACTIVATIONS.register("gelu")
class GELU(Activation):
    """GELU, tanh approximation: ``0.5 z (1 + tanh(c (z + 0.044715 z^3)))``."""

    c = np.sqrt(2.0 / np.pi)
    keeps_input = True

    def _tanh(self, z: np.ndarray) -> np.ndarray:
        t = z.dtype.type
        return np.tanh(t(self.c) * (z + t(0.044715) * z**3))

    def forward(self, z: np.ndarray, out: np.ndarray) -> np.ndarray:
        np.multiply(z.dtype.type(0.5), z, out=out)
        out *= 1 + self._tanh(z)
        return out

    def backward(self, grad: np.ndarray, z: np.ndarray, a: np.ndarray) -> np.ndarray:
        t = grad.dtype.type
        th = self._tanh(z)  # recomputed: cheaper than a (B, H) buffer per layer
        dinner = t(self.c) * (1 + t(3 * 0.044715) * z * z)
        grad *= t(0.5) * (1 + th) + t(0.5) * z * (1 - th * th) * dinner
        return grad


class Dropout:
    """Inverted dropout: in training, zero each unit with probability ``p`` and scale survivors by
    ``1 / (1 - p)`` so the expected activation is unchanged; identity at evaluation.

    :meth:`mask` draws a batch's mask from ``rng`` (the caller's thread, in layer order);
    :meth:`forward` and :meth:`backward` apply it to any block of rows.
    """

    def __init__(self, p: float, rng: np.random.Generator) -> None:
        self.p, self.rng = p, rng

    def mask(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A fresh keep-mask ``(B, H)`` of booleans, each True with probability ``1 - p`` (``dtype``: float32
        or float64, the draws' precision)."""
        kind = np.dtype(dtype)
        return self.rng.random(shape, dtype=kind) < kind.type(1 - self.p)

    def forward(self, x: np.ndarray, mask: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        out = np.multiply(x, mask, out=out)
        out /= x.dtype.type(1 - self.p)
        return out

    def backward(self, grad: np.ndarray, mask: np.ndarray) -> np.ndarray:
        grad *= mask
        grad /= grad.dtype.type(1 - self.p)
        return grad
