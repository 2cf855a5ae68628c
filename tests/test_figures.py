"""Figures: valid PNGs of the declared pixel size, byte-identical across renders, showing their inputs."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mnist_pipeline import figures
from mnist_pipeline.metrics import classification_report, confusion_matrix

NAMES = [str(i) for i in range(10)]
DPI = 40  # small and fast; the size check scales with dpi


def _inputs(seed: int = 0) -> dict[str, tuple]:
    """Positional arguments for every figure, from small synthetic data."""
    rng = np.random.default_rng(seed)
    n = 60
    y_true = np.arange(n) % 10
    proba = rng.dirichlet(np.ones(10), n).astype(np.float32)  # (N, C)
    y_pred = proba.argmax(axis=1)
    epochs = np.arange(1, 6)
    log = {
        "epoch": epochs,
        "train_loss": 1.0 / epochs,
        "val_loss": 1.2 / epochs + 0.05,
        "train_acc": 1 - 0.1 / epochs,
        "val_acc": np.array([0.80, 0.85, 0.90, 0.89, 0.90]) - 0.01 * seed,
    }
    return {
        "learning_curves": (log,),
        "confusion_matrix": (confusion_matrix(y_true, y_pred, 10), NAMES),
        "per_class": (classification_report(y_true, y_pred, NAMES), NAMES),
        "misclassified": (rng.random((n, 28, 28)), y_true, proba, NAMES, 25),
        "weights": (rng.normal(size=(784, 70)).astype(np.float32), (28, 28), 64, None),
    }


def _render(name: str, args: tuple, dpi: int = DPI) -> bytes:
    return getattr(figures, name)(*args, dpi=dpi)


@pytest.mark.parametrize("name", list(figures.SIZES))
def test_png_of_declared_size_and_byte_identical(name: str) -> None:
    args = _inputs()[name]
    png = _render(name, args)
    image = Image.open(io.BytesIO(png))
    image.load()  # decodes the whole image: fails on a truncated or corrupt PNG
    width, height = figures.SIZES[name]
    assert image.format == "PNG" and image.size == (round(width * DPI), round(height * DPI))
    assert "Software" not in image.info and not any(k.lower().startswith("creation") for k in image.info)
    assert _render(name, args) == png
    assert _render(name, _inputs(seed=1)[name]) != png  # the picture depends on its data


def test_default_dpi_is_100() -> None:
    image = Image.open(io.BytesIO(figures.learning_curves(*_inputs()["learning_curves"])))
    assert image.size == (1200, 480)


def test_weights_of_a_model_without_hidden_layers_are_class_templates() -> None:
    w = np.random.default_rng(0).normal(size=(784, 10)).astype(np.float32)
    png = figures.weights(w, (28, 28), 3, NAMES, dpi=DPI)  # max_units does not cut class templates
    assert png != figures.weights(w, (28, 28), 3, None, dpi=DPI)
    assert Image.open(io.BytesIO(png)).size == (400, 360)


def test_misclassified_without_errors_still_renders() -> None:
    proba = np.eye(10, dtype=np.float32)
    png = figures.misclassified(np.zeros((10, 28, 28)), np.arange(10), proba, NAMES, 25, dpi=DPI)
    assert Image.open(io.BytesIO(png)).format == "PNG"


def test_most_confident_errors_order() -> None:
    proba = np.array(
        [
            [0.9, 0.1],  # wrong (true 1), 0.9
            [0.2, 0.8],  # right
            [0.3, 0.7],  # wrong (true 0), 0.7
            [0.9, 0.1],  # wrong (true 1), 0.9: tie with row 0, comes after it
            [0.6, 0.4],  # wrong (true 1), 0.6
        ]
    )
    y_true = np.array([1, 1, 0, 1, 1])
    assert figures.most_confident_errors(proba, y_true, 10).tolist() == [0, 3, 2, 4]
    assert figures.most_confident_errors(proba, y_true, 2).tolist() == [0, 3]


def test_max_val_acc_index_is_the_first_maximum() -> None:
    assert figures.max_val_acc_index({"val_acc": np.array([0.5, 0.9, 0.7, 0.9])}) == 1


def test_rendering_never_imports_pyplot() -> None:
    code = (
        "import sys, numpy as np; from mnist_pipeline import figures; "
        "figures.max_val_acc_index({'val_acc': np.ones(1)}); "
        "figures.confusion_matrix(np.eye(2, dtype=int), ['a', 'b'], dpi=20); "
        "sys.exit('matplotlib.pyplot' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "DISPLAY")}  # headless
    assert subprocess.run([sys.executable, "-c", code], env=env, timeout=120).returncode == 0
