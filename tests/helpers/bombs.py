"""Small files that claim or inflate to a lot: gzip and zip bombs, lying ``.npy`` headers, PNG headers.

Built in a blink and a few MB of memory: the zeros are compressed once, as 1 MiB blocks each ended
by a full flush (which resets the compressor), so every block compresses to the same bytes and the
stream is that block repeated.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import numpy as np

MIB = 1 << 20
_ZEROS = bytes(MIB)


def deflate_zeros(prefix: bytes, mib: int) -> tuple[bytes, int]:
    """A raw deflate stream of ``prefix`` then ``mib`` MiB of zero bytes, and the CRC-32 of all of it."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(_ZEROS) + compressor.flush(zlib.Z_FULL_FLUSH)
    assert compressor.compress(_ZEROS) + compressor.flush(zlib.Z_FULL_FLUSH) == block  # the trick holds
    crc = zlib.crc32(prefix)
    for _ in range(mib):
        crc = zlib.crc32(_ZEROS, crc)
    return head + block * mib + compressor.flush(), crc


def gzip_bomb(prefix: bytes, mib: int) -> bytes:
    """A valid gzip file of ``prefix`` then ``mib`` MiB of zeros (about 1 KB per MiB)."""
    stream, crc = deflate_zeros(prefix, mib)
    size = (len(prefix) + mib * MIB) & 0xFFFFFFFF
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + stream + struct.pack("<II", crc, size)


def npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    """The ``.npy`` header (format 1.0) numpy writes for an array of ``shape`` and ``descr``."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def npz_with_member(name: str, data: bytes) -> bytes:
    """A stored (uncompressed) ``.npz`` holding one member ``name`` with exactly ``data``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(name, data)
    return buf.getvalue()


def npz_bomb(name: str, mib: int) -> bytes:
    """A ``.npz`` with one deflated member ``name``: a float32 ``.npy`` of ``mib`` MiB of zeros (~1 KB per MiB)."""
    prefix = npy_header((mib * MIB // 4,))
    stream, crc = deflate_zeros(prefix, mib)
    usize, encoded = len(prefix) + mib * MIB, name.encode()
    fields = (20, 0, zipfile.ZIP_DEFLATED, 0, 0x21, crc, len(stream), usize, len(encoded), 0)  # 0x21: 1980-01-01
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, *fields) + encoded
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, *fields, 0, 0, 0, 0, 0) + encoded
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), len(local) + len(stream), 0)
    return local + stream + central + end


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` 8-bit grayscale pixels (and holds none)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
