"""The MLP: a stack of Dense and activation layers, with save/load to ``.npz``.

The saved model is self-contained: weights ``W0, b0, W1, b1, ...`` plus JSON
``meta`` (layer sizes, activation, normalization, class names) so that
``predict`` needs nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mnist_pipeline.errors import DataError
from mnist_pipeline.io import load_npz, npz_meta, save_npz
from mnist_pipeline.mlp.layers import ACTIVATIONS, Dense, Dropout, Layer
from mnist_pipeline.mlp.losses import SoftmaxCrossEntropy, softmax
from mnist_pipeline.mlp.memory import zeros_like


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
        views = zeros_like([store[k] for store, k in slots])
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

    def state(self) -> dict[str, np.ndarray]:
        return {name: p.copy() for name, p, _ in self.parameters()}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        for name, p, _ in self.parameters():
            p[...] = state[name]

    def save(self, path: str | Path, meta: dict[str, Any]) -> None:
        arch = {"sizes": self.sizes, "activation": self.activation, "dtype": self.dtype.name, "dropout": self.dropout}
        meta = {**meta, **arch}
        save_npz(path, meta, **self.state())

    @classmethod
    def load(cls, path: str | Path) -> tuple[Network, dict[str, Any]]:
        """Load a saved model, checking every array against the metadata's shapes."""
        arrays = load_npz(path, ["meta"])
        meta = npz_meta(arrays, path)
        try:
            sizes, activation, dtype = list(meta["sizes"]), meta["activation"], meta["dtype"]
        except (KeyError, TypeError) as exc:
            raise DataError(f"{path}: model metadata lacks {exc}; retrain with `dvc repro train`") from exc
        if len(sizes) < 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes):
            raise DataError(f"{path}: metadata sizes {sizes} must be at least two positive integers")
        if activation not in ACTIVATIONS:
            raise DataError(f"{path}: unknown activation {activation!r}; valid: {', '.join(sorted(ACTIVATIONS))}")
        if dtype not in ("float32", "float64"):
            raise DataError(f"{path}: unsupported dtype {dtype!r}; valid: float32, float64")
        net = cls(sizes, activation, "zeros", np.random.default_rng(0), dtype)
        for name, p, _ in net.parameters():
            if name not in arrays:
                raise DataError(f"{path}: missing array {name} for layer sizes {sizes}")
            if arrays[name].shape != p.shape:
                raise DataError(f"{path}: {name} has shape {arrays[name].shape}, metadata sizes {sizes} need {p.shape}")
        net.load_state(arrays)
        return net, meta
