"""One measured run of our trainer (``ours``) or of the bare-GEMM ``floor``, inside a worker process.

``ours`` is the product: :class:`~mnist_pipeline.mlp.network.Network` trained by
:func:`~mnist_pipeline.mlp.trainer.fit`, whose per-epoch seconds cover the shuffle, the gather and every
batch step (not the validation pass after the epoch). The ``floor`` times only the matrix products such
an epoch needs (:func:`~mnist_pipeline.bench.flops.step_gemms`), as bare ``numpy.matmul(..., out=...)``
calls on preallocated float32 buffers: no trainer can do the same GEMMs in less time with this BLAS.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from mnist_pipeline.bench.configs import BenchConfig
from mnist_pipeline.bench.flops import batch_sizes, layer_dims
from mnist_pipeline.mlp.network import Network
from mnist_pipeline.mlp.optimizers import OptimizerConfig
from mnist_pipeline.mlp.parallel import Workers
from mnist_pipeline.mlp.schedules import ScheduleConfig
from mnist_pipeline.mlp.trainer import Split, TrainConfig, evaluate_split, fit
from mnist_pipeline.splits import load_feature_split


def load_splits(features_dir: Path, cfg: BenchConfig) -> dict[str, Split]:
    """The featurize stage's ``train``, ``val`` and ``test`` splits, shape-checked against ``cfg.sizes``."""
    d, c = cfg.sizes[0], cfg.sizes[-1]
    return {name: load_feature_split(features_dir / f"{name}.npz", d, c) for name in ("train", "val", "test")}


def digest(arrays: Iterable[np.ndarray]) -> str:
    """Short SHA-256 of the arrays' bytes: shows two processes started from identical weights or orders."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def initial_network(cfg: BenchConfig, chunks: int = 1, threads: int = 1) -> tuple[Network, np.random.Generator]:
    """Our network initialized from ``default_rng(cfg.seed)``, and that generator (next: epoch orders);
    it computes in ``chunks`` row blocks on ``threads`` threads, as the train stage does."""
    rng = np.random.default_rng(cfg.seed)
    return Network(list(cfg.sizes), cfg.activation, cfg.init, rng, np.float32, 0.0, chunks, Workers(threads)), rng


def epoch_orders(rng: np.random.Generator, n: int, epochs: int) -> list[np.ndarray]:
    """The permutations ``fit`` will draw from ``rng`` (one per epoch), drawn from a copy of it."""
    bit_generator = type(rng.bit_generator)()
    bit_generator.state = rng.bit_generator.state
    twin = np.random.Generator(bit_generator)
    return [twin.permutation(n) for _ in range(epochs)]


def run_ours(cfg: BenchConfig, splits: dict[str, Split], chunks: int, threads: int) -> dict[str, Any]:
    """Train with the product trainer, ``chunks`` on ``threads`` threads (as the train stage runs it when the
    caller limits BLAS to one thread per call); per-epoch seconds as ``fit`` measures them, then test accuracy."""
    net, rng = initial_network(cfg, chunks, threads)
    init_sha = digest(p for _, p, _ in net.parameters())
    order_sha = digest(epoch_orders(rng, len(splits["train"].y), cfg.epochs))
    train_cfg = TrainConfig(cfg.epochs, cfg.batch_size, cfg.lr, cfg.l2, cfg.seed, "float32")
    opt_cfg = OptimizerConfig("momentum", momentum=cfg.momentum)
    start = time.perf_counter()
    rows, seconds = fit(net, splits["train"], splits["val"], train_cfg, opt_cfg, ScheduleConfig("constant"), rng)
    wall = time.perf_counter() - start
    _, test_acc = evaluate_split(net, splits["test"])
    return {
        "epoch_seconds": seconds,
        "fit_wall_seconds": wall,  # includes the validation pass after each epoch
        "test_acc": test_acc,
        "final_train_loss": rows[-1]["train_loss"],
        "param_dtypes": sorted({p.dtype.name for _, p, _ in net.parameters()}),
        "init_sha256": init_sha,
        "order_sha256": order_sha,
    }


def run_floor(cfg: BenchConfig, n: int) -> dict[str, Any]:
    """Time, per epoch, only the GEMMs a training epoch of ``cfg`` does (same shapes, order and batches)."""
    dims = layer_dims(cfg.sizes)
    b_max = cfg.batch_size
    rng = np.random.default_rng(0)

    def normal(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape, dtype=np.float32)

    xs = [normal(b_max, i) for i, _ in dims]  # (B, in): layer inputs
    ws = [normal(i, o) for i, o in dims]  # (in, out)
    gs = [normal(b_max, o) for _, o in dims]  # (B, out): gradients w.r.t. layer outputs
    zs = [np.empty((b_max, o), np.float32) for _, o in dims]  # forward outputs
    dws = [np.empty((i, o), np.float32) for i, o in dims]
    dxs = [np.empty((b_max, i), np.float32) for i, _ in dims]
    batches = batch_sizes(n, b_max)
    seconds = []
    for _ in range(cfg.epochs):
        start = time.perf_counter()
        for b in batches:
            for x, w, z in zip(xs, ws, zs, strict=True):
                np.matmul(x[:b], w, out=z[:b])  # Z = X W
            for layer in reversed(range(len(dims))):
                np.matmul(xs[layer][:b].T, gs[layer][:b], out=dws[layer])  # dW = X^T G
                if layer > 0:
                    np.matmul(gs[layer][:b], ws[layer].T, out=dxs[layer][:b])  # dX = G W^T
        seconds.append(time.perf_counter() - start)
    return {"epoch_seconds": seconds, "batches_per_epoch": len(batches)}
