"""Stage ``report``: figures and a one-page markdown report from the run's own outputs.

A stage of its own after ``evaluate``, so that changing a figure option
(``report.*``) reruns only this stage. It reads the per-epoch log in ``dvclive/``,
``reports/metrics.json``, ``reports/classification_report.json``,
``reports/predictions.csv`` and recomputes the test probabilities from
``data/model/model.npz`` and ``data/features/test.npz`` (checked against
``predictions.csv``) for the misclassified grid.

Writes ``reports/figures/{learning_curves,confusion_matrix,misclassified,
weights,per_class}.png`` and ``reports/report.md``. ``report.md`` also shows
the wall-clock times of ``reports/timing.json`` when present ("n/a"
otherwise); that file is deliberately not a DVC dependency (see dvc.yaml), so
``report.md`` is the one tracked output holding wall-clock numbers.

Run: ``python -m mnist_pipeline.stages.report``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mnist_pipeline import compute, config, figures
from mnist_pipeline.config import Config
from mnist_pipeline.epoch_log import read_history
from mnist_pipeline.errors import DataError
from mnist_pipeline.io import atomic_write, json_object, load_npz, npz_meta, write_text
from mnist_pipeline.metrics import AVERAGES, METRIC_KEYS, confusion_matrix
from mnist_pipeline.model_file import load_network
from mnist_pipeline.params import as_dict, is_finite_number, shown
from mnist_pipeline.paths import (
    CLASSIFICATION_REPORT_FILE,
    COMPUTE_FILE,
    FEATURES_DIR,
    FIGURES_DIR,
    LIVE_DIR,
    METRICS_FILE,
    MODEL_FILE,
    PREDICTIONS_FILE,
    REPORT_FILE,
    TIMING_FILE,
    read_capped_text,
)
from mnist_pipeline.text import markdown

log = logging.getLogger(__name__)

FIGURE_TITLES = {
    "learning_curves": "Learning curves",
    "confusion_matrix": "Confusion matrix",
    "per_class": "Per-class precision, recall and F1",
    "misclassified": "Most confidently misclassified test images",
    "weights": "First-layer weights",
}
CONFIG_GROUPS = ("preset", "model", "optimizer", "schedule", "train", "prepare", "featurize", "compute")


@dataclass(frozen=True)
class RunOutputs:
    """Everything the report shows, loaded from one run's files."""

    train_log: dict[str, np.ndarray]  # epoch_log.read_history: "epoch", "train_loss", ... -> (E,)
    metrics: dict[str, Any]  # metrics.json
    class_report: dict[str, Any]  # classification_report.json
    y_true: np.ndarray  # (N,) test labels
    proba: np.ndarray  # (N, C) test probabilities
    images: np.ndarray  # (N, rows, cols) test pixels in [0, 1]
    first_weights: np.ndarray  # (D, K) first Dense layer's W
    hidden_layers: int
    weights_epoch: int  # the epoch the model's weights are from (its metadata)
    timing: dict[str, Any] | None  # timing.json, if present
    compute: dict[str, Any]  # compute.json: {"train": fingerprint, "evaluate": fingerprint}


def render_figures(cfg: Config, run: RunOutputs) -> dict[str, bytes]:
    """Figure name -> PNG bytes, for every figure in :data:`FIGURE_TITLES`."""
    names, dpi = list(cfg.dataset.class_names), cfg.report.dpi
    cm = confusion_matrix(run.y_true, run.proba.argmax(axis=1), len(names))
    templates = names if run.hidden_layers == 0 else None
    return {
        "learning_curves": figures.learning_curves(run.train_log, dpi=dpi),
        "confusion_matrix": figures.confusion_matrix(cm, names, dpi=dpi),
        "per_class": figures.per_class(run.class_report, names, dpi=dpi),
        "misclassified": figures.misclassified(
            run.images, run.y_true, run.proba, names, cfg.report.misclassified, dpi=dpi
        ),
        "weights": figures.weights(
            run.first_weights, cfg.dataset.image_shape, cfg.report.max_units, templates, dpi=dpi
        ),
    }


def _num(value: float) -> str:
    return f"{value:.4f}"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """A Markdown table; every cell escaped (:func:`mnist_pipeline.text.markdown`), so it shows as itself."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(markdown(str(v)) for v in row) + " |" for row in rows]


def _scores(row: dict[str, float]) -> list[str]:
    return [*(_num(row[k]) for k in ("precision", "recall", "f1-score")), str(int(row["support"]))]


def _config_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)  # true/false, [256, 128], 1e-08


def render_markdown(cfg: Config, run: RunOutputs) -> str:
    """The one-page ``report.md``: every number comes from ``run`` or ``cfg``."""
    ds, test, val = cfg.dataset, run.metrics["test"], run.metrics["val"]
    best = figures.max_val_acc_index(run.train_log)
    epochs = len(run.train_log["epoch"])
    kept = "the last" if cfg.train.early_stop == "none" else f"early stopping on {cfg.train.early_stop}"
    timing = run.timing or {}
    seconds = [timing.get(k, "n/a") for k in ("train_seconds", "seconds_per_epoch")]
    lines = [
        f"# Run report: {markdown(ds.name)}",
        "",
        "Rendered by the `report` stage from this run's own outputs (`params.yaml`, `reports/*.json`, "
        "`reports/*.csv`, `data/model/model.npz`); no number here is written by hand.",
        "",
        "## Reproduce",
        "",
        "```sh",
        "make repro   # creates .venv from requirements.lock, then runs `dvc repro`",
        "```",
        "",
        "`params.yaml` is the composition of `conf/` (`make params ARGS='overrides'` rewrites it); "
        "`dvc repro` then reruns exactly the stages whose code, data or parameters changed. Set "
        "`DATA_MIRROR=/path/to/files` to download from a local copy; files are verified against the checksums below.",
        "",
        "## Headline metrics",
        "",
        *_table(
            ["metric", "value"],
            [
                ["test accuracy", _num(test["accuracy"])],
                ["test loss", _num(test["loss"])],
                ["test macro F1", _num(test["macro_f1"])],
                ["validation accuracy", _num(val["accuracy"])],
                ["validation loss", _num(val["loss"])],
                ["weights from epoch", f"{run.weights_epoch} of {epochs} ({kept})"],
                [
                    "max validation accuracy",
                    f"{_num(run.train_log['val_acc'][best])} at epoch {run.train_log['epoch'][best]}",
                ],
                ["train seconds", seconds[0]],
                ["seconds per epoch", seconds[1]],
            ],
        ),
        "",
        f"Times are wall clock from `{TIMING_FILE.as_posix()}` (machine-dependent, not tracked by DVC); "
        "all other numbers are deterministic.",
        "",
        "## Dataset",
        "",
        f"Dataset {markdown(ds.name)}: {ds.image_shape[0]}x{ds.image_shape[1]} images, {ds.num_classes} classes "
        f"({', '.join(map(markdown, ds.class_names))}); validation split of {cfg.featurize.val_size} training examples "
        f"(stratified: {str(cfg.featurize.stratify).lower()}, seed {cfg.featurize.seed}); "
        f"{len(run.y_true)} test examples.",
        "",
        *_table(["file", "bytes", "sha256"], [[f.name, f.size, f.sha256] for f in ds.files.values()]),
        "",
        "## Configuration",
        "",
        *_table(
            ["group", "parameters"],
            [
                [g, ", ".join(f"{k}={_config_value(v)}" for k, v in as_dict(getattr(cfg, g)).items())]
                for g in CONFIG_GROUPS
            ],
        ),
        "",
        "## Compute fingerprint",
        "",
        "What decided the floating-point rounding (`reports/compute.json`): runs with equal fingerprints, "
        "params and data give bit-identical results; see README, Reproducibility.",
        "",
        *_fingerprint_table(run.compute),
        "",
        "## Per-class results (test set)",
        "",
        *_table(
            ["class", "precision", "recall", "F1", "support"],
            [[name, *_scores(run.class_report[name])] for name in (*ds.class_names, *AVERAGES)],
        ),
        "",
        "## Figures",
        "",
    ]
    for name, title in FIGURE_TITLES.items():
        lines += [f"### {title}", "", f"![{title}](figures/{name}.png)", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _fingerprint_table(fingerprints: dict[str, Any]) -> list[str]:
    stages = [s for s in ("train", "evaluate") if isinstance(fingerprints.get(s), dict)]
    fields = sorted({k for s in stages for k in fingerprints[s]})
    show = [[f, *(_config_value(fingerprints[s].get(f, "-")) for s in stages)] for f in fields]
    return _table(["field", *stages], show) if stages else ["(no fingerprint recorded)"]


PREDICTIONS_CAP = 64 << 20  # bytes of predictions.csv: "actual,predicted" for a few million test images


def _read_predictions(path: Path, expected: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``actual`` and ``predicted`` columns of ``predictions.csv`` (``expected`` rows) as int64 arrays."""
    fix = "rerun `dvc repro evaluate`"
    try:
        rows: list[dict[str, str]] = []
        for row in csv.DictReader(io.StringIO(read_capped_text(path, fix, PREDICTIONS_CAP), newline="")):
            if len(rows) == expected:  # stop here: a row more is already wrong, whatever the file still holds
                raise DataError(f"{path} has more rows than the {expected} test examples; {fix}")
            rows.append(row)
        columns = tuple(np.array([row[k] for row in rows], dtype=np.int64) for k in ("actual", "predicted"))
    except FileNotFoundError as exc:
        raise DataError(f"{path} is missing; run `dvc repro`") from exc
    except (csv.Error, KeyError, ValueError, TypeError) as exc:
        raise DataError(
            f"{path} is not evaluate's actual,predicted table ({type(exc).__name__}: {exc}); {fix}"
        ) from exc
    if not rows:
        raise DataError(f"{path} has no rows; {fix}")
    return columns[0], columns[1]


def _numbers(data: Any, path: Path, section: str, keys: Sequence[str]) -> None:
    """DataError unless ``data[section][key]`` is a finite number for every key."""
    part = data.get(section) if isinstance(data, dict) else None
    for key in keys:
        value = part.get(key) if isinstance(part, dict) else None
        if not is_finite_number(value):
            raise DataError(
                f"{path}: {section}.{key} is {shown(value)}, not a finite number; rerun `dvc repro evaluate`"
            )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        text = read_capped_text(path, "rerun `dvc repro evaluate`")
    except FileNotFoundError as exc:
        raise DataError(f"{path} is missing; run `dvc repro`") from exc
    return json_object(text, str(path), "rerun `dvc repro evaluate`")


def load_run(cfg: Config, threads: int = 1) -> RunOutputs:
    """Load one run's outputs, checking that the model reproduces ``predictions.csv``."""
    net, meta = load_network(MODEL_FILE, threads)
    test = load_npz(FEATURES_DIR / "test.npz", ["x", "y", "meta"])
    norm = npz_meta(test, FEATURES_DIR / "test.npz")
    proba = net.predict_proba(test["x"], cfg.evaluate.batch_size)  # (N, C), as evaluate computes it
    actual, predicted = _read_predictions(PREDICTIONS_FILE, len(test["y"]))
    if not (np.array_equal(actual, test["y"]) and np.array_equal(predicted, proba.argmax(axis=1))):
        raise DataError(f"{PREDICTIONS_FILE} does not match {MODEL_FILE} on the test set; rerun `dvc repro`")
    pixels = test["x"] * np.float32(norm["std"]) + np.float32(norm["mean"])  # undo prepare's normalization
    metrics, class_report = _read_json(METRICS_FILE), _read_json(CLASSIFICATION_REPORT_FILE)
    _numbers(metrics, METRICS_FILE, "test", ("accuracy", "loss", "macro_f1"))
    _numbers(metrics, METRICS_FILE, "val", ("accuracy", "loss"))
    for row in (*cfg.dataset.class_names, *AVERAGES):
        _numbers(class_report, CLASSIFICATION_REPORT_FILE, row, METRIC_KEYS)
    return RunOutputs(
        train_log=read_history(LIVE_DIR),
        metrics=metrics,
        class_report=class_report,
        y_true=test["y"].astype(np.int64),
        proba=proba,
        images=np.clip(pixels, 0.0, 1.0).reshape(-1, *cfg.dataset.image_shape),
        first_weights=net.dense[0].params["W"],
        hidden_layers=len(net.sizes) - 2,
        weights_epoch=meta["weights_epoch"],
        timing=_read_json(TIMING_FILE) if TIMING_FILE.exists() else None,
        compute=_read_json(COMPUTE_FILE),
    )


def main() -> None:
    cfg = config.load()
    _, threads = compute.apply(cfg.compute.kernels, cfg.compute.chunks)
    run = load_run(cfg, threads)
    for name, png in render_figures(cfg, run).items():
        with atomic_write(FIGURES_DIR / f"{name}.png") as f:
            f.write(png)
    write_text(REPORT_FILE, render_markdown(cfg, run))
    log.info("wrote %s and %d figures in %s", REPORT_FILE, len(FIGURE_TITLES), FIGURES_DIR)


if __name__ == "__main__":
    from mnist_pipeline.cli import run

    run(main, "report", before=config.enter_compute_environment)
