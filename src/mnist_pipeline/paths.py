"""Every file the stages hand each other, in one place; ``dvc.yaml`` names the same paths.

Relative to the repository root, where DVC runs each stage. A stage reads what an earlier one
wrote by these names, never by importing that stage.
"""

from __future__ import annotations

from pathlib import Path

RAW_DIR = Path("data/raw")  # download: the four verified .gz files
PREPARED_DIR = Path("data/prepared")  # prepare: {train,test}.npz, normalized pixels and labels
FEATURES_DIR = Path("data/features")  # featurize: {train,val,test}.npz, with one-hot labels
MODEL_FILE = Path("data/model/model.npz")  # train: weights and metadata

REPORTS_DIR = Path("reports")
TRAIN_LOG_FILE = REPORTS_DIR / "train_log.csv"  # train: one row per epoch
TIMING_FILE = REPORTS_DIR / "timing.json"  # train: wall clock, deliberately no stage's output
METRICS_FILE = REPORTS_DIR / "metrics.json"  # evaluate
CLASSIFICATION_REPORT_FILE = REPORTS_DIR / "classification_report.json"  # evaluate
CLASSIFICATION_REPORT_TEXT = REPORTS_DIR / "classification_report.txt"  # evaluate
PREDICTIONS_FILE = REPORTS_DIR / "predictions.csv"  # evaluate: actual,predicted per test image
COMPUTE_FILE = REPORTS_DIR / "compute.json"  # evaluate: the compute fingerprints of train and evaluate
REPORT_FILE = REPORTS_DIR / "report.md"  # report
FIGURES_DIR = REPORTS_DIR / "figures"  # report
