"""Learning-rate schedules, evaluated per optimizer step (not per epoch).

``Schedule.lr_at(step)`` for ``step`` in ``0..total_steps-1``. An optional linear
warmup rises from ``lr / warmup_steps`` to ``lr`` over the first
``warmup_epochs``; the named decay then runs over the remaining steps, with
``epoch`` a fractional count since the warmup ended and ``progress`` in [0, 1):

- ``constant``: ``lr``
- ``step``: ``lr * gamma ** floor(epoch / step_epochs)``
- ``exponential``: ``lr * gamma ** epoch``
- ``linear``: ``min_lr + (lr - min_lr) * (1 - progress)``
- ``cosine``: ``min_lr + (lr - min_lr) * (1 + cos(pi * progress)) / 2``
"""

from __future__ import annotations

import math

from mnist_pipeline.config import ScheduleConfig
from mnist_pipeline.mlp.registry import Registry

SCHEDULES = Registry("schedule")


@SCHEDULES.register("constant")
def constant(progress: float, epoch: float, lr: float, cfg: ScheduleConfig) -> float:
    return lr


@SCHEDULES.register("step")
def step(progress: float, epoch: float, lr: float, cfg: ScheduleConfig) -> float:
    return lr * cfg.gamma ** math.floor(epoch / cfg.step_epochs + 1e-9)


@SCHEDULES.register("exponential")
def exponential(progress: float, epoch: float, lr: float, cfg: ScheduleConfig) -> float:
    return lr * cfg.gamma**epoch


@SCHEDULES.register("linear")
def linear(progress: float, epoch: float, lr: float, cfg: ScheduleConfig) -> float:
    return cfg.min_lr + (lr - cfg.min_lr) * (1 - progress)


@SCHEDULES.register("cosine")
def cosine(progress: float, epoch: float, lr: float, cfg: ScheduleConfig) -> float:
    return cfg.min_lr + (lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


class Schedule:
    """``lr_at(step)``: warmup, then the named decay over the remaining steps."""

    def __init__(self, cfg: ScheduleConfig, lr: float, total_steps: int, steps_per_epoch: int) -> None:
        self.cfg, self.lr, self.total, self.per_epoch = cfg, lr, total_steps, steps_per_epoch
        self.warmup = min(round(cfg.warmup_epochs * steps_per_epoch), total_steps - 1)
        self.decay = SCHEDULES.get(cfg.name)

    def lr_at(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        after = step - self.warmup
        progress = after / max(1, self.total - self.warmup)
        return self.decay(progress, after / self.per_epoch, self.lr, self.cfg)
