"""The IDX file format (LeCun's MNIST container): strict reading and writing.

Layout: two zero bytes, a dtype code, the number of dimensions ``ndim``, then
``ndim`` big-endian uint32 sizes, then the payload in C order. MNIST images are
``0x00000803`` (uint8, 3 dims: magic 2051), labels ``0x00000801`` (magic 2049).
"""

from __future__ import annotations

import gzip
import io
import math
import struct
import zlib
from pathlib import Path
from typing import Protocol

import numpy as np

from mnist_pipeline.errors import DataError
from mnist_pipeline.paths import open_regular


class Readable(Protocol):
    """A binary stream as the readers here use it: an open file, a ``GzipFile``."""

    def read(self, size: int = -1, /) -> bytes: ...


# IDX dtype code -> numpy big-endian dtype
DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
# The largest (decompressed) IDX file read: 1 GiB, about 20 times MNIST's 60000x28x28 training
# images (47 MB). Sizes are checked against it before anything is allocated or decompressed.
MAX_IDX_BYTES = 1 << 30
CHUNK = 1 << 20  # bytes read (and decompressed) at a time
TRAILING_SHOWN = 1 << 16  # trailing bytes counted in the error message; beyond that, "at least"


def parse(data: bytes, name: str = "<bytes>", magic: int | None = None, limit: int = MAX_IDX_BYTES) -> np.ndarray:
    """Parse IDX bytes into a native-endian array (:func:`read_stream` over ``data``)."""
    return read_stream(io.BytesIO(data), name, magic, limit)


def read_stream(f: Readable, name: str, magic: int | None = None, limit: int = MAX_IDX_BYTES) -> np.ndarray:
    """Read one IDX file from the binary stream ``f`` into a native-endian array, checking every header field.

    The header is read and checked first: its dims x itemsize must fit in ``limit`` bytes before
    anything else is read. The payload is then read in chunks and the buffer grows only as bytes
    really arrive, so a header that claims more than the stream holds costs no more than the stream;
    and at most ``limit + 1`` bytes are read in all, so a gzip bomb is never inflated.

    Parameters
    ----------
    f : binary file object
        The uncompressed IDX contents (a gzip stream is wrapped in :class:`gzip.GzipFile` by the caller).
    name : str
        What to call the data in error messages (usually its path).
    magic : int, optional
        Required magic number (``IMAGES_MAGIC`` or ``LABELS_MAGIC``); checked after
        the header itself is known to be well-formed.
    limit : int
        The largest file (header and payload) accepted, in bytes.

    Raises
    ------
    DataError
        On an empty file, a bad magic, an unknown dtype code, zero dimensions, an
        unexpected magic, dims that need more than ``limit`` bytes, or a payload whose
        length does not match the header dimensions (truncated or trailing bytes). Each
        message names ``name``.
    """
    head = _read_up_to(f, 4)
    if not head:
        raise DataError(f"{name}: empty IDX file (0 bytes); delete it and download again")
    if len(head) < 4:
        raise DataError(
            f"{name}: truncated IDX header ({len(head)} bytes, need at least 4); delete it and download again"
        )
    zero, code, ndim = struct.unpack(">HBB", head)
    if zero != 0:
        raise DataError(f"{name}: bad IDX magic 0x{head.hex()} (expected 0x0000 then dtype and ndim); not an IDX file")
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
    raw_dims = _read_up_to(f, header - 4)
    if len(raw_dims) < header - 4:
        raise DataError(f"{name}: IDX header truncated: {ndim} dims need {header} bytes, file has {4 + len(raw_dims)}")
    dims = struct.unpack(f">{ndim}I", raw_dims)
    dtype = DTYPES[code]
    size = math.prod(dims) * dtype.itemsize  # exact: corrupt dims must not wrap around
    expected = header + size
    if expected > limit:
        raise DataError(
            f"{name}: header dims {dims} need {expected} bytes, more than the {limit} bytes "
            f"({limit / 2**20:.0f} MiB) accepted for an IDX file; refusing to read it"
        )
    payload = bytearray()  # grows with the bytes that really arrive, never to more than the header's size
    while len(payload) < size:
        chunk = f.read(min(CHUNK, size - len(payload)))
        if not chunk:
            raise DataError(
                f"{name}: truncated: header dims {dims} need {expected} bytes, file has {header + len(payload)}"
            )
        payload += chunk
    probe = max(1, min(TRAILING_SHOWN, limit + 1 - expected))  # in all, at most limit + 1 bytes are read
    trailing = len(f.read(probe))
    if trailing:
        count = f"at least {trailing}" if trailing == probe else str(trailing)
        raise DataError(f"{name}: {count} trailing bytes after the {dims} payload; file is corrupt")
    array = np.frombuffer(payload, dtype=dtype).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=False)  # single bytes: no copy


def _read_up_to(f: Readable, n: int) -> bytes:
    """``n`` bytes from ``f``, or fewer at the end of the stream."""
    data = b""
    while len(data) < n and (chunk := f.read(n - len(data))):
        data += chunk
    return data


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

    The file is decompressed as it is read, never beyond :data:`MAX_IDX_BYTES` (see :func:`read_stream`).

    Raises
    ------
    DataError
        If the file is missing, not a regular file, not gzip, or fails any check of :func:`read_stream`.
    """
    path = Path(path)
    try:
        with open_regular(path) as raw, gzip.GzipFile(fileobj=raw, mode="rb") as f:
            return read_stream(f, str(path), magic)
    except FileNotFoundError as exc:
        raise DataError(f"{path} is missing; run the download stage (`dvc repro download`)") from exc
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: not a valid gzip file ({exc}); delete it and download again") from exc


def write_gz(path: str | Path, array: np.ndarray) -> None:
    """Write an array as a gzip-compressed IDX file.

    Deterministic: equal arrays give equal bytes whatever the path or time (the
    gzip header's name field is left empty and its mtime is 0).
    """
    with open(path, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as f:
        f.write(serialize(array))
