"""Stage train: one smoke run of ``main()`` on the tiny synthetic MNIST (model, log, reproducibility).

The training itself (:func:`mnist_pipeline.mlp.trainer.fit`) is tested in ``tests/mlp/test_trainer.py``.
"""

from __future__ import annotations

import json

import pytest

from mnist_pipeline import paths
from mnist_pipeline.epoch_log import METRICS, files, metric_file, read_history
from mnist_pipeline.io import load_npz
from mnist_pipeline.mlp.errors import MLPError
from mnist_pipeline.model_file import load_network
from mnist_pipeline.stages import featurize, prepare, train


def _outputs(root) -> dict[str, bytes]:
    return {p.as_posix(): (root / p).read_bytes() for p in [paths.MODEL_FILE, *files(paths.LIVE_DIR)]}


def test_train_main_writes_model_and_log_reproducibly(tiny_workspace) -> None:
    tiny_workspace.write_params(**{"model.hidden": [32], "train.epochs": 3})
    prepare.main()
    featurize.main()
    train.main()
    model = tiny_workspace.root / paths.MODEL_FILE
    first = model.read_bytes()
    history = read_history(tiny_workspace.root / paths.LIVE_DIR)
    assert history["epoch"].tolist() == [1, 2, 3]
    assert history["val_acc"][-1] > 0.9  # the synthetic digits are learnable
    live = json.loads((tiny_workspace.root / paths.LIVE_DIR / "metrics.json").read_text(encoding="utf-8"))
    assert live["step"] == 3 and live["val_acc"] == history["val_acc"][-1]
    assert set(live) == {*METRICS, "step"}
    for key in METRICS:  # step and value only: no timestamp column
        header = (tiny_workspace.root / metric_file(paths.LIVE_DIR, key)).read_text(encoding="utf-8").splitlines()[0]
        assert header == f"step\t{key}"

    net, meta = load_network(model)
    assert meta["weights_epoch"] == 3  # no early stopping: the last epoch's weights
    assert net.sizes == [784, 32, 10] and meta["activation"] == tiny_workspace.params["model"]["activation"]
    test = load_npz("data/features/test.npz", ["x", "y"])
    assert (net.predict_proba(test["x"]).argmax(axis=1) == test["y"]).mean() > 0.9

    outputs = _outputs(tiny_workspace.root)
    train.main()
    assert model.read_bytes() == first  # same params -> bit-identical model.npz
    assert _outputs(tiny_workspace.root) == outputs  # and live log


def test_a_diverged_run_leaves_model_and_live_log_as_they_were(tiny_workspace) -> None:
    tiny_workspace.write_params(**{"model.hidden": [32], "train.epochs": 2})
    prepare.main()
    featurize.main()
    train.main()
    before = _outputs(tiny_workspace.root)
    tiny_workspace.write_params(
        **{"model.hidden": [32], "train.epochs": 3, "train.lr": 1e6, "schedule.name": "constant"}
    )
    with pytest.raises(MLPError, match="diverged"):
        train.main()
    assert _outputs(tiny_workspace.root) == before


def test_a_failed_model_write_puts_the_previous_live_log_back(tiny_workspace, monkeypatch) -> None:
    tiny_workspace.write_params(**{"model.hidden": [32], "train.epochs": 2})
    prepare.main()
    featurize.main()
    train.main()
    before = _outputs(tiny_workspace.root)
    tiny_workspace.write_params(**{"model.hidden": [32], "train.epochs": 3})

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(train, "save_network", disk_full)
    with pytest.raises(OSError, match="No space left"):
        train.main()
    assert _outputs(tiny_workspace.root) == before  # the 2-epoch model with its own 2-epoch log
