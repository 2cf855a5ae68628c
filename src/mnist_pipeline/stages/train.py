"""Stage ``train``: fit the NumPy MLP on the training split, validate each epoch.

All randomness (initialization, per-epoch shuffles) comes from one
``numpy.random.default_rng(train.seed)``, so equal params give a bit-identical
``data/model/model.npz``. Wall-clock times go to ``reports/timing.json`` only,
so every other output compares byte for byte across reruns.

The BLAS kernel, numpy SIMD level and ``compute.chunks`` decide the rounding, the thread count does
not (see :mod:`mnist_pipeline.compute`); they are recorded in the model's metadata.

Writes ``data/model/model.npz``, the per-epoch log in ``dvclive/`` (live, after every epoch; see
:mod:`mnist_pipeline.epoch_log`) and ``reports/timing.json``.
Run: ``python -m mnist_pipeline.stages.train``.
"""

from __future__ import annotations

import logging

import numpy as np

from mnist_pipeline import compute, config
from mnist_pipeline.config import Config
from mnist_pipeline.epoch_log import live_epochs
from mnist_pipeline.io import load_npz, npz_meta, write_json
from mnist_pipeline.mlp.network import Network
from mnist_pipeline.mlp.parallel import Workers
from mnist_pipeline.mlp.trainer import fit, kept_epoch
from mnist_pipeline.model_file import save_network
from mnist_pipeline.paths import FEATURES_DIR, LIVE_DIR, MODEL_FILE, TIMING_FILE
from mnist_pipeline.splits import load_feature_split

log = logging.getLogger(__name__)


def build(cfg: Config, rng: np.random.Generator, threads: int = 1) -> Network:
    """The network ``cfg`` describes, initialized from ``rng``, computing on ``threads`` threads."""
    m = cfg.model
    dtype = np.dtype(cfg.train.dtype)
    return Network(cfg.layer_sizes, m.activation, m.init, rng, dtype, m.dropout, cfg.compute.chunks, Workers(threads))


def main() -> None:
    cfg = config.load()
    fingerprint, threads = compute.apply(cfg.compute.kernels, cfg.compute.chunks)
    d, c = cfg.dataset.num_features, cfg.dataset.num_classes
    train = load_feature_split(FEATURES_DIR / "train.npz", d, c)
    val = load_feature_split(FEATURES_DIR / "val.npz", d, c)
    # Normalization constants: every split carries the same meta; read the small one.
    norm = npz_meta(load_npz(FEATURES_DIR / "val.npz", ["meta"]), FEATURES_DIR / "val.npz")
    rng = np.random.default_rng(cfg.train.seed)
    net = build(cfg, rng, threads)
    # The model is written inside: if that fails, the previous live log is put back with the previous model.
    with live_epochs(LIVE_DIR) as log_epoch:
        rows, seconds = fit(
            net, train, val, cfg.train, cfg.optimizer, cfg.schedule, rng, cfg.dataset.image_shape, log_epoch
        )
        meta = {
            "dataset": cfg.dataset.name,
            "class_names": list(cfg.dataset.class_names),
            "image_shape": list(cfg.dataset.image_shape),
            "normalize": norm["normalize"],
            "mean": norm["mean"],
            "std": norm["std"],
            "init": cfg.model.init,
            "loss": cfg.train.loss,
            "epochs_run": len(rows),
            "weights_epoch": kept_epoch(rows, cfg.train.early_stop),  # the epoch these weights are from
            "compute": fingerprint,
        }
        save_network(MODEL_FILE, net, meta)
    total = sum(seconds)
    write_json(
        TIMING_FILE,
        {
            "train_seconds": round(total, 3),
            "seconds_per_epoch": round(total / len(seconds), 3),
            "epoch_seconds": [round(s, 3) for s in seconds],
        },
    )
    log.info("val_acc %.4f after %d epochs in %.1fs", rows[-1]["val_acc"], len(rows), total)


if __name__ == "__main__":
    from mnist_pipeline.cli import run

    run(main, "train", before=config.enter_compute_environment)
