"""The end of a study: a ranked table, the best trial's experiment, and optionally a preset for it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from mnist_pipeline import compose
from mnist_pipeline.check_metrics import align
from mnist_pipeline.errors import ConfigError
from mnist_pipeline.io import atomic_write, write_text
from mnist_pipeline.tune import storage
from mnist_pipeline.tune.space import Space, override

PRESET_DIR = "experiment"  # conf/experiment/<name>.yaml
PRESET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")  # a file name in it: no path, no dot, no option


def ranked(study: optuna.Study) -> list[FrozenTrial]:
    """Complete trials by validation accuracy (best first, ties by number), then the rest by number."""
    trials = storage.counted(study.get_trials(deepcopy=False))
    done = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: (-(t.value or 0.0), t.number))
    return done + [t for t in trials if t.state != TrialState.COMPLETE]


def format_params(trial: FrozenTrial, digits: int | None = None) -> str:
    """``key=value ...`` as ``dvc exp run -S`` takes them; floats to ``digits`` significant digits if given."""
    short = {k: float(f"{v:.{digits}g}") if digits and isinstance(v, float) else v for k, v in trial.params.items()}
    return " ".join(override(k, v) for k, v in short.items()) or "-"


def format_study(study: optuna.Study) -> str:
    """Rank, trial, experiment, params, val.accuracy, train seconds and state (with the error of a failure)."""
    rows = [["Rank", "Trial", "Experiment", "Params", "val.accuracy", "train_s", "State"]]
    rank = 0
    for t in ranked(study):
        complete = t.state == TrialState.COMPLETE
        rank += complete
        seconds = t.user_attrs.get("train_seconds")
        state = t.state.name.lower() + (f": {t.user_attrs['error']}" if t.state == TrialState.FAIL else "")
        rows.append([
            str(rank) if complete else "-", str(t.number), t.user_attrs.get("experiment", "-"), format_params(t, 3),
            f"{t.value:.4f}" if complete else "-", "-" if seconds is None else f"{seconds:.1f}", state,
        ])  # fmt: skip
    return align(rows)


def summary(study: optuna.Study) -> str:
    """Counts by state and the best trial with the commands that bring it into the workspace."""
    trials = ranked(study)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    text = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    best = trials[0] if trials and trials[0].state == TrialState.COMPLETE else None
    if best is None:
        return f"study {study.study_name}: {text or 'no trials'}; no complete trial yet"
    name = best.user_attrs.get("experiment")
    return (
        f"study {study.study_name}: {text}\n"
        f"best: trial {best.number}, experiment {name}, val.accuracy {best.value:.4f} ({format_params(best)})\n"
        f"apply it: dvc exp apply {name}   (run by another worker? first: dvc exp pull origin {name})"
    )


def preset_yaml(trial: FrozenTrial, space: Space, conf_dir: str | Path) -> str:
    """``conf/experiment`` preset text for ``trial``: group choices as defaults overrides, keys nested."""
    values: dict[str, Any] = {**space.fixed, **trial.params}
    groups = {k: v for k, v in values.items() if "." not in k and (Path(conf_dir) / k).is_dir()}
    body: dict[str, Any] = {}
    if groups:
        body["defaults"] = [{f"override /{k}": v} for k, v in groups.items()]
    for dotted, value in values.items():
        if dotted in groups:
            continue
        *parents, leaf = dotted.split(".")
        node = body
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    head = f"# @package _global_\n# Tuning trial {trial.number}: val.accuracy {trial.value:.4f} (mnist_pipeline.tune)\n"
    return head + yaml.safe_dump(body, sort_keys=False)


def write_preset(name: str, trial: FrozenTrial, space: Space, conf_dir: str | Path = compose.CONF_DIR) -> Path:
    """Write ``conf/experiment/<name>.yaml`` for ``trial`` and check that it composes; if it does not, the
    file is put back as it was (or removed). ConfigError for a name that is not a plain file name."""
    if not PRESET_NAME.fullmatch(name):
        raise ConfigError(
            f"--preset {name!r} is not a preset name: use letters, digits, _ and - (it becomes "
            f"{Path(conf_dir) / PRESET_DIR}/<name>.yaml)"
        )
    path = Path(conf_dir) / PRESET_DIR / f"{name}.yaml"
    before = path.read_bytes() if path.is_file() else None
    write_text(path, preset_yaml(trial, space, conf_dir))
    try:
        compose.compose([f"experiment={name}"], conf_dir)
    except BaseException:
        if before is None:
            path.unlink()
        else:
            with atomic_write(path) as f:
                f.write(before)
        raise
    return path
