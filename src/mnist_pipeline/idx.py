"""The IDX file format (LeCun's MNIST container): strict reading and writing.

Layout: two zero bytes, a dtype code, the number of dimensions ``ndim``, then
``ndim`` big-endian uint32 sizes, then the payload in C order. MNIST images are
``0x00000803`` (uint8, 3 dims: magic 2051), labels ``0x00000801`` (magic 2049).
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from mnist_pipeline.errors import DataError

# IDX dtype code -> numpy big-endian dtype
DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049


def parse(data: bytes, name: str = "<bytes>", magic: int | None = None) -> np.ndarray:
    """Parse IDX bytes into a native-endian array, checking every header field.

    Parameters
    ----------
    data : bytes
        The uncompressed IDX file contents.
    name : str
        What to call the data in error messages (usually its path).
    magic : int, optional
        Required magic number (``IMAGES_MAGIC`` or ``LABELS_MAGIC``); checked after
        the header itself is known to be well-formed.

    Raises
    ------
    DataError
        On an empty file, a bad magic, an unknown dtype code, zero dimensions, an
        unexpected magic, or a payload whose length does not match the header
        dimensions (truncated or trailing bytes). Each message names ``name``.
    """
    if not data:
        raise DataError(f"{name}: empty IDX file (0 bytes); delete it and download again")
    if len(data) < 4:
        raise DataError(
            f"{name}: truncated IDX header ({len(data)} bytes, need at least 4); delete it and download again"
        )
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0:
        raise DataError(
            f"{name}: bad IDX magic 0x{data[:4].hex()} (expected 0x0000 then dtype and ndim); not an IDX file"
        )
    if code not in DTYPES:
        raise DataError(
            f"{name}: unknown IDX dtype code 0x{code:02x}; valid: {', '.join(f'0x{c:02x}' for c in DTYPES)}"
        )
    if ndim == 0:
        raise DataError(f"{name}: IDX header declares 0 dimensions")
    found = (code << 8) | ndim
    if magic is not None and found != magic:
        what = {IMAGES_MAGIC: "images", LABELS_MAGIC: "labels"}
        raise DataError(
            f"{name}: IDX magic {found} ({what.get(found, 'unknown kind')}) but expected {magic} "
            f"({what.get(magic, 'unknown kind')}); wrong file in its place?"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: IDX header truncated: {ndim} dims need {header} bytes, file has {len(data)}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = DTYPES[code]
    expected = header + math.prod(dims) * dtype.itemsize  # exact: corrupt dims must not wrap around
    if len(data) < expected:
        raise DataError(f"{name}: truncated: header dims {dims} need {expected} bytes, file has {len(data)}")
    if len(data) > expected:
        raise DataError(f"{name}: {len(data) - expected} trailing bytes after the {dims} payload; file is corrupt")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="))


def serialize(array: np.ndarray) -> bytes:
    """Encode an array as IDX bytes (inverse of :func:`parse`).

    Raises
    ------
    ValueError
        If the dtype has no IDX code or the array is 0-dimensional.
    """
    array = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise ValueError(f"dtype {array.dtype} has no IDX code")
    if array.ndim == 0:
        raise ValueError("IDX cannot hold a 0-dimensional array")
    header = struct.pack(">HBB", 0, codes[native], array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(DTYPES[codes[native]]).tobytes()


def read_gz(path: str | Path, magic: int | None = None) -> np.ndarray:
    """Read a gzip-compressed IDX file, optionally requiring a magic (2051/2049).

    Raises
    ------
    DataError
        If the file is missing, not gzip, or fails any check of :func:`parse`.
    """
    path = Path(path)
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError as exc:
        raise DataError(f"{path} is missing; run the download stage (`dvc repro download`)") from exc
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: not a valid gzip file ({exc}); delete it and download again") from exc
    return parse(data, str(path), magic)


def write_gz(path: str | Path, array: np.ndarray) -> None:
    """Write an array as a gzip-compressed IDX file.

    Deterministic: equal arrays give equal bytes whatever the path or time (the
    gzip header's name field is left empty and its mtime is 0).
    """
    with open(path, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as f:
        f.write(serialize(array))
