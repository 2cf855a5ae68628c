"""Stage ``evaluate``: the one and only use of the test set.

Loads ``data/model/model.npz``, predicts the test split (and the validation
split, for ``val`` metrics), and writes ``reports/metrics.json``,
``reports/classification_report.{json,txt}`` (y_true first, scikit-learn's
definitions), ``reports/predictions.csv`` (``actual,predicted``) and
``reports/compute.json``: the compute fingerprints of train (from the model's
metadata) and of this stage, the key that says whether two runs' metrics are
comparable bit for bit (see :mod:`mnist_pipeline.compute`).

Run: ``python -m mnist_pipeline.stages.evaluate``.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from mnist_pipeline import compute, config
from mnist_pipeline.errors import DataError
from mnist_pipeline.io import write_csv, write_json, write_text
from mnist_pipeline.metrics import classification_report, format_report
from mnist_pipeline.mlp.trainer import evaluate_split
from mnist_pipeline.model_file import load_network
from mnist_pipeline.paths import (
    CLASSIFICATION_REPORT_FILE,
    CLASSIFICATION_REPORT_TEXT,
    COMPUTE_FILE,
    FEATURES_DIR,
    METRICS_FILE,
    MODEL_FILE,
    PREDICTIONS_FILE,
)
from mnist_pipeline.splits import load_feature_split

log = logging.getLogger(__name__)


def main() -> None:
    cfg = config.load()
    fingerprint, threads = compute.apply(cfg.compute.kernels, cfg.compute.chunks)
    net, meta = load_network(MODEL_FILE, threads)
    d, c = cfg.dataset.num_features, cfg.dataset.num_classes
    if net.sizes[0] != d or net.sizes[-1] != c or meta.get("dataset") != cfg.dataset.name:
        raise DataError(
            f"{MODEL_FILE} was trained for {meta.get('dataset')} with sizes {net.sizes}, "
            f"but the config is {cfg.dataset.name} ({d} features, {c} classes); rerun `dvc repro train`"
        )
    test = load_feature_split(FEATURES_DIR / "test.npz", d, c)
    val = load_feature_split(FEATURES_DIR / "val.npz", d, c)
    test_loss, test_acc = evaluate_split(net, test, cfg.evaluate.batch_size)
    val_loss, val_acc = evaluate_split(net, val, cfg.evaluate.batch_size)
    y_pred = net.predict_proba(test.x, cfg.evaluate.batch_size).argmax(axis=1)
    names = list(cfg.dataset.class_names)
    report = classification_report(test.y, y_pred, names)
    macro = report["macro avg"]
    assert isinstance(macro, dict)  # the averages are dicts; "accuracy" alone is a float
    metrics = {
        "test": {
            "accuracy": test_acc,
            "loss": round(test_loss, 8),
            "macro_precision": macro["precision"],
            "macro_recall": macro["recall"],
            "macro_f1": macro["f1-score"],
        },
        "val": {"accuracy": val_acc, "loss": round(val_loss, 8)},
    }
    for split, values in metrics.items():
        for name, value in values.items():
            if not math.isfinite(value):
                raise DataError(f"{split}.{name} is {value}: {MODEL_FILE} gives non-finite outputs; retrain it")
    write_json(METRICS_FILE, metrics)
    write_json(COMPUTE_FILE, {"train": meta.get("compute"), "evaluate": fingerprint})
    write_json(CLASSIFICATION_REPORT_FILE, report)
    write_text(CLASSIFICATION_REPORT_TEXT, format_report(report, names))
    write_csv(PREDICTIONS_FILE, ("actual", "predicted"), np.stack([test.y, y_pred], axis=1).tolist())
    log.info("test accuracy %.4f, loss %.4f, macro F1 %.4f", test_acc, test_loss, metrics["test"]["macro_f1"])


if __name__ == "__main__":
    from mnist_pipeline.cli import run

    run(main, "evaluate", before=config.enter_compute_environment)
