"""A small search space for the tune tests (1-epoch trials of fast models, a conditional key, each param type),
and how a test sees a worker's trial in its train stage."""

from __future__ import annotations

from pathlib import Path

import optuna

from mnist_pipeline.tune.experiment import LOG_DIR

TINY_SPACE = {
    "trials": 4,
    "seed": 3,
    "fixed": {"train.epochs": 1},
    "params": {
        "train.lr": {"type": "float", "low": 0.02, "high": 0.4, "log": True},
        "model": {"type": "categorical", "choices": ["mlp_64_sigmoid", "softmax_regression"]},
        "optimizer": {"type": "categorical", "choices": ["momentum", "sgd"]},
        "optimizer.momentum": {"type": "float", "low": 0.5, "high": 0.95, "when": {"optimizer": ["momentum"]}},
        "train.batch_size": {"type": "int", "low": 32, "high": 128, "step": 32},
    },
}


def train_running(clone: Path, storage: str, study: str) -> bool:
    """True while a RUNNING trial of ``study`` is in its train stage in the worker clone ``clone``."""
    try:
        running = optuna.load_study(study_name=study, storage=storage).get_trials(
            states=(optuna.trial.TrialState.RUNNING,)
        )
    except KeyError:  # the study is not created yet
        return False
    logs = [clone / LOG_DIR / f"{t.user_attrs.get('experiment')}.log" for t in running]
    return any(log.exists() and "Running stage 'train'" in log.read_text(errors="replace") for log in logs)
