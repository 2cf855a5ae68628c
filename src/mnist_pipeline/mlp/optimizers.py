"""Optimizers: update parameters in place from their gradients.

``step(lr)`` applies one update to every parameter; per-parameter state
(velocities, moments) lives in lists aligned with the parameters. Formulas:

- ``sgd``: ``w -= lr * g``
- ``momentum`` (classical): ``v = mu * v - lr * g; w += v``
- ``nesterov``: ``v = mu * v - lr * g; w += mu * v - lr * g``
- ``ema_momentum``: ``v = beta * v + (1 - beta) * g; w -= lr * v``
- ``rmsprop``: ``s = rho * s + (1 - rho) * g^2; w -= lr * g / (sqrt(s) + eps)``
- ``adam``: bias-corrected moments, ``w -= lr * m_hat / (sqrt(s_hat) + eps)``
- ``adamw``: ``w -= lr * weight_decay * w`` on weight matrices (decoupled), then adam
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
        self.scratch = [np.empty_like(p) for p in params]  # lr * g without a temporary per step

    def step(self, lr: float) -> None:
        self.t += 1
        for i, (p, g) in enumerate(zip(self.params, self.grads, strict=True)):
            self.update(i, p, g, p.dtype.type(lr))

    def update(self, i: int, p: np.ndarray, g: np.ndarray, lr: np.floating) -> None:
        raise NotImplementedError

    def zeros(self) -> list[np.ndarray]:
        return [np.zeros_like(p) for p in self.params]


@OPTIMIZERS.register("sgd")
class SGD(Optimizer):
    def update(self, i, p, g, lr):
        p -= np.multiply(g, lr, out=self.scratch[i])


@OPTIMIZERS.register("momentum")
class Momentum(Optimizer):
    def __init__(self, params, grads, cfg):
        super().__init__(params, grads, cfg)
        self.v = self.zeros()

    def update(self, i, p, g, lr):
        v = self.v[i]
        v *= p.dtype.type(self.cfg.momentum)
        v -= np.multiply(g, lr, out=self.scratch[i])
        p += v


@OPTIMIZERS.register("nesterov")
class Nesterov(Momentum):
    def update(self, i, p, g, lr):
        mu = p.dtype.type(self.cfg.momentum)
        v = self.v[i]
        v *= mu
        v -= lr * g
        p += mu * v - lr * g


@OPTIMIZERS.register("ema_momentum")
class EMAMomentum(Momentum):
    def update(self, i, p, g, lr):
        beta = p.dtype.type(self.cfg.beta)
        v = self.v[i]
        v *= beta
        v += (1 - beta) * g
        p -= lr * v


@OPTIMIZERS.register("rmsprop")
class RMSProp(Optimizer):
    def __init__(self, params, grads, cfg):
        super().__init__(params, grads, cfg)
        self.s = self.zeros()

    def update(self, i, p, g, lr):
        t = p.dtype.type
        s = self.s[i]
        s *= t(self.cfg.rho)
        s += t(1 - self.cfg.rho) * g * g
        p -= lr * g / (np.sqrt(s) + t(self.cfg.eps))


@OPTIMIZERS.register("adam")
class Adam(Optimizer):
    def __init__(self, params, grads, cfg):
        super().__init__(params, grads, cfg)
        self.m, self.s = self.zeros(), self.zeros()

    def update(self, i, p, g, lr):
        c, t = self.cfg, p.dtype.type
        m, s = self.m[i], self.s[i]
        m *= t(c.beta1)
        m += t(1 - c.beta1) * g
        s *= t(c.beta2)
        s += t(1 - c.beta2) * g * g
        m_hat = m / t(1 - c.beta1**self.t)
        s_hat = s / t(1 - c.beta2**self.t)
        p -= lr * m_hat / (np.sqrt(s_hat) + t(c.eps))


@OPTIMIZERS.register("adamw")
class AdamW(Adam):
    def update(self, i, p, g, lr):
        if p.ndim >= 2:  # decay weight matrices, not biases
            p -= lr * p.dtype.type(self.cfg.weight_decay) * p
        super().update(i, p, g, lr)


def make_optimizer(cfg: OptimizerConfig, params: list[np.ndarray], grads: list[np.ndarray]) -> Optimizer:
    return OPTIMIZERS.get(cfg.name)(params, grads, cfg)
