"""Datasets as a Hydra group: every option composes and validates, and switching is config only.

The slow test switches a throw-away copy of the repo to ``dataset=fashion_mnist`` with
``dvc exp run -S``, pointing its mirror at a server on 127.0.0.1 that serves small generated IDX
files (the real Fashion-MNIST files are not on this machine) with their own sizes and checksums.
The download stage fetches them over HTTP exactly as it would from the real mirrors.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers.dvc_sandbox import Sandbox, make_sandbox
from helpers.tiny_mnist import TinyMnist
from mnist_pipeline import compose, config, data_config, params
from mnist_pipeline.io import load_npz
from mnist_pipeline.model_file import load_network

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
DATASETS = sorted(p.stem for p in (CONF / "dataset").glob("*.yaml"))
PRESETS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))

FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
FASHION_SHA256 = {
    "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
}
MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}


def _compose(*overrides: str) -> config.Config:
    return config.from_dict(yaml.safe_load(compose.compose(list(overrides), conf_dir=CONF)))


# --- composition --------------------------------------------------------------------------------


def test_both_datasets_are_options() -> None:
    assert {"mnist", "fashion_mnist"} <= set(DATASETS)


@pytest.mark.parametrize("dataset", DATASETS)
def test_dataset_option_composes_validates_and_names_itself(dataset: str) -> None:
    cfg = _compose(f"dataset={dataset}")
    assert cfg.dataset.name == dataset  # data paths and the model's metadata carry this name
    assert cfg.dataset.image_shape == (28, 28) and cfg.dataset.num_classes == len(cfg.dataset.class_names)
    assert sorted(cfg.dataset.files) == sorted(data_config.FILE_ROLES)
    assert cfg.dataset.mirrors, "a dataset needs at least one mirror for users without DATA_MIRROR"


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_with_every_dataset(dataset: str, preset: str) -> None:
    cfg = _compose(f"dataset={dataset}", f"experiment={preset}")
    assert cfg.dataset.name == dataset  # no preset pins the dataset
    assert cfg == _compose(f"experiment={preset}", f"dataset={dataset}")


def test_switching_dataset_changes_only_the_dataset_section() -> None:
    mnist, fashion = (params.as_dict(_compose(f"dataset={d}")) for d in ("mnist", "fashion_mnist"))
    assert {k for k in mnist if mnist[k] != fashion[k]} == {"dataset"}


def test_fashion_mnist_matches_the_published_files_and_classes() -> None:
    ds = _compose("dataset=fashion_mnist").dataset
    assert list(ds.class_names) == FASHION_CLASSES
    assert {spec.name: spec.sha256 for spec in ds.files.values()} == FASHION_SHA256
    assert ds.files["train_images"].name == "train-images-idx3-ubyte.gz"
    assert "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/" in ds.mirrors


def test_mnist_matches_the_canonical_checksums() -> None:
    ds = _compose("dataset=mnist").dataset
    assert {spec.name: spec.sha256 for spec in ds.files.values()} == MNIST_SHA256
    assert list(ds.class_names) == [str(d) for d in range(10)]


# --- switching a real pipeline to fashion_mnist over HTTP ---------------------------------------


class _Recorder(SimpleHTTPRequestHandler):
    """Serves a directory; remembers each request path; stays quiet."""

    requests: list[str]

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        self.requests.append(self.path)


@pytest.fixture
def fashion_server(tiny_mnist_dir: TinyMnist) -> Iterator[tuple[str, list[str]]]:
    """The tiny files at http://127.0.0.1:<port>/fashion/ and the list of paths requested."""
    served = tiny_mnist_dir.dir.parent / "served"
    (served / "fashion").mkdir(parents=True)
    for path in tiny_mnist_dir.paths.values():
        (served / "fashion" / path.name).write_bytes(path.read_bytes())
    requests: list[str] = []
    handler = type("Handler", (_Recorder,), {"requests": requests})
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(served)))
    server.timeout = 5
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/fashion/", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _dataset_overrides(mirror: str, mnist: TinyMnist) -> list[str]:
    """``-S`` overrides a user would type to point fashion_mnist at another mirror with other files."""
    overrides = ["dataset=fashion_mnist", f"dataset.mirrors=['{mirror}']"]
    for role, spec in mnist.file_specs().items():
        overrides += [f"dataset.files.{role}.size={spec['size']}", f"dataset.files.{role}.sha256='{spec['sha256']}'"]
    return [arg for override in overrides for arg in ("-S", override)]


@pytest.mark.slow
def test_dvc_exp_run_switches_to_fashion_mnist_over_http(
    tmp_path: Path, tiny_mnist_dir: TinyMnist, fashion_server: tuple[str, list[str]]
) -> None:
    mirror, requests = fashion_server
    box: Sandbox = make_sandbox(tmp_path / "repo", preset={"featurize": {"val_size": 100}, "train": {"epochs": 1}})
    assert "DATA_MIRROR" not in box.env  # the configured mirror is the only source

    output = box.dvc("exp", "run", *_dataset_overrides(mirror, tiny_mnist_dir))
    for stage in ("download", "prepare", "featurize", "train", "evaluate"):
        assert f"Running stage '{stage}'" in output, output

    # Each file came over HTTP once, verified, into data/raw.
    assert sorted(requests) == sorted(f"/fashion/{p.name}" for p in tiny_mnist_dir.paths.values())
    for role, path in tiny_mnist_dir.paths.items():
        raw = box.root / "data" / "raw" / path.name
        assert hashlib.sha256(raw.read_bytes()).hexdigest() == tiny_mnist_dir.sha256[role]

    # params.yaml is the composition with the overrides; every stage used Fashion-MNIST's classes.
    params = box.params()
    assert params["dataset"]["name"] == "fashion_mnist" and params["dataset"]["mirrors"] == [mirror]
    assert params["dataset"]["class_names"] == FASHION_CLASSES
    prepared = load_npz(box.root / "data" / "prepared" / "test.npz", ["y"])
    np.testing.assert_array_equal(prepared["y"], tiny_mnist_dir.arrays["test_labels"])
    _, meta = load_network(box.root / "data" / "model" / "model.npz")
    assert meta["dataset"] == "fashion_mnist"
    report = box.read_json("reports/classification_report.json")
    assert set(FASHION_CLASSES) <= set(report)
    assert box.read_json("reports/metrics.json")["test"]["accuracy"] > 0.5  # 10 learnable classes
    assert "up to date" in box.dvc("status")

    # Back to MNIST: DVC sees the dataset change in download's and prepare's params, so no
    # output of one dataset is ever reused for the other.
    box.python("-m", "mnist_pipeline.compose")
    status = box.dvc("status")
    assert "download:" in status and "prepare:" in status and "dataset.files" in status, status
