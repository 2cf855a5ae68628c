"""The MLP: Dense layers with an activation (and dropout) between them, computed in fixed row blocks.

A trained network is its :meth:`Network.architecture` (sizes, activation, dtype, dropout) plus its
:meth:`Network.state` (the weights by name): a new ``Network`` of that architecture takes the
weights with :meth:`Network.load_state`. Storing the two is the caller's business.

A batch is cut into ``chunks`` row blocks (:func:`~mnist_pipeline.mlp.parallel.split`): the forward
pass and the back-propagated deltas of a block depend on that block's rows only, so each block runs
through every layer as one piece of work. The weight gradients need the whole batch; they are cut
into row blocks of each weight matrix instead, and the optimizer may update each block as soon as its
gradient is ready (``backward(..., update=...)``). The pieces depend on the shapes and ``chunks``
alone, so :class:`~mnist_pipeline.mlp.parallel.Workers` with any number of threads compute the same
bits; ``chunks=1`` is the plain unsplit computation.

A training batch may also come with the input columns it leaves blank (``train_batch``'s ``columns``,
which the trainer takes from the data): the first layer's products then run over the others. Those
depend on the data alone, so they too compute the same bits on any number of threads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from mnist_pipeline.mlp.layers import ACTIVATIONS, Dense, Dropout
from mnist_pipeline.mlp.losses import Loss, SoftmaxCrossEntropy, softmax
from mnist_pipeline.mlp.memory import zeros_in_one_buffer
from mnist_pipeline.mlp.parallel import Workers, split

# Weight matrices smaller than this (elements) make one gradient piece: cutting them costs more
# in per-call overhead than the threads win back.
MIN_SPLIT_ELEMENTS = 32768
# A training batch whose input has at least this share of blank columns (zero in every row) leaves them out of
# the first layer's products (train_batch's ``columns``), if that layer has at least MIN_GATHER_WIDTH units.
# Gathering the other columns costs about what the shorter products save at 9-15% blank, or with a first
# layer of 64 units (docs/performance.md). MNIST batches of 128 images have about 33% of their pixels blank.
# A blank column's weights are left out even when not finite (0 * inf is NaN in the full product): a
# diverged W0 shows in the loss once its column is used, or in the validation pass (full products).
BLANK_SHARE = 0.2
MIN_GATHER_WIDTH = 128


class Network:
    """``sizes = [in, h1, ..., out]``: Dense + activation (+ dropout) per hidden layer, then Dense to logits.

    ``rng`` draws the initial weights and, when ``dropout > 0``, the dropout masks. ``chunks`` fixes
    the decomposition (and so the rounding); ``workers`` runs its pieces (one thread by default).
    """

    def __init__(
        self,
        sizes: list[int],
        activation: str,
        init: str,
        rng: np.random.Generator,
        dtype: DTypeLike = np.float32,
        dropout: float = 0.0,
        chunks: int = 1,
        workers: Workers | None = None,
    ) -> None:
        if chunks < 1:
            raise ValueError(f"chunks must be at least 1 (the row blocks of a batch), got {chunks}")
        self.sizes = list(sizes)
        self.activation = activation
        self.dtype = np.dtype(dtype)
        self.dropout = dropout
        self.chunks = chunks
        self.workers = workers or Workers(1)
        self.act = ACTIVATIONS.get(activation)()
        self.drop = Dropout(dropout, rng) if dropout > 0 else None
        self.dense = [
            Dense(fan_in, fan_out, init, rng, self.dtype) for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True)
        ]
        self._move_to_huge_pages()
        self.loss = SoftmaxCrossEntropy()
        # Gradient pieces: row blocks of the big weight matrices, largest first, then one piece with
        # the small matrices and every bias (their per-call overhead would cost more than threads win).
        # Each unit is (layer, rows of W) or (layer, None) for b.
        big = sorted(
            (
                (i, rows)
                for i, d in enumerate(self.dense)
                if d.params["W"].size >= MIN_SPLIT_ELEMENTS
                for rows in split(len(d.params["W"]), chunks)
            ),
            key=lambda piece: -self.dense[piece[0]].params["W"][piece[1]].size,
        )
        rest: list[tuple[int, slice | None]] = [
            (i, slice(None)) for i, d in enumerate(self.dense) if d.params["W"].size < MIN_SPLIT_ELEMENTS
        ]
        rest += [(i, None) for i in range(len(self.dense))]
        self._pieces: list[list[tuple[int, slice | None]]] = [[(i, rows)] for i, rows in big]
        self._pieces.append(rest)
        self._train_buffers: dict[int, dict[str, list[np.ndarray]]] = {}
        self._gathering: dict[str, list[np.ndarray]] = {}  # see _gather
        self._batch: dict[str, Any] = {}

    def _move_to_huge_pages(self) -> None:
        """Re-home every parameter and gradient in one huge-page buffer (see :mod:`~mnist_pipeline.mlp.memory`)."""
        stores = [d.params for d in self.dense] + [d.grads for d in self.dense]
        slots = [(store, k) for store in stores for k in store]
        views = zeros_in_one_buffer([store[k] for store, k in slots])
        for (store, k), view in zip(slots, views, strict=True):
            view[...] = store[k]
            store[k] = view

    def _buffers(self, batch: int, train: bool) -> dict[str, list[np.ndarray]]:
        """Per layer: ``z`` (pre-activation; the logits last), ``a`` (activation), ``d`` (after dropout), ``g``
        (d loss / d z of each hidden layer). Training reuses one set per batch size; inference gets fresh ones."""
        if train and batch in self._train_buffers:
            return self._train_buffers[batch]
        hidden = self.sizes[1:-1]
        new = [np.empty((batch, h), self.dtype) for h in hidden]
        bufs = {"z": new + [np.empty((batch, self.sizes[-1]), self.dtype)]}
        bufs["a"] = [np.empty_like(z) for z in new] if self.act.keeps_input else new
        bufs["d"] = [np.empty_like(z) for z in new] if train and self.drop else bufs["a"]
        bufs["g"] = [np.empty_like(z) for z in new] if train else []
        bufs["loss_grad"] = [np.empty((batch, self.sizes[-1]), self.dtype)] if train else []
        if train:
            self._train_buffers[batch] = bufs
        return bufs

    def _start(self, x: np.ndarray, train: bool) -> tuple[dict[str, list[np.ndarray]], list[np.ndarray], list[slice]]:
        """Buffers, dropout masks (drawn here, in this thread, in layer order) and row blocks of a pass over ``x``."""
        bufs = self._buffers(len(x), train)
        masks = [self.drop.mask(a.shape, self.dtype) for a in bufs["a"]] if train and self.drop else []
        blocks = split(len(x), self.chunks)
        if train:
            self._batch = {"x": x, "bufs": bufs, "masks": masks, "blocks": blocks}
        return bufs, masks, blocks

    def _forward_block(
        self,
        x: np.ndarray,
        bufs: dict[str, list[np.ndarray]],
        masks: list[np.ndarray],
        rows: slice,
        gathered: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """The logits of the rows ``rows`` of ``x``, every layer's arrays kept in ``bufs``.

        ``gathered = (cols, xs, ws)``: the first product takes only the input columns ``cols``, gathered from
        ``x[rows]`` into ``xs[rows]``, against their rows ``ws`` of ``W0``."""
        h, drop = x[rows], self.drop if masks else None
        w = None
        if gathered is not None:
            cols, xs, w = gathered
            h = np.take(h, cols, axis=1, mode="clip", out=xs[rows])  # (b, k)
        z = self.dense[0].forward(h, out=bufs["z"][0][rows], w=w)  # (b, h1), or the logits
        for i, dense in enumerate(self.dense[1:], start=1):
            a = bufs["a"][i - 1]
            h = self.act.forward(z, out=z if a is bufs["z"][i - 1] else a[rows])
            if drop is not None:
                h = drop.forward(h, masks[i - 1][rows], out=bufs["d"][i - 1][rows])
            z = dense.forward(h, out=bufs["z"][i][rows])  # (b, out)
        return z  # (b, classes)

    def _backward_block(self, g: np.ndarray, rows: slice, dx: np.ndarray | None) -> None:
        """Back-propagate ``g`` (d loss / d logits of the rows ``rows``) to every hidden layer's ``z``
        (into the pass's ``g`` buffers) and, if ``dx`` is given, to the input (into ``dx[rows]``)."""
        bufs, masks = self._batch["bufs"], self._batch["masks"]
        drop = self.drop if masks else None
        for i in range(len(self.dense) - 1, 0, -1):
            g = self.dense[i].input_grad(g, out=bufs["g"][i - 1][rows])
            if drop is not None:
                g = drop.backward(g, masks[i - 1][rows])
            g = self.act.backward(g, bufs["z"][i - 1][rows], bufs["a"][i - 1][rows])  # in place
        if dx is not None:
            self.dense[0].input_grad(g, out=dx[rows])

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """``(B, in)`` -> logits ``(B, out)``. In training the logits are a buffer that the next training
        pass of the same batch size overwrites, and the pass is kept for :meth:`backward`."""
        bufs, masks, blocks = self._start(x, train)
        self.workers.run(lambda k: self._forward_block(x, bufs, masks, blocks[k]), len(blocks))
        return bufs["z"][-1]

    def backward(
        self, grad: np.ndarray, input_grad: bool = False, update: Callable[[int, slice], None] | None = None
    ) -> np.ndarray | None:
        """Back-propagate ``grad`` (d loss / d logits, ``(B, out)``) through the last training :meth:`forward`,
        filling every layer's grads (see :meth:`gradients` for ``update``).

        Returns d loss / d input when ``input_grad`` (otherwise that product is skipped).
        """
        if not self._batch:
            raise RuntimeError("backward needs a training pass first: forward(x, train=True)")
        blocks = self._batch["blocks"]
        dx = np.empty_like(self._batch["x"]) if input_grad else None
        self.workers.run(lambda k: self._backward_block(grad[blocks[k]], blocks[k], dx), len(blocks))
        self._batch["grad"] = grad
        self.gradients(update)
        return dx

    def train_batch(
        self,
        x: np.ndarray,
        targets: np.ndarray,
        loss: Loss,
        scale: float | None = None,
        prepare: Callable[[slice], None] | None = None,
        update: Callable[[int, slice], None] | None = None,
        columns: np.ndarray | None = None,
    ) -> tuple[float, np.ndarray]:
        """Forward, loss and back-propagation of one training batch, each row block in one piece of work.

        ``prepare(rows)``, if given, first fills those rows of ``x`` and ``targets`` (making the batch
        in parallel too). The loss gradient (of the batch mean) is multiplied by ``scale`` if given.
        With ``update`` the gradients follow in the same hand-off to the workers, calling ``update`` per
        piece as :meth:`gradients` does; without it, call :meth:`gradients` next. Returns the batch's
        mean loss and its logits (a buffer, valid until the next pass).

        ``columns`` (one bool per input column), if given, promises that ``x`` is zero outside the columns
        it marks, in every row (after ``prepare``). With at least :data:`BLANK_SHARE` of them blank (and
        :attr:`skips_blank_columns`), the first layer's forward products and weight gradient run over the
        marked columns only: the blank ones add nothing to the sums, and their rows of ``d loss / d W0``
        are zero. The bits then depend on ``columns`` too, which the data fixes.
        """
        bufs, masks, blocks = self._start(x, train=True)
        gathered = self._batch["gathered"] = self._gather(x, columns, bufs)
        grad = bufs["loss_grad"][0]  # (B, out)
        totals = [0.0] * len(blocks)
        n, t = len(x), self.dtype.type
        batch = t(n)
        factor = None if scale is None else t(scale)  # type: ignore[call-overload]  # a float dtype's scalar, never void

        def block(k: int) -> None:
            rows = blocks[k]
            if prepare is not None:
                prepare(rows)
            totals[k], g = loss.rows(self._forward_block(x, bufs, masks, rows, gathered), targets[rows])
            g /= batch
            if factor is not None:
                g *= factor
            grad[rows] = g
            self._backward_block(grad[rows], rows, None)

        then = None if update is None else (self._gradient_piece(update, grad), len(self._pieces))
        self.workers.run(block, len(blocks), then)
        self._batch["grad"] = grad
        return sum(totals) / n, bufs["z"][-1]

    def _gather(
        self, x: np.ndarray, columns: np.ndarray | None, bufs: dict[str, list[np.ndarray]]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """``(cols, xs, ws)`` for the batch ``x`` with non-blank ``columns``: the column indices, the buffer
        for their values (B, k) and their rows of ``W0`` (k, h1), gathered here. None for the plain products:
        no columns, fewer than :data:`BLANK_SHARE` blank, a first layer under :data:`MIN_GATHER_WIDTH` units,
        or ``x`` not of the network's dtype (the plain product then computes in the wider of the two)."""
        first, width = self.sizes[:2]
        if columns is None or not self.skips_blank_columns or x.dtype != self.dtype:
            return None
        if columns.dtype != bool or columns.shape != (first,) or x.shape[1:] != (first,):
            raise ValueError(
                f"columns must be one bool per input column: {first} for x of shape (B, {first}), "
                f"got {columns.dtype} {columns.shape} for x of shape {x.shape}"
            )
        cols = np.flatnonzero(columns)
        if first - len(cols) < BLANK_SHARE * first:
            return None
        if not self._gathering:  # W0's rows of the columns; per gradient piece, its rows of d loss / d W0
            parts = [
                sum(len(range(first)[r]) + 1 for i, r in piece if i == 0 and r is not None) for piece in self._pieces
            ]
            self._gathering = {"ws": [np.empty(first * width, self.dtype)]}
            self._gathering["parts"] = [np.empty(m * width, self.dtype) for m in parts]
        if "xs" not in bufs:  # the batch's values in the columns
            bufs["xs"] = [np.empty(len(x) * first, self.dtype)]
        k, w = len(cols), self.dense[0].params["W"]
        ws = np.take(w, cols, axis=0, mode="clip", out=self._gathering["ws"][0][: k * width].reshape(k, width))
        return cols, bufs["xs"][0][: len(x) * k].reshape(len(x), k), ws

    @property
    def skips_blank_columns(self) -> bool:
        """Whether :meth:`train_batch` uses ``columns``: its first layer has :data:`MIN_GATHER_WIDTH` units or more."""
        return self.sizes[1] >= MIN_GATHER_WIDTH

    def gradients(self, update: Callable[[int, slice], None] | None = None) -> None:
        """Every parameter's gradient from the last back-propagated pass, in pieces (rows of a weight
        matrix, or a bias) on the workers' threads.

        ``update(i, rows)``, if given, is called once per piece as soon as it is ready, ``i`` indexing
        :meth:`parameters` and ``rows`` the rows of that parameter; the pieces cover every parameter
        once, and may run on several threads at once.
        """
        if "grad" not in self._batch:
            raise RuntimeError("gradients needs a back-propagated pass first: train_batch(...) or backward(...)")
        self.workers.run(self._gradient_piece(update, self._batch["grad"]), len(self._pieces))

    def _gradient_piece(self, update: Callable[[int, slice], None] | None, grad: np.ndarray) -> Callable[[int], None]:
        """Piece ``k`` of the parameter gradients of the last pass, whose loss gradient is ``grad`` (B, out)
        (see :meth:`gradients`), ``update`` after each part."""
        bufs, gathered = self._batch["bufs"], self._batch.get("gathered")
        deltas = [*bufs["g"], grad]  # d loss / d z per layer
        inputs = [self._batch["x"], *bufs["d"]]  # what each Dense layer saw
        cols = None
        if gathered is not None:
            cols, inputs[0], _ = gathered  # the input's non-blank columns

        def piece(k: int) -> None:
            for i, rows in self._pieces[k]:
                if rows is None:
                    self.dense[i].bias_grad(deltas[i])
                elif i == 0 and cols is not None:
                    self.dense[0].weight_grad(inputs[0], deltas[0], rows, cols, self._gathering["parts"][k])
                else:
                    self.dense[i].weight_grad(inputs[i], deltas[i], rows)
                if update is not None:
                    update(2 * i + (rows is None), rows or slice(None))

        return piece

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
