"""Stage ``export``: ``data/model/model.npz`` as ``data/model/model.onnx``, for any ONNX runtime.

The graph takes raw ``(N, rows, cols)`` pixels in 0..255 and gives ``probabilities`` and
``class`` (see :mod:`mnist_pipeline.onnx_model`); ``onnx.checker`` validates it before it is
written, atomically. Same model, same bytes.

Run: ``python -m mnist_pipeline.stages.export``.
"""

from __future__ import annotations

import logging

from mnist_pipeline import onnx_model
from mnist_pipeline.io import atomic_write
from mnist_pipeline.model_file import load_network
from mnist_pipeline.paths import MODEL_FILE, ONNX_FILE

log = logging.getLogger(__name__)


def main() -> None:
    net, meta = load_network(MODEL_FILE)
    data = onnx_model.build(net, meta)
    with atomic_write(ONNX_FILE, "wb") as f:
        f.write(data)
    log.info("wrote %s (%d bytes, opset %d, checked by onnx.checker)", ONNX_FILE, len(data), onnx_model.OPSET)


if __name__ == "__main__":
    from mnist_pipeline.cli import run

    run(main, "export")
