"""The MLP: a stack of Dense and activation layers.

A trained network is its :meth:`Network.architecture` (sizes, activation, dtype, dropout) plus its
:meth:`Network.state` (the weights by name): a new ``Network`` of that architecture takes the
weights with :meth:`Network.load_state`. Storing the two is the caller's business.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mnist_pipeline.mlp.layers import ACTIVATIONS, Dense, Dropout, Layer
from mnist_pipeline.mlp.losses import SoftmaxCrossEntropy, softmax
from mnist_pipeline.mlp.memory import zeros_in_one_buffer


class Network:
    """``sizes = [in, h1, ..., out]``: Dense + activation (+ dropout) per hidden layer, then Dense to logits.

    ``rng`` draws the initial weights and, when ``dropout > 0``, the dropout masks.
    """

    def __init__(
        self,
        sizes: list[int],
        activation: str,
        init: str,
        rng: np.random.Generator,
        dtype=np.float32,
        dropout: float = 0.0,
    ) -> None:
        self.sizes = list(sizes)
        self.activation = activation
        self.dropout = dropout
        self.dtype = np.dtype(dtype)
        act = ACTIVATIONS.get(activation)
        self.layers: list[Layer] = []
        self.dense: list[Dense] = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layer = Dense(fan_in, fan_out, init, rng, self.dtype)
            self.layers.append(layer)
            self.dense.append(layer)
            if i < len(sizes) - 2:
                self.layers.append(act())
                if dropout > 0:
                    self.layers.append(Dropout(dropout, rng))
        self._move_to_huge_pages()
        self.loss = SoftmaxCrossEntropy()

    def _move_to_huge_pages(self) -> None:
        """Re-home every parameter and gradient in one huge-page buffer (see :mod:`~mnist_pipeline.mlp.memory`)."""
        stores = [d.params for d in self.dense] + [d.grads for d in self.dense]
        slots = [(store, k) for store in stores for k in store]
        views = zeros_in_one_buffer([store[k] for store, k in slots])
        for (store, k), view in zip(slots, views, strict=True):
            view[...] = store[k]
            store[k] = view

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """``(B, in)`` -> logits ``(B, out)``."""
        for layer in self.layers:
            x = layer.forward(x, train)
        return x

    def backward(self, grad: np.ndarray, input_grad: bool = False) -> np.ndarray | None:
        """Back-propagate the gradient w.r.t. the logits, filling every layer's grads.

        Returns d loss / d input when ``input_grad`` (otherwise that GEMM is skipped).
        """
        for layer in reversed(self.layers[1:]):
            grad = layer.backward(grad)
        return self.layers[0].backward(grad, input_grad=input_grad)

    def parameters(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """``(name, param, grad)`` for every parameter, in layer order."""
        return [(f"{k}{i}", d.params[k], d.grads[k]) for i, d in enumerate(self.dense) for k in ("W", "b")]

    def predict_proba(self, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """Class probabilities ``(N, out)``, evaluated in batches (inference mode)."""
        out = [
            softmax(self.forward(x[i : i + batch_size].astype(self.dtype, copy=False)))
            for i in range(0, len(x), batch_size)
        ]
        return np.concatenate(out) if out else np.zeros((0, self.sizes[-1]), self.dtype)

    def architecture(self) -> dict[str, Any]:
        """What shapes the network: ``sizes``, ``activation``, ``dtype`` (its name) and ``dropout``."""
        return {
            "sizes": list(self.sizes),
            "activation": self.activation,
            "dtype": self.dtype.name,
            "dropout": self.dropout,
        }

    def state(self) -> dict[str, np.ndarray]:
        """A copy of every parameter by name (``W0, b0, W1, b1, ...``)."""
        return {name: p.copy() for name, p, _ in self.parameters()}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Copy ``state`` (as :meth:`state` returns it) into the parameters."""
        for name, p, _ in self.parameters():
            p[...] = state[name]
