"""A trained network as an ONNX model that any runtime can serve: raw pixels in, probabilities and class out.

The graph does what :mod:`mnist_pipeline.predict` does after decoding an image, in the same
float32 operations: flatten ``(N, rows, cols)`` pixels in 0..255, divide by 255, subtract the
training mean and divide by its std (:func:`mnist_pipeline.normalization.normalize`), then each
Dense layer (``MatMul`` + ``Add``) and its activation, then ``Softmax`` (``probabilities``,
``(N, C)`` float32) and ``ArgMax`` (``class``, ``(N,)`` int64). Dropout is not in it: it is the
identity at inference. ``metadata_props`` carry the class names, the image shape, the
normalization and the compute fingerprint of the training run, so the file explains itself.

Built with the ``onnx`` package's own helpers at opset :data:`OPSET`; the same model gives the
same bytes (no timestamps, names or versions that vary between runs).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np

from mnist_pipeline.errors import DataError
from mnist_pipeline.mlp.network import Network

OPSET = 17
IR_VERSION = 8  # the IR that opset 17 came with: every runtime since onnxruntime 1.13 reads it
PRODUCER = "mnist-pipeline"
INPUT, PROBABILITIES, CLASS = "pixels", "probabilities", "class"


def _gelu(helper: Any, z: str, name: str, nodes: list[Any], consts: dict[str, np.ndarray]) -> str:
    """GELU, tanh approximation, as :class:`mnist_pipeline.mlp.layers.GELU` computes it (opset 17 has no Gelu)."""
    consts.setdefault("gelu_c", np.array(np.sqrt(2.0 / np.pi), np.float32))
    consts.setdefault("gelu_k", np.array(0.044715, np.float32))
    consts.setdefault("half", np.array(0.5, np.float32))
    consts.setdefault("one", np.array(1.0, np.float32))
    steps = [
        ("Mul", [z, z], "z2"),
        ("Mul", [f"{name}_z2", z], "z3"),
        ("Mul", ["gelu_k", f"{name}_z3"], "kz3"),
        ("Add", [z, f"{name}_kz3"], "inner"),
        ("Mul", ["gelu_c", f"{name}_inner"], "scaled"),
        ("Tanh", [f"{name}_scaled"], "tanh"),
        ("Add", ["one", f"{name}_tanh"], "onep"),
        ("Mul", ["half", z], "halfz"),
        ("Mul", [f"{name}_halfz", f"{name}_onep"], "out"),
    ]
    for op, inputs, out in steps:
        nodes.append(helper.make_node(op, inputs, [f"{name}_{out}"], name=f"{name}_{out}"))
    return f"{name}_out"


def _activation(helper: Any, kind: str) -> Callable[[str, str, list[Any], dict[str, np.ndarray]], str]:
    """A function adding ``kind``'s nodes after tensor ``z``; returns the name of its output."""
    simple = {"relu": ("Relu", {}), "leaky_relu": ("LeakyRelu", {"alpha": 0.01}), "tanh": ("Tanh", {})}
    simple["sigmoid"] = ("Sigmoid", {})

    def add(z: str, name: str, nodes: list[Any], consts: dict[str, np.ndarray]) -> str:
        if kind == "identity":
            return z
        if kind == "gelu":
            return _gelu(helper, z, name, nodes, consts)
        op, attrs = simple[kind]
        nodes.append(helper.make_node(op, [z], [f"{name}_a"], name=f"{name}_{kind}", **attrs))
        return f"{name}_a"

    return add


SUPPORTED = ("identity", "relu", "leaky_relu", "sigmoid", "tanh", "gelu")


def build(net: Network, meta: dict[str, Any]) -> bytes:
    """The serialized ONNX model of ``net`` (loaded with ``meta``, its model file's metadata), checked.

    Raises
    ------
    DataError
        If the network has an activation this export cannot express (it would be another model),
        or the metadata lacks what the graph needs.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    activation = str(meta.get("activation"))
    if activation not in SUPPORTED:
        raise DataError(f"cannot export activation {activation!r} to ONNX (supported: {', '.join(SUPPORTED)})")
    rows, cols = (int(v) for v in meta["image_shape"])
    features, classes = net.sizes[0], net.sizes[-1]
    if rows * cols != features or len(meta["class_names"]) != classes:
        raise DataError(
            f"model metadata {meta['image_shape']}/{len(meta['class_names'])} classes do not fit {net.sizes}"
        )
    consts: dict[str, np.ndarray] = {
        "shape": np.array([-1, features], np.int64),
        "scale": np.array(255.0, np.float32),
        "mean": np.array(meta["mean"], np.float32),
        "std": np.array(meta["std"], np.float32),
    }
    nodes = [
        helper.make_node("Reshape", [INPUT, "shape"], ["flat"], name="flatten"),
        helper.make_node("Div", ["flat", "scale"], ["scaled"], name="to_unit"),
        helper.make_node("Sub", ["scaled", "mean"], ["centred"], name="minus_mean"),
        helper.make_node("Div", ["centred", "std"], ["x0"], name="over_std"),
    ]
    add_activation = _activation(helper, activation)
    x = "x0"
    for i, layer in enumerate(net.dense):
        consts[f"W{i}"] = np.ascontiguousarray(layer.params["W"], np.float32)
        consts[f"b{i}"] = np.ascontiguousarray(layer.params["b"], np.float32)
        nodes.append(helper.make_node("MatMul", [x, f"W{i}"], [f"mm{i}"], name=f"dense{i}_matmul"))
        nodes.append(helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"z{i}"], name=f"dense{i}_bias"))
        last = i == len(net.dense) - 1
        x = f"z{i}" if last else add_activation(f"z{i}", f"act{i}", nodes, consts)
    nodes.append(helper.make_node("Softmax", [x], [PROBABILITIES], name="softmax", axis=-1))
    nodes.append(helper.make_node("ArgMax", [PROBABILITIES], [CLASS], name="argmax", axis=1, keepdims=0))

    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", rows, cols])],
        [
            helper.make_tensor_value_info(PROBABILITIES, TensorProto.FLOAT, ["N", classes]),
            helper.make_tensor_value_info(CLASS, TensorProto.INT64, ["N"]),
        ],
        initializer=[numpy_helper.from_array(value, name) for name, value in sorted(consts.items())],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION, producer_name=PRODUCER
    )
    model.doc_string = f"{meta.get('dataset')} {'-'.join(map(str, net.sizes))} {activation} MLP: raw pixels 0-255 in"
    properties = {
        "class_names": json.dumps(list(meta["class_names"])),
        "image_shape": json.dumps([rows, cols]),
        "normalization": json.dumps({"method": meta.get("normalize"), "mean": meta["mean"], "std": meta["std"]}),
        "compute": json.dumps(meta.get("compute"), sort_keys=True),
        "dataset": str(meta.get("dataset")),
    }
    helper.set_model_props(model, properties)
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString(deterministic=True)
