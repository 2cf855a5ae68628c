"""Optimizers: update ``layer.params`` in place from ``layer.grads``.

Each optimizer's ``step(lr)`` applies one update to every parameter it was
given; state (velocities, moments) lives in dicts keyed like the parameters.
"""

from __future__ import annotations

import numpy as np

from mnist_pipeline.config import OptimizerConfig
from mnist_pipeline.mlp.registry import Registry

OPTIMIZERS = Registry("optimizer")


class Optimizer:
    def __init__(self, params: list[np.ndarray], grads: list[np.ndarray], cfg: OptimizerConfig) -> None:
        self.params, self.grads, self.cfg = params, grads, cfg
        self.t = 0

    def step(self, lr: float) -> None:
        self.t += 1
        for i, (p, g) in enumerate(zip(self.params, self.grads, strict=True)):
            self.update(i, p, g, p.dtype.type(lr))

    def update(self, i: int, p: np.ndarray, g: np.ndarray, lr: np.floating) -> None:
        raise NotImplementedError


@OPTIMIZERS.register("sgd")
class SGD(Optimizer):
    """``w -= lr * g``."""

    def update(self, i, p, g, lr):
        p -= lr * g


@OPTIMIZERS.register("momentum")
class Momentum(Optimizer):
    """Classical momentum: ``v = mu * v - lr * g; w += v``."""

    def __init__(self, params, grads, cfg):
        super().__init__(params, grads, cfg)
        self.v = [np.zeros_like(p) for p in params]

    def update(self, i, p, g, lr):
        v = self.v[i]
        v *= p.dtype.type(self.cfg.momentum)
        v -= lr * g
        p += v


@OPTIMIZERS.register("nesterov")
class Nesterov(Momentum):
    """Nesterov momentum: ``v = mu * v - lr * g; w += mu * v - lr * g``."""

    def update(self, i, p, g, lr):
        mu = p.dtype.type(self.cfg.momentum)
        v = self.v[i]
        v *= mu
        v -= lr * g
        p += mu * v - lr * g


@OPTIMIZERS.register("adam")
class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction."""

    def __init__(self, params, grads, cfg):
        super().__init__(params, grads, cfg)
        self.m = [np.zeros_like(p) for p in params]
        self.s = [np.zeros_like(p) for p in params]

    def update(self, i, p, g, lr):
        c, t = self.cfg, p.dtype.type
        m, s = self.m[i], self.s[i]
        m *= t(c.beta1)
        m += t(1 - c.beta1) * g
        s *= t(c.beta2)
        s += t(1 - c.beta2) * g * g
        step = t(lr / (1 - c.beta1**self.t))
        denom = np.sqrt(s / t(1 - c.beta2**self.t))
        denom += t(c.eps)
        p -= step * m / denom


def make_optimizer(cfg: OptimizerConfig, params: list[np.ndarray], grads: list[np.ndarray]) -> Optimizer:
    return OPTIMIZERS.get(cfg.name)(params, grads, cfg)
