"""Stage evaluate: ``main()`` on the tiny synthetic MNIST writes metrics that agree with its
predictions and the model, byte-identically on a rerun, and refuses a model trained for another dataset.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from mnist_pipeline import paths
from mnist_pipeline.errors import DataError
from mnist_pipeline.io import load_npz
from mnist_pipeline.model_file import load_network, save_network
from mnist_pipeline.stages import evaluate, featurize, prepare, train

OUTPUTS = [
    paths.METRICS_FILE,
    paths.CLASSIFICATION_REPORT_FILE,
    paths.CLASSIFICATION_REPORT_TEXT,
    paths.PREDICTIONS_FILE,
    paths.COMPUTE_FILE,
]


@pytest.fixture
def trained(tiny_workspace):
    """The tiny workspace after prepare, featurize and train."""
    for stage in (prepare, featurize, train):
        stage.main()
    return tiny_workspace


def test_main_writes_metrics_that_match_its_predictions_and_the_model(trained) -> None:
    evaluate.main()
    first = {path: path.read_bytes() for path in OUTPUTS}
    metrics = json.loads(paths.METRICS_FILE.read_text())
    with open(paths.PREDICTIONS_FILE, newline="") as f:
        rows = [(int(r["actual"]), int(r["predicted"])) for r in csv.DictReader(f)]
    test = load_npz(paths.FEATURES_DIR / "test.npz", ["x", "y"])
    actual, predicted = np.array(rows).T
    assert np.array_equal(actual, test["y"])  # every test example, in order
    net, meta = load_network(paths.MODEL_FILE)
    assert np.array_equal(predicted, net.predict_proba(test["x"]).argmax(axis=1))
    assert metrics["test"]["accuracy"] == pytest.approx(np.mean(actual == predicted))
    assert metrics["test"]["accuracy"] > 0.9  # the synthetic digits are learnable; chance is 0.1
    assert set(metrics) == {"test", "val"} and 0 < metrics["val"]["accuracy"] <= 1
    report = json.loads(paths.CLASSIFICATION_REPORT_FILE.read_text())
    assert metrics["test"]["macro_f1"] == report["macro avg"]["f1-score"]
    assert list(report)[:10] == trained.params["dataset"]["class_names"]
    compute = json.loads(paths.COMPUTE_FILE.read_text())
    assert set(compute) == {"train", "evaluate"} and compute["train"] == meta.get("compute")

    evaluate.main()
    assert {path: path.read_bytes() for path in OUTPUTS} == first  # same model -> byte-identical outputs


def test_main_refuses_a_model_trained_for_another_dataset(trained) -> None:
    trained.write_params(**{"dataset.name": "other"})
    with pytest.raises(DataError, match=r"model\.npz was trained for .* but the config is other"):
        evaluate.main()
    assert not paths.METRICS_FILE.exists()


def test_main_refuses_to_write_non_finite_metrics(trained) -> None:
    net, meta = load_network(paths.MODEL_FILE)
    for layer in net.dense:
        layer.params["W"][...] = 1e30  # finite weights whose logits overflow to inf: the loss is NaN
    save_network(paths.MODEL_FILE, net, meta)
    nan_loss = r"^test\.loss is nan: data/model/model\.npz gives non-finite outputs"
    with np.errstate(all="ignore"), pytest.raises(DataError, match=nan_loss):
        evaluate.main()
    assert not paths.METRICS_FILE.exists()
