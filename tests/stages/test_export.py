"""Stage export: the ONNX model computes what the NumPy model computes, for every activation and shape.

Each model runs in a real runtime (onnxruntime) on raw pixels, as a server would feed it, and must
give the classes of ``Network.predict_proba`` on the same pixels normalized as ``predict`` does,
and probabilities within 1e-5. The real-data check (10,000 MNIST test images against
``reports/predictions.csv``) is in ``tests/test_pipeline_e2e.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from mnist_pipeline import onnx_model, paths
from mnist_pipeline.errors import DataError
from mnist_pipeline.mlp.layers import ACTIVATIONS
from mnist_pipeline.mlp.network import Network
from mnist_pipeline.model_file import load_network, save_network
from mnist_pipeline.normalization import normalize
from mnist_pipeline.stages import export, featurize, prepare, train

TOLERANCE = 1e-5


def saved_model(path: Path, shape: tuple[int, int], classes: int, activation: str, **options: float) -> Path:
    """A random model of ``shape`` images and ``classes`` written and read back as the stages do."""
    rng = np.random.default_rng(len(activation) + classes)
    sizes = [shape[0] * shape[1], 24, 12, classes]
    net = Network(sizes, activation, "he_normal", rng, dropout=options.get("dropout", 0.0))
    for layer in net.dense:  # biases start at zero: make them count
        layer.params["b"][...] = rng.normal(0, 0.1, layer.params["b"].shape)
    meta = {
        "class_names": [f"c{i}" for i in range(classes)],
        "image_shape": list(shape),
        "dataset": "synthetic",
        "normalize": "standardize" if "mean" in options else "scale",
        "mean": options.get("mean", 0.0),
        "std": options.get("std", 1.0),
        "compute": {"blas": "openblas", "chunks": 2},
    }
    save_network(path, net, meta)
    return path


def run_onnx(model: bytes, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    proba, classes = session.run(None, {onnx_model.INPUT: pixels.astype(np.float32)})
    return proba, classes


CASES = {
    **{f"{a}-28x28": ((28, 28), 10, a, {}) for a in ACTIVATIONS.names()},
    "relu-dropout": ((28, 28), 10, "relu", {"dropout": 0.5}),
    "tanh-standardized": ((28, 28), 10, "tanh", {"mean": 0.1307, "std": 0.3081}),
    "gelu-8x6-4-classes": ((8, 6), 4, "gelu", {}),
    "sigmoid-32x32-26-classes": ((32, 32), 26, "sigmoid", {"mean": 0.17, "std": 0.33}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_onnx_model_gives_the_numpy_models_classes_and_probabilities(tmp_path, case) -> None:
    shape, classes, activation, options = CASES[case]
    net, meta = load_network(saved_model(tmp_path / "model.npz", shape, classes, activation, **options))
    rng = np.random.default_rng(0)  # mostly dark images with bright strokes, as digits are
    pixels = (rng.integers(0, 256, (500, *shape)) * (rng.random((500, *shape)) < 0.15)).astype(np.uint8)

    proba, predicted = run_onnx(onnx_model.build(net, meta), pixels)

    expected = net.predict_proba(normalize(pixels, meta["mean"], meta["std"]))
    assert proba.shape == (500, classes) and predicted.dtype == np.int64
    np.testing.assert_array_equal(predicted, expected.argmax(axis=1))
    np.testing.assert_allclose(proba, expected, rtol=0, atol=TOLERANCE)
    assert np.ptp(proba, axis=0).max() > 0.01  # the check means something: the pixels move the answer


def test_every_activation_a_model_can_have_exports() -> None:
    assert set(ACTIVATIONS.names()) == set(onnx_model.SUPPORTED)


def test_export_is_checked_self_describing_and_byte_stable(tmp_path) -> None:
    net, meta = load_network(saved_model(tmp_path / "model.npz", (28, 28), 10, "relu"))

    data = onnx_model.build(net, meta)

    assert onnx_model.build(*load_network(tmp_path / "model.npz")) == data
    model = onnx.load_from_string(data)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == onnx_model.OPSET >= 17
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["class_names"]) == meta["class_names"]
    assert json.loads(props["image_shape"]) == [28, 28]
    assert json.loads(props["compute"]) == meta["compute"]
    assert [o.name for o in model.graph.output] == [onnx_model.PROBABILITIES, onnx_model.CLASS]
    assert not any(node.op_type == "Dropout" for node in model.graph.node)


def test_an_activation_it_cannot_express_is_one_line_at_export(tmp_path) -> None:
    net, meta = load_network(saved_model(tmp_path / "model.npz", (28, 28), 10, "relu"))
    with pytest.raises(DataError, match=r"cannot export activation 'swish' to ONNX \(supported: identity, relu"):
        onnx_model.build(net, {**meta, "activation": "swish"})


def test_stage_writes_the_trained_model_and_rewrites_the_same_bytes(tiny_workspace) -> None:
    for stage in (prepare, featurize, train):
        stage.main()

    export.main()
    first = paths.ONNX_FILE.read_bytes()
    export.main()

    assert paths.ONNX_FILE.read_bytes() == first
    net, meta = load_network(paths.MODEL_FILE)
    pixels = np.random.default_rng(1).integers(0, 256, (200, 28, 28), dtype=np.uint8)
    proba, predicted = run_onnx(first, pixels)
    np.testing.assert_array_equal(predicted, net.predict_proba(normalize(pixels)).argmax(axis=1))
