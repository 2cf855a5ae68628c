"""Mini-batch training loop: shuffle per epoch, forward, backward, L2, step, log."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from mnist_pipeline.config import OptimizerConfig, ScheduleConfig, TrainConfig
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.mlp.network import Network
from mnist_pipeline.mlp.optimizers import make_optimizer
from mnist_pipeline.mlp.schedules import Schedule

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    """Inputs ``x`` (N, D), integer labels ``y`` (N,) and one-hot targets (N, C)."""

    x: np.ndarray
    y: np.ndarray
    onehot: np.ndarray


def evaluate(net: Network, data: Split, batch_size: int = 4096) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``net`` on ``data`` (inference mode)."""
    total_loss, correct = 0.0, 0
    for i in range(0, len(data.y), batch_size):
        xb = data.x[i : i + batch_size].astype(net.dtype, copy=False)
        logits = net.forward(xb)
        total_loss += net.loss.forward(logits, data.onehot[i : i + batch_size]) * len(xb)
        correct += int((logits.argmax(axis=1) == data.y[i : i + batch_size]).sum())
    return total_loss / len(data.y), correct / len(data.y)


def fit(
    net: Network,
    train: Split,
    val: Split,
    cfg: TrainConfig,
    opt_cfg: OptimizerConfig,
    sched_cfg: ScheduleConfig,
    rng: np.random.Generator,
) -> tuple[list[dict], list[float]]:
    """Train ``net`` in place; return per-epoch log rows and per-epoch seconds.

    The training loss/accuracy in a row are running means over that epoch's
    batches (weights change during the epoch); validation is a full pass after it.

    Raises
    ------
    PipelineError
        At the first non-finite loss, naming the epoch and step.
    """
    n = len(train.y)
    if cfg.batch_size > n:
        raise PipelineError(f"train.batch_size={cfg.batch_size} exceeds the {n} training examples; lower it")
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    schedule = Schedule(sched_cfg, cfg.lr, cfg.epochs * steps_per_epoch, steps_per_epoch)
    params = net.parameters()
    opt = make_optimizer(opt_cfg, [p for _, p, _ in params], [g for _, _, g in params])
    weights = [(p, g) for name, p, g in params if name.startswith("W")]
    l2 = net.dtype.type(cfg.l2)
    rows, seconds = [], []
    step = 0
    for epoch in range(1, cfg.epochs + 1):
        start = time.perf_counter()
        perm = rng.permutation(n)
        xs = train.x[perm].astype(net.dtype, copy=False)  # gathered once, contiguous
        ts = train.onehot[perm].astype(net.dtype, copy=False)
        ys = train.y[perm]
        loss_sum, correct = 0.0, 0
        for i in range(0, n, cfg.batch_size):
            xb, tb = xs[i : i + cfg.batch_size], ts[i : i + cfg.batch_size]
            logits = net.forward(xb, train=True)
            loss = net.loss.forward(logits, tb)
            if not math.isfinite(loss):
                raise PipelineError(
                    f"training diverged: loss is {loss} at epoch {epoch} step {step}; "
                    f"lower train.lr (now {cfg.lr}) or check the inputs"
                )
            loss_sum += loss * len(xb)
            correct += int((logits.argmax(axis=1) == ys[i : i + cfg.batch_size]).sum())
            net.backward(net.loss.backward())
            if l2:
                for p, g in weights:
                    g += l2 * p
            lr = schedule.lr_at(step)
            opt.step(lr)
            step += 1
        seconds.append(time.perf_counter() - start)
        val_loss, val_acc = evaluate(net, val)
        row = {
            "epoch": epoch,
            "train_loss": loss_sum / n,
            "train_acc": correct / n,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": lr,
        }
        rows.append(row)
        log.info(
            "epoch %d/%d train_loss %.4f train_acc %.4f val_loss %.4f val_acc %.4f (%.2fs)",
            epoch, cfg.epochs, row["train_loss"], row["train_acc"], val_loss, val_acc, seconds[-1],
        )
    return rows, seconds
