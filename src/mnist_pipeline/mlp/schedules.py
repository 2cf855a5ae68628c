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
from dataclasses import dataclass

from mnist_pipeline.mlp.errors import check, check_choice
from mnist_pipeline.mlp.registry import Registry

SCHEDULES = Registry("schedule")


@dataclass(frozen=True)
class ScheduleConfig:
    """The schedule's name (a key of :data:`SCHEDULES`), warmup and decay settings."""

    name: str
    warmup_epochs: float = 0.0
    min_lr: float = 0.0  # cosine and linear decay end here
    step_epochs: float = 10.0  # step: multiply by gamma every step_epochs
    gamma: float = 0.1  # step: factor per step; exponential: factor per epoch

    def validate(self, key: str) -> None:
        """Raise :class:`~mnist_pipeline.mlp.errors.MLPError` naming ``key.field`` for any invalid value."""
        check_choice(f"{key}.name", self.name, SCHEDULES.names())
        check(f"{key}.warmup_epochs", self.warmup_epochs >= 0, ">= 0", self.warmup_epochs)
        check(f"{key}.min_lr", self.min_lr >= 0, ">= 0", self.min_lr)
        check(f"{key}.step_epochs", self.step_epochs > 0, "> 0", self.step_epochs)
        check(f"{key}.gamma", 0 < self.gamma <= 1, "in (0, 1]", self.gamma)


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
