"""A small synthetic MNIST in the canonical layout: four gzip IDX files named like the real ones.

:func:`write_tiny_mnist` writes it (600 training and 100 test 28x28 uint8 images in 10 learnable
classes by default) and returns a :class:`TinyMnist`; the ``tiny_mnist_dir`` and ``tiny_workspace``
fixtures of ``tests/conftest.py`` are built on it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_pipeline import idx

# Role -> canonical MNIST file name (the same names conf/dataset/mnist.yaml uses).
MNIST_FILE_NAMES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


@dataclass(frozen=True)
class TinyMnist:
    """What :func:`write_tiny_mnist` wrote (the ``tiny_mnist_dir`` fixture returns one).

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
