"""The ask-and-tell loop: each trial is one ``dvc exp run``, told back with its validation accuracy.

Every worker runs :func:`optimize` with the same arguments against the same study: the storage
hands out distinct trial numbers, TPE with ``constant_liar`` keeps parallel workers from proposing
the same point, and the budget is the study's (``trials`` counted over all workers), not each
worker's. A failed or diverged run is told FAIL with its error and the loop goes on; an
interrupted one (SIGINT/SIGTERM) is told FAIL, re-queued, and the worker stops.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from mnist_pipeline.errors import ConfigError, PipelineError
from mnist_pipeline.tune import experiment, storage
from mnist_pipeline.tune.space import Space, suggest

log = logging.getLogger(__name__)

SPACE_ATTR = "space"  # study user attr: the search space it was created with


@dataclass(frozen=True)
class Budget:
    trials: int | None  # trials in the study, over all workers
    minutes: float | None  # this worker asks no new trial after this long


def sampler(seed: int, startup_trials: int) -> optuna.samplers.TPESampler:
    """TPE seeded with ``seed``; ``constant_liar`` treats running trials as bad, so parallel workers spread out."""
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True, n_startup_trials=startup_trials)


def load_study(name: str, store: optuna.storages.BaseStorage, space: Space) -> optuna.Study:
    """Create study ``name`` or join it; ConfigError if it exists with another search space."""
    study = optuna.create_study(
        study_name=name, storage=store, direction="maximize", load_if_exists=True,
        sampler=sampler(space.seed, space.startup_trials),
    )  # fmt: skip
    created_with = study.user_attrs.get(SPACE_ATTR)
    if created_with is None:
        study.set_user_attr(SPACE_ATTR, space.name)
    elif created_with != space.name:
        raise ConfigError(f"study {name} searches space {created_with!r}, not {space.name!r}; pick another --study")
    return study


def budget_spent(study: optuna.Study, budget: Budget, deadline: float | None) -> bool:
    """True once the study holds ``budget.trials`` counted trials that are not waiting, or time is up."""
    if deadline is not None and time.monotonic() >= deadline:
        log.info("time budget of %s minutes spent", budget.minutes)
        return True
    trials = storage.counted(study.get_trials(deepcopy=False))
    return budget.trials is not None and sum(t.state != TrialState.WAITING for t in trials) >= budget.trials


def _over_budget(study: optuna.Study, trial: optuna.Trial, budget: Budget) -> bool:
    """True if other workers took the last places of the budget while this one asked."""
    if budget.trials is None:
        return False
    before = [t for t in storage.counted(study.get_trials(deepcopy=False)) if t.number < trial.number]
    return len(before) >= budget.trials


def run_trial(
    study: optuna.Study, space: Space, budget: Budget, dvc: str, remote: str | None, cwd: Path | None
) -> bool:
    """Ask one trial, run its experiment, tell the result (FAIL with the error if it failed).

    Returns False, having run nothing, if other workers spent the budget meanwhile.
    """
    trial = study.ask()
    trial.set_user_attr(storage.WORKER_ATTR, storage.this_worker())  # first: it lets a dead worker's trial be found
    if _over_budget(study, trial, budget):
        trial.set_user_attr(storage.SKIPPED_ATTR, "over budget: other workers took the last trials")
        study.tell(trial, state=TrialState.FAIL)
        return False
    # Seeded per trial number: a one-worker study is reproducible, and parallel workers never share a stream.
    study.sampler = sampler(space.seed + trial.number, space.startup_trials)
    name = experiment.experiment_name(study.study_name, trial.number)
    trial.set_user_attr("experiment", name)
    overrides = suggest(trial, space)
    trial.set_user_attr("overrides", " ".join(overrides))
    try:
        with storage.heartbeat(study, trial):
            experiment.run_experiment(dvc, name, overrides, cwd)
            outcome = experiment.read_outcome(name, cwd)
    except PipelineError as exc:
        trial.set_user_attr("error", str(exc))
        study.tell(trial, state=TrialState.FAIL)
        log.warning("trial %d failed: %s", trial.number, exc)
        return True
    except BaseException as exc:  # interrupted: the params are worth another run
        reason = f"interrupted by {exc}" if str(exc) else f"interrupted ({type(exc).__name__})"
        storage.fail_and_requeue(study, study._storage.get_trial(trial._trial_id), reason)
        experiment.remove_stale_runs({name}, cwd)
        raise
    trial.set_user_attr("train_seconds", outcome.train_seconds)
    study.tell(trial, outcome.val_accuracy)
    log.info("trial %d: %s val.accuracy %.4f", trial.number, name, outcome.val_accuracy)
    if remote is not None:
        try:
            experiment.push_experiment(dvc, remote, name, cwd)
        except PipelineError as exc:  # the result is in the study; the ref stays here to push later
            log.warning("%s", exc)
    return True


def optimize(study: optuna.Study, space: Space, budget: Budget, dvc: str, remote: str | None, cwd: Path | None) -> int:
    """Run trials until the budget is spent; return how many this worker ran."""
    deadline = None if budget.minutes is None else time.monotonic() + 60 * budget.minutes
    ran = 0
    while True:
        storage.recover(study)
        over = {
            str(t.user_attrs.get("experiment")) for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        }
        for name in experiment.remove_stale_runs(over, cwd):
            log.info("removed the temporary copy of killed run %s", name)
        if budget_spent(study, budget, deadline) or not run_trial(study, space, budget, dvc, remote, cwd):
            return ran
        ran += 1
