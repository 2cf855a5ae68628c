"""The IDX file format (LeCun's MNIST container): strict reading and writing.

Layout: two zero bytes, a dtype code, the number of dimensions ``ndim``, then
``ndim`` big-endian uint32 sizes, then the payload in C order. MNIST images are
``0x00000803`` (uint8, 3 dims: magic 2051), labels ``0x00000801`` (magic 2049).
"""

from __future__ import annotations

import gzip
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


def parse(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into an array, checking every header field.

    Raises
    ------
    DataError
        On a bad magic, unknown dtype, or a payload whose length does not match
        the header dimensions (truncated or trailing bytes).
    """
    if len(data) < 4:
        raise DataError(f"{name}: empty or truncated IDX file ({len(data)} bytes); delete it and download again")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0:
        raise DataError(f"{name}: bad IDX magic 0x{data[:4].hex()} (expected 0x0000 then dtype and ndim); not an IDX file")
    if code not in DTYPES:
        raise DataError(f"{name}: unknown IDX dtype code 0x{code:02x}; valid: {', '.join(f'0x{c:02x}' for c in DTYPES)}")
    if ndim == 0:
        raise DataError(f"{name}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: IDX header truncated: {ndim} dims need {header} bytes, file has {len(data)}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = DTYPES[code]
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) < expected:
        raise DataError(f"{name}: truncated: header dims {dims} need {expected} bytes, file has {len(data)}")
    if len(data) > expected:
        raise DataError(f"{name}: {len(data) - expected} trailing bytes after the {dims} payload; file is corrupt")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="))


def serialize(array: np.ndarray) -> bytes:
    """Encode an array as IDX bytes (inverse of :func:`parse`)."""
    array = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise ValueError(f"dtype {array.dtype} has no IDX code")
    header = struct.pack(">HBB", 0, codes[native], array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(DTYPES[codes[native]]).tobytes()


def read_gz(path: str | Path, magic: int | None = None) -> np.ndarray:
    """Read a gzip-compressed IDX file, optionally requiring a magic (2051/2049)."""
    path = Path(path)
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError as exc:
        raise DataError(f"{path} is missing; run the download stage (`dvc repro download`)") from exc
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: not a valid gzip file ({exc}); delete it and download again") from exc
    if magic is not None and len(data) >= 4:
        found = struct.unpack(">I", data[:4])[0]
        if found != magic:
            raise DataError(f"{path}: IDX magic {found} but expected {magic}; wrong file in its place?")
    return parse(data, str(path))


def write_gz(path: str | Path, array: np.ndarray) -> None:
    """Write an array as a gzip-compressed IDX file (deterministic: mtime 0)."""
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(serialize(array))
