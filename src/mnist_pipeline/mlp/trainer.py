"""Mini-batch training loop: shuffle, augment, forward, backward, regularize, step.

Per epoch: one permutation from the stage's ``rng``; each batch is gathered into a reused contiguous
buffer (deformed if ``augment_elastic_alpha`` or an affine range ``augment_rotate``, ``_scale``,
``_shear``, ``_translate`` is above 0: one displacement field per image, one resample; then shifted if
``augment_shift > 0``; with shifts the batch is gathered grouped by offset, which changes nothing but
the order of its rows), then does forward -> loss -> backward, where each piece of the weight
gradients is followed at once by its L2 term and optimizer step (learning rate from the per-step
schedule), then max-norm. The network computes in the fixed row blocks of its ``chunks`` on its
workers' threads (see :mod:`~mnist_pipeline.mlp.network`). For optimizers linear
in ``lr * g`` the loss gradient is multiplied by ``-lr`` before back-propagation (see
:mod:`~mnist_pipeline.mlp.optimizers`). After the epoch the validation split is evaluated with plain
cross-entropy. With ``early_stop`` the best epoch's weights are kept and restored at the end.

Everything random comes from the one ``rng``, in this order: the epoch's permutation, then per batch
the shift offsets, the elastic displacement field, the affine parameters and the dropout masks
(forward pass).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from mnist_pipeline.mlp.augment import apply_deform, draw_deform, draw_shifts, shift_grouped
from mnist_pipeline.mlp.errors import MLPError, check, check_choice
from mnist_pipeline.mlp.losses import LOSSES, make_loss
from mnist_pipeline.mlp.network import Network
from mnist_pipeline.mlp.optimizers import OptimizerConfig, make_optimizer
from mnist_pipeline.mlp.schedules import Schedule, ScheduleConfig

log = logging.getLogger(__name__)

DTYPES = ("float32", "float64")
# Upper bounds, so that a typo cannot ask for days of training or more memory than the machine has.
MAX_EPOCHS = 1000  # the presets train for at most 100
SECONDS_PER_EPOCH = 1.1  # the default 784-256-128-10 network on MNIST (README); 784-1024-1024-10 about 4
MAX_BATCH_SIZE = 65536
INK_ROWS = 2048  # rows per slice when BatchMaker marks the training set's non-zero pixels
EARLY_STOP = ("none", "val_loss", "val_acc")  # what early stopping monitors; "none" keeps the last epoch


AFFINE_KEYS = ("augment_rotate", "augment_scale", "augment_shear", "augment_translate")  # TrainConfig's


@dataclass(frozen=True)
class TrainConfig:
    """Everything :func:`fit` needs besides the network, the data, the optimizer and the schedule."""

    epochs: int
    batch_size: int
    lr: float
    l2: float
    seed: int
    dtype: str
    loss: str = "cross_entropy"
    label_smoothing: float = 0.0
    max_norm: float = 0.0  # 0 = off; else cap each unit's incoming weight vector norm
    augment_shift: int = 0  # random translation of training images by up to k pixels
    augment_elastic_alpha: float = 0.0  # elastic distortion: factor on the smoothed field (max px); 0 = off
    augment_elastic_sigma: float = 4.0  # elastic distortion: smoothness (Gaussian std) in pixels
    augment_rotate: float = 0.0  # random affine map: rotation up to this many degrees either way; 0 = off
    augment_scale: float = 0.0  # ... scale in [1 - s, 1 + s]
    augment_shear: float = 0.0  # ... shear in [-s, s]
    augment_translate: float = 0.0  # ... sub-pixel translation up to this many pixels on each axis
    early_stop: str = "none"  # none, val_loss or val_acc; restores the best epoch's weights
    patience: int = 5

    def validate(self, key: str) -> None:
        """Raise :class:`~mnist_pipeline.mlp.errors.MLPError` naming ``key.field`` for any invalid value."""
        check(f"{key}.epochs", self.epochs > 0, "a positive number of epochs", self.epochs)
        days = self.epochs * SECONDS_PER_EPOCH / 86400
        check(
            f"{key}.epochs",
            self.epochs <= MAX_EPOCHS,
            f"at most {MAX_EPOCHS} (each epoch is a full pass over the training set: at "
            f"{SECONDS_PER_EPOCH} s each, as for the default network on MNIST, {self.epochs} take {days:.1f} days)",
            self.epochs,
        )
        check(f"{key}.batch_size", self.batch_size > 0, "a positive batch size", self.batch_size)
        check(
            f"{key}.batch_size",
            self.batch_size <= MAX_BATCH_SIZE,
            f"at most {MAX_BATCH_SIZE} examples (more than a whole MNIST training set; a batch and its "
            "activations are held in memory at once)",
            self.batch_size,
        )
        check(f"{key}.lr", self.lr > 0, "> 0", self.lr)
        check(f"{key}.l2", self.l2 >= 0, ">= 0", self.l2)
        check(f"{key}.seed", self.seed >= 0, ">= 0", self.seed)
        check_choice(f"{key}.dtype", self.dtype, DTYPES)
        check_choice(f"{key}.loss", self.loss, LOSSES.names())
        check(f"{key}.label_smoothing", 0 <= self.label_smoothing < 1, "in [0, 1)", self.label_smoothing)
        smoothing_applies = self.loss == "cross_entropy" or not self.label_smoothing
        check(
            f"{key}.label_smoothing",
            smoothing_applies,
            f"0 with loss {self.loss} (cross_entropy only)",
            self.label_smoothing,
        )
        check(f"{key}.max_norm", self.max_norm >= 0, ">= 0 (0 disables it)", self.max_norm)
        check(f"{key}.augment_shift", 0 <= self.augment_shift <= 8, "between 0 and 8 pixels", self.augment_shift)
        alpha, sigma = self.augment_elastic_alpha, self.augment_elastic_sigma
        check(f"{key}.augment_elastic_alpha", 0 <= alpha <= 100, "between 0 (off) and 100 pixels", alpha)
        check(f"{key}.augment_elastic_sigma", 0.5 <= sigma <= 10, "between 0.5 and 10 pixels", sigma)
        check(f"{key}.augment_rotate", 0 <= self.augment_rotate <= 45, "between 0 and 45 degrees", self.augment_rotate)
        check(f"{key}.augment_scale", 0 <= self.augment_scale <= 0.5, "between 0 and 0.5", self.augment_scale)
        check(f"{key}.augment_shear", 0 <= self.augment_shear <= 0.5, "between 0 and 0.5", self.augment_shear)
        check(
            f"{key}.augment_translate",
            0 <= self.augment_translate <= 8,
            "between 0 and 8 pixels",
            self.augment_translate,
        )
        check_choice(f"{key}.early_stop", self.early_stop, EARLY_STOP)
        check(f"{key}.patience", self.patience > 0, "a positive number of epochs", self.patience)

    @property
    def affine(self) -> tuple[float, float, float, float]:
        """The random affine map's ranges: (rotate degrees, scale, shear, translate pixels); all 0 = off."""
        rotate, scale, shear, translate = (getattr(self, key) for key in AFFINE_KEYS)
        return (rotate, scale, shear, translate)

    @property
    def deforms(self) -> bool:
        """Whether batches are resampled through a displacement field (elastic, affine or both)."""
        return bool(self.augment_elastic_alpha or any(self.affine))


@dataclass(frozen=True)
class Split:
    """Inputs ``x`` (N, D), integer labels ``y`` (N,) and one-hot targets (N, C)."""

    x: np.ndarray
    y: np.ndarray
    onehot: np.ndarray


def evaluate_split(net: Network, data: Split, batch_size: int = 4096) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``net`` on ``data`` (inference mode)."""
    total_loss, correct = 0.0, 0
    for i in range(0, len(data.y), batch_size):
        xb = data.x[i : i + batch_size].astype(net.dtype, copy=False)
        logits = net.forward(xb)
        targets = data.onehot[i : i + batch_size].astype(net.dtype, copy=False)
        total_loss += net.loss.forward(logits, targets) * len(xb)
        correct += int((logits.argmax(axis=1) == data.y[i : i + batch_size]).sum())
    return total_loss / len(data.y), correct / len(data.y)


def apply_max_norm(weights: list[np.ndarray], c: float) -> None:
    """Rescale each unit's incoming weight vector (a column of ``W``) to norm <= ``c``."""
    for w in weights:
        norms = np.sqrt(np.einsum("ij,ij->j", w, w))  # (out,), without a W-sized temporary
        limit = w.dtype.type(c)
        # c / max(norm, c) is exactly 1 for short columns and never divides by zero (zero columns)
        w *= limit / np.maximum(norms, limit)


def kept_epoch(rows: list[dict[str, float]], early_stop: str) -> int:
    """The 1-based epoch whose weights :func:`fit` returns: the last one, or with early stopping the
    best by its monitor (lowest ``val_loss`` / highest ``val_acc``; the first wins ties)."""
    if early_stop == "none":
        return int(rows[-1]["epoch"])
    return best_by_monitor(rows, early_stop)


def best_by_monitor(rows: list[dict[str, float]], monitor: str) -> int:
    """The 1-based epoch with the best ``monitor``, ``val_loss`` (lowest) or ``val_acc`` (highest)."""
    sign = 1 if monitor == "val_loss" else -1
    return int(min(rows, key=lambda r: (sign * r[monitor], r["epoch"]))["epoch"])


class BatchMaker:
    """Training batches in reused buffers, made row block by row block inside the network's pass.

    :meth:`next` draws what a batch needs from ``rng`` here, in the caller's thread (shift offsets,
    then the deformations' noise and affine parameters); the per-row work (gathering the shuffled
    rows, deforming, shifting, casting to the network's dtype) is left to ``prepare(rows)``, which
    :meth:`Network.train_batch` runs for each row block before its forward pass, on whichever thread
    runs the block. The blocks are fixed by the compute params, not by the thread count, so every
    row comes out the same bytes however many threads there are.

    With ``blank_columns`` and no augmentation, :meth:`epoch_columns` marks each batch's input columns
    that are not zero in every row, for the network to leave the others out.
    """

    def __init__(
        self,
        train: Split,
        cfg: TrainConfig,
        dtype: np.dtype,
        image_shape: tuple[int, int] | None,
        blank_columns: bool = False,
    ) -> None:
        for key in ("augment_shift", "augment_elastic_alpha", *AFFINE_KEYS):
            if getattr(cfg, key) and image_shape is None:
                raise ValueError(f"{key} needs image_shape")
        self.train, self.cfg, self.image_shape = train, cfg, image_shape or (0, 0)  # (0, 0): no augmentation
        b = cfg.batch_size
        self.x = np.empty((b, train.x.shape[1]), train.x.dtype)  # (B, D) gathered
        self.t = np.empty((b, train.onehot.shape[1]), train.onehot.dtype)  # (B, C)
        self.shifted = np.empty_like(self.x) if cfg.augment_shift else None
        cast = train.x.dtype != dtype or train.onehot.dtype != dtype
        self.x_cast = np.empty(self.x.shape, dtype) if cast else None
        self.t_cast = np.empty(self.t.shape, dtype) if cast else None
        self.moves_pixels = bool(cfg.augment_shift or cfg.deforms)  # prepare() moves pixels: shifts, deformations
        # Pixels moved in from outside: the training set's minimum, the same for every batch.
        self.background = train.x.min() if self.moves_pixels and train.x.size else 0
        # Each training image's non-zero pixels, as bits, for the batches' blank columns (see epoch_columns).
        # Made in slices of rows: one pass over the whole set is 10x slower.
        self.ink = None
        if blank_columns and not self.moves_pixels:
            rows = range(0, len(train.x), INK_ROWS)
            self.ink = np.concatenate([np.packbits(train.x[i : i + INK_ROWS] != 0, axis=1) for i in rows])  # (N, D/8)

    def epoch_columns(self, perm: np.ndarray) -> np.ndarray | None:
        """Per batch of an epoch in the order ``perm``, one bool per input column: False where every row of
        the batch is zero (:meth:`Network.train_batch`'s ``columns``). None with augmentation, which moves
        pixels (the network then takes every column). All the epoch's batches at once: batch by batch, the
        lookups of scattered rows cost more than the blank columns save on two threads."""
        if self.ink is None:
            return None
        b, d = self.cfg.batch_size, self.x.shape[1]
        full = len(perm) // b * b
        ink = self.ink[perm]  # (N, D/8) in the epoch's order
        marks = [np.bitwise_or.reduce(ink[:full].reshape(-1, b, ink.shape[1]), axis=1)]  # (batches, D/8)
        if full < len(perm):
            marks.append(np.bitwise_or.reduce(ink[full:], axis=0, keepdims=True))  # the last, shorter batch
        return np.unpackbits(np.concatenate(marks), axis=1, count=d).view(bool)  # (batches, D)

    def next(
        self, idx: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, Callable[[slice], None]]:
        """``(idx, x, targets, prepare)`` for the rows ``idx`` of the training set: ``idx`` in batch order
        (grouped by shift offset), and ``x``/``targets`` the buffers that ``prepare(rows)`` fills."""
        cfg, b = self.cfg, len(idx)
        if cfg.augment_shift:  # gather the batch grouped by offset: each group then shifts as one block
            order, counts = draw_shifts(b, cfg.augment_shift, rng)
            idx = idx[order]
            ends = np.cumsum(counts)
            starts = ends - counts
        source = self.x[:b]
        draws = None
        if cfg.deforms:  # every image's random field is drawn here; each row block is deformed in prepare
            dtype = source.dtype if source.dtype in (np.float32, np.float64) else np.dtype(np.float64)
            draws = draw_deform(b, self.image_shape, cfg.augment_elastic_alpha, cfg.affine, rng, dtype)
        shifted = self.shifted[:b] if self.shifted is not None else None
        x = self.x_cast[:b] if self.x_cast is not None else (shifted if shifted is not None else source)
        gathered = self.t[:b]
        t = self.t_cast[:b] if self.t_cast is not None else gathered

        def prepare(rows: slice) -> None:
            np.take(self.train.x, idx[rows], axis=0, out=source[rows], mode="clip")  # (b, D)
            if draws is not None:
                alpha, sigma = cfg.augment_elastic_alpha, cfg.augment_elastic_sigma
                source[rows] = apply_deform(source[rows], self.image_shape, draws[rows], alpha, sigma, self.background)
            np.take(self.train.onehot, idx[rows], axis=0, out=gathered[rows], mode="clip")  # (b, C)
            done = source
            if shifted is not None:
                a, z = rows.indices(b)[:2]
                part = np.clip(np.minimum(ends, z) - np.maximum(starts, a), 0, None)  # group sizes within rows
                shift_grouped(source[rows], self.image_shape, cfg.augment_shift, part, shifted[rows], self.background)
                done = shifted
            if self.x_cast is not None:
                np.copyto(x[rows], done[rows])
                np.copyto(t[rows], gathered[rows])

        return idx, x, t, prepare


def fit(
    net: Network,
    train: Split,
    val: Split,
    cfg: TrainConfig,
    opt_cfg: OptimizerConfig,
    sched_cfg: ScheduleConfig,
    rng: np.random.Generator,
    image_shape: tuple[int, int] | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> tuple[list[dict[str, float]], list[float]]:
    """Train ``net`` in place; return per-epoch log rows and per-epoch seconds.

    ``train_loss``/``train_acc`` in a row are running means of the training
    objective over that epoch's batches (weights change during the epoch);
    ``val_loss`` is plain cross-entropy after it. ``on_epoch(row)``, if given,
    gets each row as soon as its epoch ends (live logging).

    Raises
    ------
    MLPError
        If ``batch_size`` exceeds the training examples, or at the first non-finite loss (naming the
        epoch and step; the weights then hold that batch's step too, so the network is of no further use)
        or validation loss.
    """
    n = len(train.y)
    if cfg.batch_size > n:
        raise MLPError(f"train.batch_size={cfg.batch_size} exceeds the {n} training examples; lower it")
    batches = BatchMaker(train, cfg, net.dtype, image_shape, net.skips_blank_columns)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    schedule = Schedule(sched_cfg, cfg.lr, cfg.epochs * steps_per_epoch, steps_per_epoch)
    loss_fn = make_loss(cfg.loss, cfg.label_smoothing)
    params = net.parameters()
    opt = make_optimizer(opt_cfg, [p for _, p, _ in params], [g for _, _, g in params])
    weights = [p for name, p, _ in params if name.startswith("W")]
    rows, seconds = [], []
    best, best_state, waited = None, None, 0
    step = 0
    for epoch in range(1, cfg.epochs + 1):
        start = time.perf_counter()
        perm = rng.permutation(n)
        epoch_columns = batches.epoch_columns(perm)
        loss_sum, correct = 0.0, 0
        for i in range(0, n, cfg.batch_size):
            idx, xb, tb, prepare = batches.next(perm[i : i + cfg.batch_size], rng)
            lr = schedule.lr_at(step)
            opt.start_step(0.0 if opt.prescaled else cfg.l2)  # prescaled: L2 rides on the spent gradient
            if opt.prescaled:  # linear in lr * g: every gradient times -lr by scaling the (B, C) loss gradient once
                scale, update = -lr, partial(opt.step_rows_prescaled, decay=-lr * cfg.l2)
            else:
                scale, update = None, partial(opt.step_rows, lr=lr, l2=cfg.l2)
            # One hand-off to the workers: the row blocks' passes, then the gradient pieces and their updates.
            columns = None if epoch_columns is None else epoch_columns[i // cfg.batch_size]
            loss, logits = net.train_batch(xb, tb, loss_fn, scale, prepare, update, columns)
            if not math.isfinite(loss):  # the step has been taken, but a diverged run keeps nothing
                raise MLPError(
                    f"training diverged: loss is {loss} at epoch {epoch} step {step}; "
                    f"lower train.lr (now {cfg.lr}) or check the inputs"
                )
            loss_sum += loss * len(xb)
            correct += int((logits.argmax(axis=1) == train.y[idx]).sum())
            if cfg.max_norm:
                apply_max_norm(weights, cfg.max_norm)
            step += 1
        seconds.append(time.perf_counter() - start)
        val_loss, val_acc = evaluate_split(net, val)
        if not math.isfinite(val_loss):
            raise MLPError(f"training diverged: validation loss is {val_loss} after epoch {epoch}; lower train.lr")
        row = {"epoch": epoch, "train_loss": loss_sum / n, "train_acc": correct / n}
        row.update({"val_loss": val_loss, "val_acc": val_acc, "lr": lr})
        rows.append(row)
        if on_epoch is not None:
            on_epoch(row)
        log.info(
            "epoch %d/%d train_loss %.4f train_acc %.4f val_loss %.4f val_acc %.4f (%.2fs)",
            *(epoch, cfg.epochs, row["train_loss"], row["train_acc"], val_loss, val_acc, seconds[-1]),
        )
        if cfg.early_stop != "none":
            if best_by_monitor(rows, cfg.early_stop) == epoch:
                best, best_state, waited = epoch, net.state(), 0
            else:
                waited += 1
                if waited >= cfg.patience:
                    log.info("early stop: no %s improvement for %d epochs", cfg.early_stop, waited)
                    break
    if best_state is not None:
        log.info("restoring weights of best epoch %d", best)
        net.load_state(best_state)
    return rows, seconds
