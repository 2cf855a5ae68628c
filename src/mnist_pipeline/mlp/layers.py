"""Layers: :class:`Dense` and element-wise activations, each ``forward``/``backward``.

``forward(x, train)`` caches what ``backward(grad)`` needs; ``backward`` fills
``grads`` (same keys as ``params``) and returns the gradient w.r.t. the input.
"""

from __future__ import annotations

import numpy as np

from mnist_pipeline.mlp.initializers import INITIALIZERS
from mnist_pipeline.mlp.losses import sigmoid
from mnist_pipeline.mlp.registry import Registry

ACTIVATIONS = Registry("activation")


class Layer:
    """Base: no parameters."""

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class Dense(Layer):
    """Affine map ``Z = X @ W + b``; ``W: (in, out)``, ``b: (out,)``."""

    def __init__(self, fan_in: int, fan_out: int, init: str, rng: np.random.Generator, dtype=np.float32) -> None:
        super().__init__()
        self.params["W"] = INITIALIZERS.get(init)(fan_in, fan_out, rng, dtype)  # (in, out)
        self.params["b"] = np.zeros(fan_out, dtype=dtype)  # (out,)
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self._x: np.ndarray | None = None

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        self._x = x
        out = x @ self.params["W"]  # (B, out)
        out += self.params["b"]
        return out

    def backward(self, grad: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        # grad: (B, out) -> dW = X^T grad (in, out), db = sum over batch, dX = grad W^T (B, in)
        np.matmul(self._x.T, grad, out=self.grads["W"])
        np.sum(grad, axis=0, out=self.grads["b"])
        # The first layer's dX is a (B, 784) GEMM nobody uses: skip it when asked.
        return grad @ self.params["W"].T if input_grad else None


@ACTIVATIONS.register("identity")
class Identity(Layer):
    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        return x

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return grad


@ACTIVATIONS.register("relu")
class ReLU(Layer):
    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        self._out = np.maximum(x, 0, out=x)  # in place: Dense made a fresh array
        return self._out

    def backward(self, grad: np.ndarray) -> np.ndarray:
        grad *= self._out > 0
        return grad


@ACTIVATIONS.register("leaky_relu")
class LeakyReLU(Layer):
    slope = 0.01

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        self._pos = x > 0
        return np.where(self._pos, x, x * x.dtype.type(self.slope))

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return np.where(self._pos, grad, grad * grad.dtype.type(self.slope))


@ACTIVATIONS.register("sigmoid")
class Sigmoid(Layer):
    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        self._out = sigmoid(x)
        return self._out

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return grad * self._out * (1 - self._out)


@ACTIVATIONS.register("tanh")
class Tanh(Layer):
    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        self._out = np.tanh(x)
        return self._out

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return grad * (1 - self._out * self._out)


@ACTIVATIONS.register("gelu")
class GELU(Layer):
    """GELU, tanh approximation: ``0.5 x (1 + tanh(c (x + 0.044715 x^3)))``."""

    c = np.sqrt(2.0 / np.pi)

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        t = x.dtype.type
        self._x = x
        self._t = np.tanh(t(self.c) * (x + t(0.044715) * x**3))
        return t(0.5) * x * (1 + self._t)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        t = grad.dtype.type
        x, th = self._x, self._t
        dinner = t(self.c) * (1 + t(3 * 0.044715) * x * x)
        return grad * (t(0.5) * (1 + th) + t(0.5) * x * (1 - th * th) * dinner)


class Dropout(Layer):
    """Inverted dropout: in training, zero each unit with probability ``p`` and
    scale survivors by ``1 / (1 - p)`` so the expected activation is unchanged;
    identity at evaluation. Masks are drawn from the stage's ``rng``.
    """

    def __init__(self, p: float, rng: np.random.Generator) -> None:
        super().__init__()
        self.p, self.rng = p, rng
        self.mask: np.ndarray | None = None

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        if not train or self.p == 0:
            self.mask = None
            return x
        keep = x.dtype.type(1 - self.p)
        self.mask = self.rng.random(x.shape, dtype=x.dtype) < keep  # (B, H) bool
        return x * self.mask / keep

    def backward(self, grad: np.ndarray) -> np.ndarray:
        if self.mask is None:
            return grad
        return grad * self.mask / grad.dtype.type(1 - self.p)
