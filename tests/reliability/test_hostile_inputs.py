"""Hostile or broken inputs: path tricks in the dataset config, and model files that lie.

IDX parsing errors (bad magic, dtype, dims, garbage, labels, gzip) are covered in
``tests/test_idx.py``; pickle-bearing files in ``test_no_pickle.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from mnist_pipeline import config, data_config
from mnist_pipeline.errors import ConfigError, DataError
from mnist_pipeline.io import save_npz
from mnist_pipeline.model_file import load_network

pytestmark = pytest.mark.timeout(30)

BAD_NAMES = ["../evil.gz", "../../etc/passwd", "/etc/passwd", "sub/x.gz", "sub\\x.gz", "..", ".", "", "x\0.gz"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_dataset_file_name_that_could_escape_data_raw_is_rejected(params_dict, name):
    params_dict["dataset"]["files"]["train_images"]["name"] = name

    with pytest.raises(ConfigError, match=r"^dataset\.files\.train_images\.name=.* plain file name"):
        config.from_dict(params_dict)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_plain_file_name_rejects_paths(name):
    with pytest.raises(ConfigError, match="^key="):
        data_config.plain_file_name("key", name)


def test_plain_file_names_are_accepted(params_dict):
    data_config.plain_file_name("key", "train-images-idx3-ubyte.gz")
    data_config.plain_file_name("key", "..gz")  # dots inside a name are fine; only "." and ".." are not
    assert config.from_dict(params_dict).dataset.files["train_images"].name == "train-images-idx3-ubyte.gz"


@pytest.mark.parametrize("url", ["file:///etc/", "ftp://example.com/mnist/", "https://example.com/mnist"])
def test_configured_mirror_must_be_an_http_directory_url(params_dict, url):
    params_dict["dataset"]["mirrors"] = [url]

    with pytest.raises(ConfigError, match=r"^dataset\.mirrors\[0\]="):
        config.from_dict(params_dict)


# --- model files whose metadata and arrays disagree -------------------------------------------

META = {"sizes": [4, 3, 2], "activation": "relu", "dtype": "float32"}


def weights(**changes: np.ndarray) -> dict[str, np.ndarray]:
    arrays = {
        "W0": np.zeros((4, 3), np.float32),
        "b0": np.zeros(3, np.float32),
        "W1": np.zeros((3, 2), np.float32),
        "b1": np.zeros(2, np.float32),
    }
    return {**arrays, **changes}


def test_consistent_model_file_loads(tmp_path):
    path = tmp_path / "model.npz"
    save_npz(path, META, **weights(W1=np.ones((3, 2), np.float32)))

    net, meta = load_network(path)

    assert net.sizes == [4, 3, 2] and meta["activation"] == "relu"
    np.testing.assert_array_equal(net.dense[1].params["W"], np.ones((3, 2), np.float32))


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        (weights(W1=np.zeros((5, 2), np.float32)), r"W1 has shape \(5, 2\), metadata sizes \[4, 3, 2\] need \(3, 2\)"),
        (weights(b0=np.zeros(4, np.float32)), r"b0 has shape \(4,\)"),
        (weights(W0=np.zeros((3, 4), np.float32)), r"W0 has shape \(3, 4\)"),
        ({k: v for k, v in weights().items() if k != "b1"}, "missing array b1"),
    ],
    ids=["W1-rows", "b0-length", "W0-transposed", "b1-missing"],
)
def test_model_arrays_that_do_not_match_metadata_fail_at_load(tmp_path, arrays, match):
    path = tmp_path / "model.npz"
    save_npz(path, META, **arrays)

    with pytest.raises(DataError, match=match) as err:
        load_network(path)
    assert str(path) in str(err.value)


def test_model_metadata_missing_a_key_fails_at_load(tmp_path):
    path = tmp_path / "model.npz"
    save_npz(path, {"sizes": [4, 3, 2], "dtype": "float32"}, **weights())

    with pytest.raises(DataError, match="metadata lacks 'activation'"):
        load_network(path)


def test_model_file_without_metadata_fails_at_load(tmp_path):
    path = tmp_path / "model.npz"
    save_npz(path, None, **weights())

    with pytest.raises(DataError, match="lacks array 'meta'"):
        load_network(path)


# Metadata values are validated before the network is built (no numpy crash, no object dtype).
@pytest.mark.parametrize(
    "meta",
    [
        {**META, "sizes": [4, -3, 2]},
        {**META, "sizes": "432"},
        {**META, "dtype": "object"},
        {**META, "dtype": "nonsense"},
    ],
    ids=["negative-size", "sizes-not-a-list", "object-dtype", "unknown-dtype"],
)
def test_model_metadata_with_impossible_values_fails_with_data_error(tmp_path, meta):
    path = tmp_path / "model.npz"
    save_npz(path, meta, **weights())

    with pytest.raises(DataError):
        load_network(path)
