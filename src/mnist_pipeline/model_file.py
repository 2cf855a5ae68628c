"""The trained model's file: a :class:`~mnist_pipeline.mlp.network.Network` as one ``.npz``.

The file is self-contained: weights ``W0, b0, W1, b1, ...`` plus JSON ``meta`` (the network's
architecture: layer sizes, activation, dtype, dropout; and what the caller adds: normalization,
class names, ...) so that ``predict`` needs nothing else. Written atomically and read without
pickle (see :mod:`mnist_pipeline.io`); loading checks every array against the metadata.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mnist_pipeline.compute import MAX_CHUNKS
from mnist_pipeline.errors import DataError
from mnist_pipeline.io import load_npz, npz_meta, save_npz
from mnist_pipeline.mlp.layers import ACTIVATIONS
from mnist_pipeline.mlp.network import Network
from mnist_pipeline.mlp.parallel import Workers


def save_network(path: str | Path, net: Network, meta: dict[str, Any]) -> None:
    """Write ``net``'s weights and ``meta`` merged with its architecture (which wins) to ``path``."""
    save_npz(path, {**meta, **net.architecture()}, **net.state())


def load_network(path: str | Path, threads: int = 1, fix: str | None = None) -> tuple[Network, dict[str, Any]]:
    """Load a model saved by :func:`save_network`: the network (inference only: no dropout) and its metadata.

    It computes in the row blocks its training used (``compute.chunks`` in the metadata, else 1), so it
    rounds as the train stage's validation did, on ``threads`` threads. ``fix``: what a missing or
    unreadable file's error tells the user to do (default: the pipeline's own, see :func:`load_npz`).

    Raises
    ------
    DataError
        If the file is missing, corrupt or pickled, its metadata lacks the architecture or holds
        impossible values, or an array is missing, does not have the shape the sizes need, or holds
        NaN or infinite values. Shapes are checked before the network is allocated, so metadata
        that claims a huge network costs nothing.
    """
    arrays = load_npz(path, ["meta"], fix)
    meta = npz_meta(arrays, path)
    try:
        sizes, activation, dtype = list(meta["sizes"]), meta["activation"], meta["dtype"]
    except (KeyError, TypeError) as exc:
        raise DataError(f"{path}: model metadata lacks {exc}; retrain with `dvc repro train`") from exc
    if len(sizes) < 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes):
        raise DataError(f"{path}: metadata sizes {sizes} must be at least two positive integers")
    if activation not in ACTIVATIONS:
        raise DataError(f"{path}: unknown activation {activation!r}; valid: {', '.join(ACTIVATIONS.names())}")
    if dtype not in ("float32", "float64"):
        raise DataError(f"{path}: unsupported dtype {dtype!r}; valid: float32, float64")
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
        for name, shape in ((f"W{i}", (fan_in, fan_out)), (f"b{i}", (fan_out,))):
            if name not in arrays:
                raise DataError(f"{path}: missing array {name} for layer sizes {sizes}")
            if arrays[name].shape != shape:
                raise DataError(f"{path}: {name} has shape {arrays[name].shape}, metadata sizes {sizes} need {shape}")
            if arrays[name].dtype.kind != "f" or not np.isfinite(arrays[name]).all():
                raise DataError(
                    f"{path}: {name} holds NaN, infinite or non-float values; retrain with `dvc repro train`"
                )
    chunks = meta.get("compute", {}).get("chunks", 1) if isinstance(meta.get("compute"), dict) else 1
    if not (isinstance(chunks, int) and not isinstance(chunks, bool) and 1 <= chunks <= MAX_CHUNKS):
        raise DataError(f"{path}: metadata compute.chunks {chunks!r} must be an integer from 1 to {MAX_CHUNKS}")
    net = Network(sizes, activation, "zeros", np.random.default_rng(0), dtype, chunks=chunks, workers=Workers(threads))
    net.load_state(arrays)
    return net, meta
