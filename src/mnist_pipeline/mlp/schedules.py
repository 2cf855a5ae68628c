"""Learning-rate schedules, applied per optimizer step (not per epoch).

``lr_at(step)`` for ``step`` in ``0..total_steps-1``; an optional linear warmup
rises from ``lr / warmup_steps`` to ``lr`` over the first ``warmup_steps``.
"""

from __future__ import annotations

import math

from mnist_pipeline.config import ScheduleConfig
from mnist_pipeline.mlp.registry import Registry

SCHEDULES = Registry("schedule")


@SCHEDULES.register("constant")
def constant(progress: float, lr: float, cfg: ScheduleConfig) -> float:
    return lr


@SCHEDULES.register("cosine")
def cosine(progress: float, lr: float, cfg: ScheduleConfig) -> float:
    return cfg.min_lr + (lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


class Schedule:
    """``lr_at(step)``: warmup, then the named decay over the remaining steps."""

    def __init__(self, cfg: ScheduleConfig, lr: float, total_steps: int, steps_per_epoch: int) -> None:
        self.cfg, self.lr, self.total = cfg, lr, total_steps
        self.warmup = min(round(cfg.warmup_epochs * steps_per_epoch), total_steps - 1)
        self.decay = SCHEDULES.get(cfg.name)

    def lr_at(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        progress = (step - self.warmup) / max(1, self.total - self.warmup)
        return self.decay(progress, self.lr, self.cfg)
