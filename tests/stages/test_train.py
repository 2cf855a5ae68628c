"""Stage train: one smoke run of ``main()`` on the tiny synthetic MNIST (model, log, reproducibility).

The training itself (:func:`mnist_pipeline.mlp.trainer.fit`) is tested in ``tests/mlp/test_trainer.py``.
"""

from __future__ import annotations

import csv

from mnist_pipeline import paths
from mnist_pipeline.io import load_npz
from mnist_pipeline.model_file import load_network
from mnist_pipeline.stages import featurize, prepare, train


def test_train_main_writes_model_and_log_reproducibly(tiny_workspace) -> None:
    tiny_workspace.write_params(**{"model.hidden": [32], "train.epochs": 3})
    prepare.main()
    featurize.main()
    train.main()
    model = tiny_workspace.root / paths.MODEL_FILE
    first = model.read_bytes()
    with open(tiny_workspace.root / paths.TRAIN_LOG_FILE, newline="") as f:
        log_rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in log_rows] == [1, 2, 3]
    assert float(log_rows[-1]["val_acc"]) > 0.9  # the synthetic digits are learnable

    net, meta = load_network(model)
    assert meta["weights_epoch"] == 3  # no early stopping: the last epoch's weights
    assert net.sizes == [784, 32, 10] and meta["activation"] == tiny_workspace.params["model"]["activation"]
    test = load_npz("data/features/test.npz", ["x", "y"])
    assert (net.predict_proba(test["x"]).argmax(axis=1) == test["y"]).mean() > 0.9

    train.main()
    assert model.read_bytes() == first  # same params -> bit-identical model.npz
