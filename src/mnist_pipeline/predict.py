"""Predict the class of images and IDX files with a trained model.

Run::

    python -m mnist_pipeline.predict --model data/model/model.npz digit.png photo.jpg t10k-images-idx3-ubyte.gz
    python -m mnist_pipeline.predict --json --invert no --center scan.png

Inputs (recognized by content, not by name):

- images: PNG, JPEG or any other still image Pillow reads, of any size and mode;
- IDX image files (magic 2051), gzip-compressed or raw: each image is one input, named ``file[i]``.

Every image goes through the same steps (pure functions, see :func:`preprocess`):

1. Grayscale (luma). Transparent pixels are laid over the background that contrasts with the drawn
   ones (dark strokes on transparency count as dark ink on white paper); 16-bit images are scaled to 0..255.
2. Polarity. The model saw white digits on black. ``--invert auto`` (default) inverts an image
   whose background (the median of its outer 5% band) is brighter than its mean, i.e. dark ink on
   light paper; ``--invert yes`` / ``no`` force the choice.
3. Size. The image is scaled (Lanczos), aspect ratio preserved, to fit the model's ``image_shape``
   (28x28 for MNIST), centred and padded with its background. An image already of that shape is
   used as is, so MNIST's own IDX files give exactly the pixels the model was trained on.
   ``--center`` follows MNIST's own recipe instead, better for photos and drawings with wide
   margins: stretch the ink to 0..255 above the background, crop to it, fit it into 20/28 of the
   box and put its centre of mass in the middle.
4. Normalization, exactly as in training: ``x = (pixels / 255 - mean) / std`` with the model
   metadata's ``normalize``, ``mean`` and ``std``.

Output: one line per input, ``file: prediction  (class p, class p, class p)`` with the top three
probabilities; with ``--json`` a JSON list of ``{"file", "prediction", "top3": [{"class",
"probability"}, ...], "probabilities": {class: p}}`` in input order.

Limits, checked before anything is decoded or allocated: an input file holds at most 64 MiB (an IDX
file once decompressed, read incrementally), an image at most 25 megapixels (Pillow's own
decompression-bomb check is an error too); FIFOs, devices and other special files are refused. An
IDX file holds at most 100,000 images (checked once it is read, before any is converted).

Errors: a missing or unreadable input prints ``error: predict: <file>: <reason>`` on stderr, the
other inputs are still predicted, a last line counts the failed files, and the exit status is 1.
A missing or corrupt model is one line on stderr and exit status 1; a usage error exits with 2.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import sys
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mnist_pipeline import cli, idx
from mnist_pipeline.errors import DataError, PipelineError
from mnist_pipeline.mlp.network import Network
from mnist_pipeline.model_file import load_network
from mnist_pipeline.normalization import NORMALIZATIONS, normalize
from mnist_pipeline.paths import MODEL_FILE, open_regular
from mnist_pipeline.text import terminal

INVERT_CHOICES = ("auto", "yes", "no")
TOP_K = 3
BORDER_FRACTION = 0.05  # the outer band whose median is taken as the background
MNIST_INNER = 20 / 28  # MNIST digits were fitted into 20x20 inside the 28x28 image
INK_THRESHOLD = 0.2 * 255  # after contrast stretching, what counts as ink when cropping
GZIP_MAGIC = b"\x1f\x8b"
# Per input file: an image file's bytes, or an IDX file's once decompressed (MNIST's 60000 training
# images are 47 MB). Checked before reading, or while decompressing, so a bomb is never inflated.
MAX_INPUT_BYTES = 64 << 20
# Per image, from its header before decoding: 25 megapixels (5000x5000) are 100 MB as float32, and
# a few copies of that are made on the way to 28x28.
MAX_IMAGE_PIXELS = 25_000_000
# Per IDX file: each image becomes a float32 image of the model's shape on the way (0.3 GB for 100,000
# MNIST-sized ones), however small it is in the file: MAX_INPUT_BYTES alone would let 1x1 images through by
# the tens of millions. MNIST's training file has 60,000.
MAX_IDX_IMAGES = 100_000
META_KEYS = ("class_names", "image_shape", "normalize", "mean", "std")


@dataclass(frozen=True)
class Model:
    """A loaded network and the metadata prediction needs."""

    net: Network
    class_names: tuple[str, ...]
    image_shape: tuple[int, int]
    mean: float
    std: float


def load_model(path: str | Path) -> Model:
    """Load a model saved by the train stage, checking its metadata against its arrays.

    Raises
    ------
    DataError
        If the file is missing or corrupt, lacks a metadata key, or its class names, image shape,
        normalization or weights do not fit the network.
    """
    try:
        # Another file than the pipeline's own model: `dvc repro` would not mend it (it may be any file)
        fix = None if Path(path) == MODEL_FILE else f"pass --model a {MODEL_FILE.name} that the train stage wrote"
        net, meta = load_network(path, fix=fix)
        missing = [k for k in META_KEYS if k not in meta]
        if missing:
            raise DataError(f"{path}: model metadata lacks {missing[0]!r}; retrain with `dvc repro train`")
        names = tuple(str(c) for c in meta["class_names"])
        shape = tuple(int(s) for s in meta["image_shape"])
        mean, std = float(meta["mean"]), float(meta["std"])
    except (KeyError, TypeError, ValueError, OverflowError) as exc:  # metadata of the wrong types or sizes
        raise DataError(f"{path}: corrupt model metadata ({exc}); retrain with `dvc repro train`") from exc
    if len(shape) != 2 or min(shape) <= 0 or shape[0] * shape[1] != net.sizes[0]:
        raise DataError(
            f"{path}: metadata image_shape {list(shape)} must be two positive sizes whose product is the "
            f"{net.sizes[0]} input units"
        )
    if len(names) != net.sizes[-1]:
        raise DataError(f"{path}: metadata has {len(names)} class names for {net.sizes[-1]} output units")
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise DataError(f"{path}: metadata class names repeat {repeated}; each class needs its own name")
    # What normalize() computes for the darkest and brightest pixel, in its float32: both must be finite.
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # judged right below, in one line
        ends = normalize(np.array([[[0.0, 255.0]]]), mean, std) if np.isfinite([mean, std]).all() and std > 0 else None
    if meta["normalize"] not in NORMALIZATIONS or ends is None or not np.isfinite(ends).all():
        raise DataError(
            f"{path}: bad normalization in metadata: {meta['normalize']!r}, mean {mean}, std {std} "
            "(pixels must normalize to finite float32 values)"
        )
    return Model(net, names, (shape[0], shape[1]), mean, std)


# --- reading inputs --------------------------------------------------------------------------------


def to_gray(img: Image.Image) -> np.ndarray:
    """A Pillow image as float32 ``(H, W)`` luma in 0..255 (see the module docstring, step 1)."""
    if img.mode.startswith("I"):  # 16-bit PNGs; Pillow's convert("L") would clip them at 255
        return np.asarray(img, dtype=np.float32) * np.float32(255 / 65535)
    if "A" in img.getbands() or "transparency" in img.info:
        la = np.asarray(img.convert("RGBA").convert("LA"), dtype=np.float32)  # (H, W, 2)
        lum, alpha = la[..., 0], la[..., 1] / 255
        drawn = alpha > 0.5
        background = 0.0 if drawn.any() and lum[drawn].mean() > 127.5 else 255.0
        return lum * alpha + background * (1 - alpha)
    return np.asarray(img.convert("L"), dtype=np.float32)


def check_pixels(rows: int, cols: int, name: str) -> None:
    """DataError unless a ``rows`` x ``cols`` image is within :data:`MAX_IMAGE_PIXELS` (checked before decoding)."""
    if rows * cols > MAX_IMAGE_PIXELS:
        raise DataError(
            f"{name}: {cols}x{rows} image has {rows * cols} pixels, more than the {MAX_IMAGE_PIXELS} accepted "
            f"({rows * cols * 4 / 1e6:.0f} MB as float32); downscale it"
        )


def decode_image(data: bytes, name: str) -> np.ndarray:
    """Decode image bytes to grayscale (:func:`to_gray`), applying any EXIF orientation.

    The pixel count is checked against :data:`MAX_IMAGE_PIXELS` from the header, before decoding;
    Pillow's own decompression-bomb check (``Image.MAX_IMAGE_PIXELS``) is an error, not a warning. A
    TIFF that Pillow warns about (a tag that points past the file's end) is corrupt: its tags describe
    the pixels, and Pillow would skip the tag and guess. Other formats' warnings concern metadata (a
    photo's cut-short EXIF) and are dropped, not printed.
    """
    try:
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                check_pixels(img.height, img.width, name)
                gray = to_gray(ImageOps.exif_transpose(img))
                pillows = [w for w in warned if issubclass(w.category, UserWarning) and "PIL" in Path(w.filename).parts]
                if img.format == "TIFF" and pillows:
                    raise DataError(f"{name}: corrupt image ({' '.join(str(pillows[0].message).split())})")
                return gray
    except UnidentifiedImageError as exc:
        raise DataError(f"{name}: neither an image Pillow can read nor an IDX file") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{name}: refused by Pillow's decompression-bomb check ({' '.join(str(exc).split())})") from exc
    except (OSError, ValueError) as exc:
        raise DataError(f"{name}: corrupt image ({' '.join(str(exc).split())})") from exc


def decode_idx(f: IO[bytes], name: str, compressed: bool, max_images: int = MAX_IDX_IMAGES) -> np.ndarray:
    """Decode an IDX image stream (gzip-compressed if ``compressed``) to uint8 ``(N, rows, cols)``,
    ``N`` at most ``max_images``.

    Read incrementally, never more than :data:`MAX_INPUT_BYTES` decompressed (see :func:`idx.read_stream`).
    """
    if compressed:
        try:
            with gzip.GzipFile(fileobj=f, mode="rb") as gz:
                images = idx.read_stream(gz, name, idx.IMAGES_MAGIC, MAX_INPUT_BYTES)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{name}: corrupt gzip data ({exc})") from exc
    else:
        images = idx.read_stream(f, name, idx.IMAGES_MAGIC, MAX_INPUT_BYTES)
    if images.size == 0:
        raise DataError(f"{name}: IDX file holds no images (shape {images.shape})")
    if len(images) > max_images:
        raise DataError(f"{name}: {len(images)} images, more than the {max_images} accepted per IDX file; split it")
    check_pixels(images.shape[1], images.shape[2], name)
    return images


def is_idx(head: bytes) -> bool:
    """Whether a file starting with ``head`` (its first 4 bytes) is read as IDX: gzip, or an IDX magic."""
    return head.startswith(GZIP_MAGIC) or (len(head) >= 4 and head[:2] == b"\0\0" and head[2] in idx.DTYPES)


def decode_bytes(
    data: bytes, name: str, max_images: int = MAX_IDX_IMAGES
) -> tuple[list[str], Sequence[np.ndarray] | np.ndarray]:
    """The input names and grayscale images in ``data``, the bytes of a file as :func:`read_input` reads one
    (an IDX file of at most ``max_images``)."""
    if len(data) > MAX_INPUT_BYTES:
        raise DataError(f"{name}: {len(data)} bytes, more than the {MAX_INPUT_BYTES >> 20} MiB accepted per input")
    if is_idx(data[:4]):
        images = decode_idx(io.BytesIO(data), name, data.startswith(GZIP_MAGIC), max_images)
        return [f"{name}[{i}]" for i in range(len(images))], images
    return [name], [decode_image(data, name)]


def read_input(path: Path) -> tuple[list[str], Sequence[np.ndarray] | np.ndarray]:
    """The input names and grayscale ``(H, W)`` images in one file (one, or N for IDX).

    Raises
    ------
    DataError
        If the file is missing, unreadable, not a regular file (a FIFO, a device), larger than
        :data:`MAX_INPUT_BYTES`, or neither a valid image nor a valid IDX image file; the message
        starts with the path.
    """
    try:
        with open_regular(path) as f:
            head = f.peek(4)[:4]  # type: ignore[attr-defined]  # open_regular(path) is a BufferedReader
            if is_idx(head):
                images = decode_idx(f, str(path), compressed=head.startswith(GZIP_MAGIC))
                return [f"{path}[{i}]" for i in range(len(images))], images
            size = os.fstat(f.fileno()).st_size
            if size > MAX_INPUT_BYTES:
                raise DataError(f"{path}: {size} bytes, more than the {MAX_INPUT_BYTES >> 20} MiB accepted per input")
            data = f.read()
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such file") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    return [str(path)], [decode_image(data, str(path))]


# --- preprocessing: pure ---------------------------------------------------------------------------


def border_median(x: np.ndarray) -> float:
    """Median of the outer band (5% of the shorter side, at least 1 pixel): the background level."""
    width = max(1, round(min(x.shape) * BORDER_FRACTION))
    inner = np.zeros(x.shape, dtype=bool)
    inner[width:-width, width:-width] = True
    return float(np.median(x[~inner]))


def needs_inversion(x: np.ndarray, invert: str) -> bool:
    """Whether ``x`` must be inverted to be light-on-dark; ``auto``: background brighter than the mean."""
    if invert not in INVERT_CHOICES:
        raise ValueError(f"invert={invert!r} is not one of: {', '.join(INVERT_CHOICES)}")
    return invert == "yes" or (invert == "auto" and border_median(x) > float(x.mean()))


def resize(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Lanczos resampling of a float32 0..255 image to ``shape`` (rows, cols), clipped to 0..255."""
    img = Image.fromarray(np.ascontiguousarray(x, dtype=np.float32))  # mode "F": no rounding to uint8
    return np.clip(np.asarray(img.resize(shape[::-1], Image.Resampling.LANCZOS)), 0, 255)


def fit_into(x: np.ndarray, shape: tuple[int, int], fill: float) -> np.ndarray:
    """Scale ``x`` to fit ``shape`` keeping its aspect ratio, centred, padded with ``fill``."""
    if x.shape == shape:
        return x
    scale = min(shape[0] / x.shape[0], shape[1] / x.shape[1])
    h, w = max(1, round(x.shape[0] * scale)), max(1, round(x.shape[1] * scale))
    out = np.full(shape, fill, dtype=np.float32)
    top, left = (shape[0] - h) // 2, (shape[1] - w) // 2
    out[top : top + h, left : left + w] = resize(x, (h, w))
    return out


def center_like_mnist(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """MNIST's recipe for light-on-dark ``x``: crop to the ink, fit 20/28 of ``shape``, centre of mass in the middle."""
    ink = np.clip(x - border_median(x), 0, None)
    if ink.max() == 0:
        return np.zeros(shape, dtype=np.float32)
    ink *= 255 / ink.max()
    rows, cols = np.nonzero(ink >= INK_THRESHOLD)
    crop = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    box = (max(1, round(shape[0] * MNIST_INNER)), max(1, round(shape[1] * MNIST_INNER)))
    digit = fit_into(crop, box, 0.0)  # (box)
    weights = digit / digit.sum()
    cy, cx = (weights.sum(axis=1) @ np.arange(box[0])), (weights.sum(axis=0) @ np.arange(box[1]))
    top = int(np.clip(round(shape[0] / 2 - cy), 0, shape[0] - box[0]))
    left = int(np.clip(round(shape[1] / 2 - cx), 0, shape[1] - box[1]))
    out = np.zeros(shape, dtype=np.float32)
    out[top : top + box[0], left : left + box[1]] = digit
    return out


def preprocess(gray: np.ndarray, shape: tuple[int, int], invert: str = "auto", center: bool = False) -> np.ndarray:
    """A grayscale 0..255 image ``(H, W)`` -> float32 light-on-dark pixels of ``shape`` (steps 2 and 3)."""
    x = np.asarray(gray, dtype=np.float32)
    if needs_inversion(x, invert):
        x = 255 - x
    if center:
        return center_like_mnist(x, shape)
    return fit_into(x, shape, border_median(x))


# --- output ----------------------------------------------------------------------------------------


def result(name: str, proba: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """The output record of one input: prediction, top-3 (most probable first) and all probabilities."""
    order = np.argsort(-proba, kind="stable")[:TOP_K]  # ties: lower class index first
    top = [{"class": class_names[i], "probability": float(proba[i])} for i in order]
    return {
        "file": name,
        "prediction": top[0]["class"],
        "top3": top,
        "probabilities": {c: float(p) for c, p in zip(class_names, proba, strict=True)},
    }


def format_line(record: dict[str, Any]) -> str:
    """``file: prediction  (class p, class p, class p)``, one terminal-safe line (names escaped)."""
    top = ", ".join(f"{terminal(t['class'])} {t['probability']:.4f}" for t in record["top3"])
    return f"{terminal(record['file'])}: {terminal(record['prediction'])}  ({top})"


def predict_file(model: Model, path: Path, invert: str, center: bool) -> list[dict[str, Any]]:
    """Records for every input in ``path`` (raises DataError naming the file if it is unusable)."""
    names, images = read_input(path)
    return predict_images(model, str(path), names, images, invert, center)


def predict_images(
    model: Model, source: str, names: list[str], images: Sequence[np.ndarray] | np.ndarray, invert: str, center: bool
) -> list[dict[str, Any]]:
    """Records for grayscale ``images`` (named ``names``) read from ``source``: steps 2 to 4 of the module docstring."""
    pixels = np.stack([preprocess(g, model.image_shape, invert, center) for g in images])  # (N, rows, cols)
    with np.errstate(over="ignore", invalid="ignore"):  # checked below, as one line
        proba = model.net.predict_proba(normalize(pixels, model.mean, model.std))  # (N, C)
    if not np.isfinite(proba).all():
        raise DataError(f"{source}: the model's probabilities are not finite (NaN or infinite); retrain it")
    return [result(n, p, model.class_names) for n, p in zip(names, proba, strict=True)]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = cli.ArgumentParser(
        prog="python -m mnist_pipeline.predict",
        description="Predict the class of images (PNG, JPEG, ...) and IDX image files with a trained model.",
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="image or IDX (.gz or raw) files")
    parser.add_argument("--model", type=Path, default=MODEL_FILE, help=f"model file (default {MODEL_FILE})")
    parser.add_argument(
        "--invert", choices=INVERT_CHOICES, default="auto", help="make dark-on-light images light-on-dark"
    )
    parser.add_argument("--center", action="store_true", help="crop, scale and centre the ink as MNIST did")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of one line per input")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    model = load_model(args.model)
    records, failed = [], 0
    for path in args.files:
        try:
            found = predict_file(model, path, args.invert, args.center)
        except PipelineError as exc:
            print(f"error: predict: {cli.error_text(str(exc))}", file=sys.stderr)
            failed += 1
            continue
        records.extend(found)
        if not args.json:
            print("\n".join(format_line(r) for r in found), flush=True)
    if args.json:
        print(json.dumps(records, indent=2))
    if failed:
        raise PipelineError(f"{failed} of {len(args.files)} input files failed")


if __name__ == "__main__":
    from mnist_pipeline.cli import run

    run(main, "predict")
