"""Model file: ``save_network`` -> ``load_network`` gives back the same network and metadata, byte-stable.

Files that lie (arrays that do not fit the metadata, missing keys, impossible values) are in
``tests/reliability/test_hostile_inputs.py``; pickled ones in ``tests/reliability/test_no_pickle.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from mnist_pipeline.errors import DataError
from mnist_pipeline.io import save_npz
from mnist_pipeline.mlp.network import Network
from mnist_pipeline.model_file import load_network, save_network


def network(seed: int = 0) -> Network:
    return Network([6, 5, 3], "tanh", "glorot_normal", np.random.default_rng(seed), np.float64, dropout=0.25)


def test_round_trip_keeps_weights_architecture_and_metadata(tmp_path: Path) -> None:
    net = network()
    save_network(tmp_path / "m.npz", net, {"dataset": "mnist", "sizes": "the network's own win"})

    loaded, meta = load_network(tmp_path / "m.npz")

    assert meta == {"dataset": "mnist", "sizes": [6, 5, 3], "activation": "tanh", "dtype": "float64", "dropout": 0.25}
    assert loaded.architecture() == {**net.architecture(), "dropout": 0.0}  # loaded for inference
    assert loaded.state().keys() == net.state().keys()
    for name, w in net.state().items():
        assert loaded.state()[name].dtype == np.float64
        np.testing.assert_array_equal(loaded.state()[name], w)
    x = np.random.default_rng(1).standard_normal((4, 6))
    np.testing.assert_array_equal(loaded.predict_proba(x), net.predict_proba(x))


def test_equal_networks_and_metadata_give_equal_bytes(tmp_path: Path) -> None:
    save_network(tmp_path / "a.npz", network(seed=0), {"dataset": "mnist"})
    save_network(tmp_path / "b.npz", network(seed=0), {"dataset": "mnist"})
    save_network(tmp_path / "c.npz", network(seed=1), {"dataset": "mnist"})
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    assert (tmp_path / "a.npz").read_bytes() != (tmp_path / "c.npz").read_bytes()


def test_unknown_activation_in_metadata_lists_the_valid_ones(tmp_path: Path) -> None:
    path = tmp_path / "m.npz"
    save_npz(path, {"sizes": [2, 2], "activation": "swish", "dtype": "float32"}, W0=np.zeros((2, 2)), b0=np.zeros(2))
    message = "unknown activation 'swish'; valid: gelu, identity, leaky_relu, relu, sigmoid, tanh"
    with pytest.raises(DataError, match=f"^{re.escape(f'{path}: {message}')}$"):
        load_network(path)


def test_non_finite_weights_are_refused(tmp_path: Path) -> None:
    net = network()
    net.dense[0].params["b"][1] = np.inf
    save_network(tmp_path / "m.npz", net, {})
    with pytest.raises(DataError, match=r"m\.npz: b0 holds NaN, infinite or non-float values; retrain"):
        load_network(tmp_path / "m.npz")


def test_metadata_claiming_a_huge_network_is_refused_before_anything_is_allocated(tmp_path: Path) -> None:
    import tracemalloc

    net = network()
    meta = {**net.architecture(), "sizes": [6, 500_000, 3]}  # would need 3.5M parameters per layer pair
    save_npz(tmp_path / "m.npz", meta, **net.state())
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"W0 has shape \(6, 5\), metadata sizes \[6, 500000, 3\] need"):
            load_network(tmp_path / "m.npz")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # bytes: the network's 12 MB of weights were never allocated
