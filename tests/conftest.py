"""Shared fixtures for the whole suite.

``repo_root``
    The checkout's top directory (holds ``dvc.yaml``, ``params.yaml``, ``conf/``).
``params_dict``
    ``params.yaml`` parsed into a plain dict (a fresh deep copy per test, so a test may mutate it).
``tiny_mnist_dir``
    A small synthetic MNIST in the canonical layout: four gzip IDX files named like the real ones,
    with 600 training and 100 test 28x28 uint8 images in 10 learnable classes. Returns a
    :class:`TinyMnist` with the directory, each file's path, byte size and SHA-256, and the arrays
    written, so a test can point ``dataset.files`` (and ``DATA_MIRROR``) at it.
``tiny_workspace``
    A stage working directory (the test is ``chdir``-ed into it): ``params.yaml`` is the repo's with
    ``dataset.files`` pointing at the tiny MNIST, ``featurize.val_size`` 100 and ``train.epochs`` 2,
    and ``data/raw/`` holds the four tiny files, so ``prepare.main()`` and later stages can run.
    Returns a :class:`Workspace`; call ``ws.write_params(**{"train.lr": 0.1})`` to change values.
"""

from __future__ import annotations

import copy
import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from mnist_pipeline import idx

REPO_ROOT = Path(__file__).resolve().parents[1]

# Role -> canonical MNIST file name (the same names conf/dataset/mnist.yaml uses).
MNIST_FILE_NAMES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


@dataclass(frozen=True)
class TinyMnist:
    """What :func:`tiny_mnist_dir` wrote.

    Attributes
    ----------
    dir : Path
        Directory holding the four ``.gz`` files.
    paths, sizes, sha256 : dict
        Per role (``train_images``, ``train_labels``, ``test_images``, ``test_labels``): file path,
        byte count and lowercase hex SHA-256, ready for ``dataset.files.<role>``.
    arrays : dict
        Per role, the array written (images ``(N, 28, 28)`` uint8, labels ``(N,)`` uint8).
    """

    dir: Path
    paths: dict[str, Path]
    sizes: dict[str, int]
    sha256: dict[str, str]
    arrays: dict[str, np.ndarray]

    def file_specs(self) -> dict[str, dict]:
        """``dataset.files`` mapping (name, size, sha256 per role) for these files."""
        return {
            role: {"name": path.name, "size": self.sizes[role], "sha256": self.sha256[role]}
            for role, path in self.paths.items()
        }


def synthetic_digits(
    n: int, rng: np.random.Generator, num_classes: int = 10, shape=(28, 28)
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 images with balanced labels: class ``c`` lights a distinct 6x6 block, plus noise.

    Linearly separable by construction (a block's mean intensity identifies the class), yet noisy
    enough that every pixel varies.
    """
    labels = (np.arange(n) % num_classes).astype(np.uint8)
    rng.shuffle(labels)
    images = rng.integers(0, 60, size=(n, *shape)).astype(np.int16)  # background noise
    cols = max(1, shape[1] // 7)
    for c in range(num_classes):
        r, k = divmod(c, cols)
        r0, c0 = 1 + 7 * (r % max(1, shape[0] // 7)), 1 + 7 * k
        images[labels == c, r0 : r0 + 6, c0 : c0 + 6] += 150
    return np.clip(images, 0, 255).astype(np.uint8), labels


def write_tiny_mnist(directory: Path, n_train: int = 600, n_test: int = 100, seed: int = 0) -> TinyMnist:
    """Write a synthetic MNIST (see :class:`TinyMnist`) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    x_train, y_train = synthetic_digits(n_train, rng)
    x_test, y_test = synthetic_digits(n_test, rng)
    arrays = {"train_images": x_train, "train_labels": y_train, "test_images": x_test, "test_labels": y_test}
    paths, sizes, sums = {}, {}, {}
    for role, array in arrays.items():
        path = directory / MNIST_FILE_NAMES[role]
        idx.write_gz(path, array)
        data = path.read_bytes()
        paths[role], sizes[role], sums[role] = path, len(data), hashlib.sha256(data).hexdigest()
    return TinyMnist(directory, paths, sizes, sums, arrays)


@pytest.fixture
def tiny_mnist_dir(tmp_path: Path) -> TinyMnist:
    """A synthetic 600/100-image MNIST in ``tmp_path / "tiny_mnist"`` (see :class:`TinyMnist`)."""
    return write_tiny_mnist(tmp_path / "tiny_mnist")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def _params_cache() -> dict:
    return yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"))


@pytest.fixture
def params_dict(_params_cache: dict) -> dict:
    """``params.yaml`` as a dict; a deep copy, safe to mutate."""
    return copy.deepcopy(_params_cache)


@dataclass
class Workspace:
    """A directory laid out like the repo for running stage ``main()`` functions (see ``tiny_workspace``)."""

    root: Path
    params: dict
    mnist: TinyMnist

    def write_params(self, **overrides) -> dict:
        """Apply ``{"dotted.key": value}`` overrides to ``params`` and write ``params.yaml``."""
        for dotted, value in overrides.items():
            *parents, leaf = dotted.split(".")
            node = self.params
            for key in parents:
                node = node[key]
            node[leaf] = value
        (self.root / "params.yaml").write_text(yaml.safe_dump(self.params, sort_keys=False), encoding="utf-8")
        return self.params


@pytest.fixture
def tiny_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, params_dict: dict) -> Workspace:
    """A chdir-ed stage workspace over the tiny synthetic MNIST (see the module docstring)."""
    mnist = write_tiny_mnist(tmp_path / "tiny_mnist")
    root = tmp_path / "ws"
    raw = root / "data" / "raw"
    raw.mkdir(parents=True)
    for path in mnist.paths.values():
        shutil.copy2(path, raw / path.name)
    params_dict["dataset"]["files"] = mnist.file_specs()
    ws = Workspace(root, params_dict, mnist)
    ws.write_params(**{"featurize.val_size": 100, "train.epochs": 2})
    monkeypatch.chdir(root)
    return ws
