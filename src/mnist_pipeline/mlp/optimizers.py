"""Optimizers: update parameters in place from their gradients.

``step(lr)`` applies one update to every parameter, a block of rows at a time (:func:`row_blocks`);
``start_step`` then ``step_rows`` per parameter and rows does the same piece by piece (the trainer
updates each piece of a weight matrix as soon as its gradient is ready, on any thread; every
formula is element-wise, so the pieces give the bits of the whole);
per-parameter state (velocities, moments) lives in lists aligned with the parameters; sgd, momentum and ema_momentum
update in place through preallocated scratch, the others make temporaries. ``step(lr, l2)`` and
``step_prescaled(decay)`` both add the L2 gradient to weight matrices (``ndim >= 2``) only, never to
biases. Formulas:

- ``sgd``: ``w -= lr * g``
- ``momentum`` (classical): ``v = mu * v - lr * g; w += v``
- ``nesterov``: ``v = mu * v - lr * g; w += mu * v - lr * g``
- ``ema_momentum``: ``v = beta * v + (1 - beta) * g; w -= lr * v``
- ``rmsprop``: ``s = rho * s + (1 - rho) * g^2; w -= lr * g / (sqrt(s) + eps)``
- ``adam``: bias-corrected moments, ``w -= lr * m_hat / (sqrt(s_hat) + eps)``
- ``adamw``: ``w -= lr * weight_decay * w`` on weight matrices (decoupled), then adam

``sgd``, ``momentum`` and ``nesterov`` are linear in ``lr * g`` (``prescaled = True``): the trainer
multiplies the loss gradient by ``-lr`` before back-propagation, which scales every parameter's
gradient by ``-lr`` (back-propagation is linear in it) for the price of scaling a ``(B, C)`` array, and
then calls ``step_prescaled(decay)``, which saves a full pass over the parameters per step. There
the L2 penalty's gradient ``l2 * w`` comes in as ``decay = -lr * l2`` and is added inside the update,
using the spent gradient buffer as scratch (the gradient buffers hold garbage after
``step_prescaled``). ``step(lr, l2)`` takes plain gradients for every optimizer.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from mnist_pipeline.mlp.errors import check, check_choice
from mnist_pipeline.mlp.memory import zeros_in_one_buffer
from mnist_pipeline.mlp.registry import Registry

OPTIMIZERS = Registry("optimizer")


@dataclass(frozen=True)
class OptimizerConfig:
    """The optimizer's name (a key of :data:`OPTIMIZERS`) and hyper-parameters; each reads its own."""

    name: str
    momentum: float = 0.0  # momentum / nesterov: v = mu * v - lr * g
    beta: float = 0.9  # ema_momentum: v = beta * v + (1 - beta) * g
    rho: float = 0.9  # rmsprop: s = rho * s + (1 - rho) * g^2
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0  # adamw: decoupled, w -= lr * weight_decay * w

    def validate(self, key: str) -> None:
        """Raise :class:`~mnist_pipeline.mlp.errors.MLPError` naming ``key.field`` for any invalid value."""
        check_choice(f"{key}.name", self.name, OPTIMIZERS.names())
        check(f"{key}.momentum", 0 <= self.momentum < 1, "in [0, 1)", self.momentum)
        check(f"{key}.beta", 0 <= self.beta < 1, "in [0, 1)", self.beta)
        check(f"{key}.rho", 0 <= self.rho < 1, "in [0, 1)", self.rho)
        check(f"{key}.weight_decay", self.weight_decay >= 0, ">= 0", self.weight_decay)
        check(f"{key}.beta1", 0 <= self.beta1 < 1, "in [0, 1)", self.beta1)
        check(f"{key}.beta2", 0 <= self.beta2 < 1, "in [0, 1)", self.beta2)
        check(f"{key}.eps", self.eps > 0, "> 0", self.eps)


# Elements per block: in float32 a block's slices of a parameter, its gradient and 1-2 state arrays
# (512 KiB each) stay in L2 (2 MiB per core here) across an update's passes; float64 blocks take twice
# that and adam/rmsprop add temporaries, so they spill some. Wide net step 8.3 -> 7.1 ms; headline unchanged.
BLOCK_ELEMENTS = 131072


def row_blocks(*arrays: np.ndarray) -> Iterator[tuple[np.ndarray, ...]]:
    """Matching slices along the first axis of equally shaped arrays, about ``BLOCK_ELEMENTS`` each.

    An update is several passes (ufuncs) over its arrays; made block by block, each block's arrays
    are fetched from memory once and the later passes hit the cache. Slicing rows keeps ``ndim``.
    """
    n = len(arrays[0])
    if arrays[0].size <= BLOCK_ELEMENTS:  # one block: the arrays themselves, without slicing
        yield arrays
        return
    rows = max(1, BLOCK_ELEMENTS * n // arrays[0].size)
    for start in range(0, n, rows):
        yield tuple(a[start : start + rows] for a in arrays)


class Optimizer:
    """``update(p, g, *state, lr)`` / ``update_prescaled(p, d, *state, decay)`` update one parameter in
    place; ``state(i)`` gives parameter ``i``'s state arrays.
    """

    prescaled = False  # True: also has step_prescaled(), for gradients already multiplied by -lr

    def __init__(self, params: list[np.ndarray], grads: list[np.ndarray], cfg: OptimizerConfig) -> None:
        self.params, self.grads, self.cfg = params, grads, cfg
        self.t = 0
        self.l2_scratch: list[np.ndarray] = []  # l2 * w per parameter, made on the first step with l2

    def zeros(self) -> list[np.ndarray]:
        """One zeroed state array per parameter, side by side on huge pages (see :mod:`~mnist_pipeline.mlp.memory`)."""
        return zeros_in_one_buffer(self.params)

    def state(self, i: int) -> tuple[np.ndarray, ...]:
        return ()

    def start_step(self, l2: float = 0.0) -> None:
        """Begin one update: count it (adam's bias correction) and make the L2 scratch on first need.

        Then :meth:`step_rows` (or :meth:`step_rows_prescaled`) must cover every parameter once; they
        may run for different parameters or rows on several threads at once.
        """
        self.t += 1
        if l2 and not self.l2_scratch:
            self.l2_scratch = self.zeros()

    def step(self, lr: float, l2: float = 0.0) -> None:
        """One update from plain gradients; ``l2`` first adds ``l2 * w`` to the gradient of weight matrices."""
        self.start_step(l2)
        for i in range(len(self.params)):
            self.step_rows(i, slice(None), lr, l2)

    def step_rows(self, i: int, rows: slice, lr: float, l2: float = 0.0) -> None:
        """:meth:`step` for the rows ``rows`` of parameter ``i`` only (after :meth:`start_step`)."""
        p, g = self.params[i], self.grads[i]
        decayed = bool(l2) and p.ndim >= 2
        extra = (self.l2_scratch[i][rows],) if decayed else ()
        for pb, gb, *rest in row_blocks(p[rows], g[rows], *extra, *(s[rows] for s in self.state(i))):
            if decayed:
                gb += np.multiply(pb, p.dtype.type(l2), out=rest.pop(0))  # l2 * w, into its scratch
            self.update(pb, gb, *rest, p.dtype.type(lr))

    def update(self, p: np.ndarray, g: np.ndarray, *state_and_lr: Any) -> None:
        raise NotImplementedError

    def step_prescaled(self, decay: float = 0.0) -> None:
        """One update from gradients that hold ``-lr * g`` (only when ``prescaled``).

        ``decay = -lr * l2`` adds the L2 gradient of weight matrices: their step uses ``d + decay * w``.
        """
        if not self.prescaled:
            raise NotImplementedError(f"{type(self).__name__} takes plain gradients: call step(lr)")
        self.start_step()
        for i in range(len(self.params)):
            self.step_rows_prescaled(i, slice(None), decay)

    def step_rows_prescaled(self, i: int, rows: slice, decay: float = 0.0) -> None:
        """:meth:`step_prescaled` for the rows ``rows`` of parameter ``i`` only (after :meth:`start_step`)."""
        p = self.params[i]
        for blocks in row_blocks(p[rows], self.grads[i][rows], *(s[rows] for s in self.state(i))):
            self.update_prescaled(*blocks, p.dtype.type(decay if p.ndim >= 2 else 0))

    def update_prescaled(self, p: np.ndarray, d: np.ndarray, *state_and_decay: Any) -> None:
        raise NotImplementedError


@OPTIMIZERS.register("sgd")
class SGD(Optimizer):
    prescaled = True

    def __init__(self, params: list[np.ndarray], grads: list[np.ndarray], cfg: OptimizerConfig) -> None:
        super().__init__(params, grads, cfg)
        self.scratch = self.zeros()  # lr * g without a temporary per step

    def state(self, i: int) -> tuple[np.ndarray, ...]:
        return (self.scratch[i],)

    def update(self, p: np.ndarray, g: np.ndarray, scratch: np.ndarray, lr: np.floating[Any]) -> None:
        p -= np.multiply(g, lr, out=scratch)

    def update_prescaled(self, p: np.ndarray, d: np.ndarray, scratch: np.ndarray, decay: np.floating[Any]) -> None:
        if decay:
            p *= 1 + decay  # w + decay * w + d
        p += d


@OPTIMIZERS.register("momentum")
class Momentum(Optimizer):
    prescaled = True

    def __init__(self, params: list[np.ndarray], grads: list[np.ndarray], cfg: OptimizerConfig) -> None:
        super().__init__(params, grads, cfg)
        self.v = self.zeros()
        self.scratch = self.zeros()

    def state(self, i: int) -> tuple[np.ndarray, ...]:
        return (self.v[i], self.scratch[i])

    def update(self, p: np.ndarray, g: np.ndarray, v: np.ndarray, scratch: np.ndarray, lr: np.floating[Any]) -> None:
        v *= p.dtype.type(self.cfg.momentum)
        v -= np.multiply(g, lr, out=scratch)
        p += v

    def update_prescaled(
        self, p: np.ndarray, d: np.ndarray, v: np.ndarray, scratch: np.ndarray, decay: np.floating[Any]
    ) -> None:
        v *= p.dtype.type(self.cfg.momentum)
        v += d
        if decay:
            v += np.multiply(p, decay, out=d)  # d is spent: scratch for decay * w
        p += v


@OPTIMIZERS.register("nesterov")
class Nesterov(Momentum):
    def update(self, p: np.ndarray, g: np.ndarray, v: np.ndarray, scratch: np.ndarray, lr: np.floating[Any]) -> None:
        mu = p.dtype.type(self.cfg.momentum)
        v *= mu
        v -= np.multiply(g, lr, out=scratch)
        p += mu * v
        p -= scratch

    def update_prescaled(
        self, p: np.ndarray, d: np.ndarray, v: np.ndarray, scratch: np.ndarray, decay: np.floating[Any]
    ) -> None:
        mu = p.dtype.type(self.cfg.momentum)
        if decay:
            d += np.multiply(p, decay, out=scratch)
        v *= mu
        v += d
        np.multiply(v, mu, out=scratch)
        scratch += d
        p += scratch


@OPTIMIZERS.register("ema_momentum")
class EMAMomentum(Momentum):
    prescaled = False  # v averages raw gradients; lr applies after, so -lr cannot be folded in

    def update(self, p: np.ndarray, g: np.ndarray, v: np.ndarray, scratch: np.ndarray, lr: np.floating[Any]) -> None:
        beta = p.dtype.type(self.cfg.beta)
        v *= beta
        v += np.multiply(g, 1 - beta, out=scratch)
        p -= np.multiply(v, lr, out=scratch)


@OPTIMIZERS.register("rmsprop")
class RMSProp(Optimizer):
    def __init__(self, params: list[np.ndarray], grads: list[np.ndarray], cfg: OptimizerConfig) -> None:
        super().__init__(params, grads, cfg)
        self.s = self.zeros()

    def state(self, i: int) -> tuple[np.ndarray, ...]:
        return (self.s[i],)

    def update(self, p: np.ndarray, g: np.ndarray, s: np.ndarray, lr: np.floating[Any]) -> None:
        t = p.dtype.type
        s *= t(self.cfg.rho)
        s += t(1 - self.cfg.rho) * g * g
        p -= lr * g / (np.sqrt(s) + t(self.cfg.eps))


@OPTIMIZERS.register("adam")
class Adam(Optimizer):
    def __init__(self, params: list[np.ndarray], grads: list[np.ndarray], cfg: OptimizerConfig) -> None:
        super().__init__(params, grads, cfg)
        self.m, self.s = self.zeros(), self.zeros()

    def state(self, i: int) -> tuple[np.ndarray, ...]:
        return (self.m[i], self.s[i])

    def update(self, p: np.ndarray, g: np.ndarray, m: np.ndarray, s: np.ndarray, lr: np.floating[Any]) -> None:
        c, t = self.cfg, p.dtype.type
        m *= t(c.beta1)
        m += t(1 - c.beta1) * g
        s *= t(c.beta2)
        s += t(1 - c.beta2) * g * g
        m_hat = m / t(1 - c.beta1**self.t)
        s_hat = s / t(1 - c.beta2**self.t)
        p -= lr * m_hat / (np.sqrt(s_hat) + t(c.eps))


@OPTIMIZERS.register("adamw")
class AdamW(Adam):
    def update(self, p: np.ndarray, g: np.ndarray, m: np.ndarray, s: np.ndarray, lr: np.floating[Any]) -> None:
        if p.ndim >= 2:  # decay weight matrices, not biases
            p -= lr * p.dtype.type(self.cfg.weight_decay) * p
        super().update(p, g, m, s, lr)


def make_optimizer(cfg: OptimizerConfig, params: list[np.ndarray], grads: list[np.ndarray]) -> Optimizer:
    return OPTIMIZERS.get(cfg.name)(params, grads, cfg)
