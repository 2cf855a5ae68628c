"""Learning-rate schedules: hand-worked values, and per-step (not per-epoch) application in ``fit``.

Common setting: base ``lr = 1.0``, 4 steps per epoch, 5 epochs (20 steps, ``0..19``), and a
warmup of 0.5 epoch = 2 steps. The decay then runs over the remaining 18 steps with
``after = step - 2``, ``epoch = after / 4`` and ``progress = after / 18`` (so the last step,
19, has ``after = 17``, ``epoch = 4.25``, ``progress = 17/18``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mnist_pipeline.mlp import schedules, trainer
from mnist_pipeline.mlp.errors import MLPError
from mnist_pipeline.mlp.network import Network
from mnist_pipeline.mlp.optimizers import OptimizerConfig, make_optimizer
from mnist_pipeline.mlp.schedules import SCHEDULES, Schedule, ScheduleConfig
from mnist_pipeline.mlp.trainer import Split, TrainConfig, fit

PER_EPOCH, EPOCHS = 4, 5
TOTAL = PER_EPOCH * EPOCHS


def schedule(name: str, warmup_epochs: float = 0.5, **kwargs) -> Schedule:
    return Schedule(ScheduleConfig(name, warmup_epochs=warmup_epochs, **kwargs), 1.0, TOTAL, PER_EPOCH)


def lrs(s: Schedule, steps) -> list[float]:
    return [s.lr_at(i) for i in steps]


# Warmup: lr * (step + 1) / warmup_steps for the first 2 steps, then the decay starts at its peak.
WARMUP = [0.5, 1.0]


def test_constant_with_warmup() -> None:
    s = schedule("constant")
    assert lrs(s, range(TOTAL)) == pytest.approx(WARMUP + [1.0] * 18, rel=1e-15)


def test_constant_without_warmup_is_flat_from_the_first_step() -> None:
    assert lrs(schedule("constant", warmup_epochs=0), range(TOTAL)) == [1.0] * TOTAL


def test_step_decay() -> None:
    # lr * gamma ** floor(epoch / step_epochs), gamma 0.5, every 2 epochs = 8 steps after warmup
    s = schedule("step", step_epochs=2, gamma=0.5)
    assert lrs(s, [0, 1]) == pytest.approx(WARMUP)
    assert s.lr_at(2) == 1.0  # first step after warmup: after 0
    assert s.lr_at(9) == 1.0  # after 7, epoch 1.75
    assert s.lr_at(10) == pytest.approx(0.5)  # after 8, epoch 2.0: exactly on the boundary
    assert s.lr_at(17) == pytest.approx(0.5)  # after 15, epoch 3.75
    assert s.lr_at(18) == pytest.approx(0.25)  # after 16, epoch 4.0
    assert s.lr_at(19) == pytest.approx(0.25)  # last step: after 17, epoch 4.25


def test_step_boundary_is_robust_to_fractional_step_epochs() -> None:
    # step_epochs 0.3 with 10 steps/epoch: after 3 steps, epoch 0.3 -> 0.3 / 0.3 must floor to 1, not 0.
    s = Schedule(ScheduleConfig("step", step_epochs=0.3, gamma=0.5), 1.0, 100, 10)
    assert [s.lr_at(i) for i in (0, 2, 3, 5, 6)] == pytest.approx([1.0, 1.0, 0.5, 0.5, 0.25])


def test_exponential_decay_is_smooth_per_step() -> None:
    # lr * gamma ** epoch with a fractional epoch, gamma 0.5 per epoch
    s = schedule("exponential", gamma=0.5)
    assert lrs(s, [0, 1]) == pytest.approx(WARMUP)
    assert s.lr_at(2) == 1.0
    assert s.lr_at(3) == pytest.approx(0.5**0.25)  # after 1, epoch 0.25 -> 0.840896
    assert s.lr_at(3) == pytest.approx(0.8408964153, rel=1e-9)
    assert s.lr_at(6) == pytest.approx(0.5)  # after 4, one epoch
    assert s.lr_at(19) == pytest.approx(0.5**4.25)  # last step: 0.0625 * 0.5 ** 0.25
    assert s.lr_at(19) == pytest.approx(0.0525560260, rel=1e-9)


def test_linear_decay() -> None:
    # min_lr + (lr - min_lr) * (1 - progress), min_lr 0.1
    s = schedule("linear", min_lr=0.1)
    assert lrs(s, [0, 1]) == pytest.approx(WARMUP)
    assert s.lr_at(2) == pytest.approx(1.0)  # progress 0
    assert s.lr_at(3) == pytest.approx(0.1 + 0.9 * (1 - 1 / 18))  # 0.95
    assert s.lr_at(3) == pytest.approx(0.95)
    assert s.lr_at(11) == pytest.approx(0.55)  # after 9: progress 1/2
    assert s.lr_at(19) == pytest.approx(0.1 + 0.9 / 18)  # last step: 0.15, one step short of min_lr
    assert s.lr_at(19) == pytest.approx(0.15)


def test_cosine_decay() -> None:
    # min_lr + (lr - min_lr) * (1 + cos(pi * progress)) / 2, min_lr 0.1
    s = schedule("cosine", min_lr=0.1)
    assert lrs(s, [0, 1]) == pytest.approx(WARMUP)
    assert s.lr_at(2) == pytest.approx(1.0)  # cos 0 = 1
    assert s.lr_at(5) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi / 6)))  # after 3: 0.939711
    assert s.lr_at(5) == pytest.approx(0.9397114317, rel=1e-9)
    assert s.lr_at(11) == pytest.approx(0.55)  # after 9: cos(pi / 2) = 0
    assert s.lr_at(19) == pytest.approx(0.1 + 0.45 * (1 + math.cos(17 * math.pi / 18)))  # 0.1 + 0.45 * (1 - cos 10 deg)
    assert s.lr_at(19) == pytest.approx(0.1068365111, rel=1e-9)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_decay_without_warmup_spans_all_steps(name: str) -> None:
    s = schedule(name, warmup_epochs=0, min_lr=0.0)
    assert s.lr_at(0) == pytest.approx(1.0)
    assert s.lr_at(10) == pytest.approx(0.5)  # progress 10 / 20 is the midpoint of both
    values = lrs(s, range(TOTAL))
    assert all(a > b for a, b in zip(values, values[1:], strict=False))  # strictly decreasing
    assert values[-1] > 0  # progress stays < 1, so no step has lr 0


def test_warmup_rises_linearly_to_the_base_lr() -> None:
    s = Schedule(ScheduleConfig("cosine", warmup_epochs=1), 0.8, 40, 10)  # 10 warmup steps
    assert lrs(s, range(10)) == pytest.approx([0.08 * k for k in range(1, 11)])
    assert s.lr_at(10) == pytest.approx(0.8)  # first step after warmup
    assert s.lr_at(39) == pytest.approx(0.4 * (1 + math.cos(math.pi * 29 / 30)))  # last step


def test_warmup_longer_than_training_leaves_one_decay_step() -> None:
    s = Schedule(ScheduleConfig("constant", warmup_epochs=10), 1.0, 8, 4)  # asks for 40 warmup steps
    assert lrs(s, range(8)) == pytest.approx([1 / 7, 2 / 7, 3 / 7, 4 / 7, 5 / 7, 6 / 7, 1.0, 1.0])


def test_unknown_schedule_lists_the_valid_ones() -> None:
    assert sorted(SCHEDULES) == ["constant", "cosine", "exponential", "linear", "step"]
    with pytest.raises(MLPError, match="unknown schedule 'poly'; valid: constant, cosine, exponential"):
        Schedule(ScheduleConfig("poly"), 1.0, 10, 1)


def test_config_validates_every_registered_name_and_rejects_bad_values() -> None:
    for name in SCHEDULES:
        ScheduleConfig(name).validate("schedule")  # the defaults are valid for every schedule
    with pytest.raises(MLPError, match=r"^schedule\.name='poly' is not one of: constant, cosine, exponential, "):
        ScheduleConfig("poly").validate("schedule")
    with pytest.raises(MLPError, match=r"^schedule\.gamma=0\.0 is invalid: must be in \(0, 1\]$"):
        ScheduleConfig("step", gamma=0.0).validate("schedule")


def test_documented_as_per_step() -> None:
    assert "evaluated per optimizer step (not per epoch)" in " ".join(schedules.__doc__.split())


def test_fit_changes_the_learning_rate_every_step(monkeypatch: pytest.MonkeyPatch) -> None:
    # 10 examples, batch 4 -> 3 steps/epoch (last batch has 2), 2 epochs, warmup 1 epoch, cosine.
    recorded: dict[int, list[tuple[int, float]]] = {}  # per step (opt.t): (parameter, lr) of each piece

    def recording_optimizer(cfg, params, grads):
        opt = make_optimizer(cfg, params, grads)
        step_rows = opt.step_rows

        def record(i: int, rows: slice, lr: float, l2: float = 0.0) -> None:
            recorded.setdefault(opt.t, []).append((i, lr))
            step_rows(i, rows, lr, l2)

        opt.step_rows = record
        return opt

    monkeypatch.setattr(trainer, "make_optimizer", recording_optimizer)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 3)).astype(np.float32)
    y = np.arange(10) % 2
    data = Split(x, y, np.eye(2, dtype=np.float32)[y])
    net = Network([3, 4, 2], "tanh", "glorot_normal", rng)
    cfg = TrainConfig(epochs=2, batch_size=4, lr=0.6, l2=0.0, seed=0, dtype="float32")
    # rmsprop takes plain gradients and the lr through step_rows(lr); the prescaled path (sgd, momentum,
    # nesterov) is shown to apply the same per-step lr in test_trainer.py.
    opt_cfg = OptimizerConfig("rmsprop")
    rows, _ = fit(net, data, data, cfg, opt_cfg, ScheduleConfig("cosine", warmup_epochs=1), rng)
    assert sorted(recorded) == [1, 2, 3, 4, 5, 6]  # six steps
    for pieces in recorded.values():  # every parameter updated in each step, all at that step's lr
        assert {i for i, _ in pieces} == set(range(len(net.parameters())))
        assert len({lr for _, lr in pieces}) == 1
    # warmup: 0.6 * 1/3, 0.6 * 2/3, 0.6; then cosine over 3 steps: progress 0, 1/3, 2/3
    expected = [0.2, 0.4, 0.6, 0.6, 0.3 * (1 + math.cos(math.pi / 3)), 0.3 * (1 + math.cos(2 * math.pi / 3))]
    assert [recorded[t][0][1] for t in sorted(recorded)] == pytest.approx(expected)  # six different steps
    assert [r["lr"] for r in rows] == pytest.approx([0.6, 0.15])  # the log shows each epoch's last step
