"""IDX format: round-trips for every dtype code, and one distinct error per kind of bad file."""

from __future__ import annotations

import gzip
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from mnist_pipeline import idx
from mnist_pipeline.errors import DataError

ROUND_TRIP_CASES = [
    (np.uint8, (5,)),
    (np.uint8, (3, 28, 28)),
    (np.int8, (4, 3)),
    (np.int16, (2, 3, 4)),
    (np.int32, (7,)),
    (np.float32, (2, 2, 2, 2)),
    (np.float64, (3, 5)),
    (np.uint8, (0, 28, 28)),  # an empty split is still a valid file
]


def _random_array(dtype, shape, rng: np.random.Generator) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)


def _write_raw_gz(path: Path, data: bytes) -> Path:
    with gzip.open(path, "wb") as f:
        f.write(data)
    return path


def _images_bytes(n: int = 2, rows: int = 3, cols: int = 4) -> bytes:
    return struct.pack(">HBBIII", 0, 0x08, 3, n, rows, cols) + bytes(range(n * rows * cols))


def _labels_bytes(n: int = 5) -> bytes:
    return struct.pack(">HBBI", 0, 0x08, 1, n) + bytes(range(n))


@pytest.mark.parametrize(("dtype", "shape"), ROUND_TRIP_CASES)
def test_serialize_parse_round_trip(dtype, shape) -> None:
    array = _random_array(dtype, shape, np.random.default_rng(0))
    out = idx.parse(idx.serialize(array))
    assert out.dtype == array.dtype
    assert out.dtype.isnative
    assert out.shape == array.shape
    np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize(("dtype", "shape"), ROUND_TRIP_CASES)
def test_write_gz_read_gz_round_trip(tmp_path: Path, dtype, shape) -> None:
    array = _random_array(dtype, shape, np.random.default_rng(1))
    path = tmp_path / "a.idx.gz"
    idx.write_gz(path, array)
    out = idx.read_gz(path)
    assert out.dtype == array.dtype and out.shape == array.shape
    np.testing.assert_array_equal(out, array)


def test_serialize_is_big_endian_with_documented_header() -> None:
    data = idx.serialize(np.array([[1, 2], [3, 4]], dtype=np.int16))
    assert data[:4] == bytes([0, 0, 0x0B, 2])
    assert struct.unpack(">II", data[4:12]) == (2, 2)
    assert data[12:] == struct.pack(">4h", 1, 2, 3, 4)


def test_serialize_accepts_big_endian_input() -> None:
    array = np.arange(6, dtype=">i4").reshape(2, 3)
    np.testing.assert_array_equal(idx.parse(idx.serialize(array)), array)


def test_mnist_magics_match_the_spec() -> None:
    images = idx.parse(_images_bytes(), magic=idx.IMAGES_MAGIC)
    labels = idx.parse(_labels_bytes(), magic=idx.LABELS_MAGIC)
    assert (idx.IMAGES_MAGIC, idx.LABELS_MAGIC) == (2051, 2049)
    assert images.shape == (2, 3, 4) and labels.shape == (5,)
    assert images[1, 2, 3] == 23 and labels.tolist() == [0, 1, 2, 3, 4]


def test_write_gz_is_deterministic(tmp_path: Path) -> None:
    array = np.arange(100, dtype=np.uint8).reshape(10, 10)
    idx.write_gz(tmp_path / "a.gz", array)
    idx.write_gz(tmp_path / "b.gz", array)
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()


@pytest.mark.parametrize("array", [np.zeros(3, dtype=np.int64), np.zeros(3, dtype=bool), np.float16(1.0)])
def test_serialize_rejects_dtypes_without_a_code(array) -> None:
    with pytest.raises(ValueError, match="no IDX code"):
        idx.serialize(array)


def test_serialize_rejects_zero_dimensions() -> None:
    with pytest.raises(ValueError, match="0-dimensional"):
        idx.serialize(np.uint8(3))


# Each corrupt file -> (contents, regex the message must match). Every message must also name the file.
BAD_FILES = {
    "bad_magic": (b"\x1f\x8b" + _images_bytes()[2:], r"bad IDX magic 0x1f8b0803"),
    "unknown_dtype": (b"\x00\x00\x07\x03" + _images_bytes()[4:], r"unknown IDX dtype code 0x07; valid: 0x08"),
    "labels_for_images": (_labels_bytes(), r"IDX magic 2049 \(labels\) but expected 2051 \(images\)"),
    "truncated_payload": (_images_bytes()[:-1], r"truncated: header dims \(2, 3, 4\) need 40 bytes, file has 39"),
    "truncated_header": (_images_bytes()[:10], r"IDX header truncated: 3 dims need 16 bytes, file has 10"),
    "short_header": (b"\x00\x00", r"truncated IDX header \(2 bytes"),
    "trailing_bytes": (_images_bytes() + b"\x00\x00\x00", r"3 trailing bytes after the \(2, 3, 4\) payload"),
    "zero_dims": (b"\x00\x00\x08\x00", r"declares 0 dimensions"),
    "empty": (b"", r"empty IDX file \(0 bytes\)"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_read_gz_rejects_bad_file_with_a_specific_message(tmp_path: Path, case: str) -> None:
    data, message = BAD_FILES[case]
    path = _write_raw_gz(tmp_path / f"{case}.gz", data)
    with pytest.raises(DataError, match=message) as info:
        idx.read_gz(path, idx.IMAGES_MAGIC)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("dims", [(2**32 - 1,) * 3, (65536,) * 4])
def test_huge_header_dims_do_not_overflow(dims) -> None:
    # 65536**4 == 2**64: a wrapping 64-bit product would be 0 and "match" an empty payload.
    data = struct.pack(f">HBB{len(dims)}I", 0, 0x08, len(dims), *dims)
    need = 4 + 4 * len(dims) + int(np.prod(np.array(dims, dtype=object)))
    with pytest.raises(
        DataError, match=rf"f\.idx: header dims .* need {need} bytes, more than the {idx.MAX_IDX_BYTES}"
    ):
        idx.parse(data, "f.idx")


def test_bad_file_messages_are_distinct() -> None:
    messages = [message for _, message in BAD_FILES.values()]
    for i, a in enumerate(messages):
        for b in messages[i + 1 :]:
            assert a != b


def test_parse_error_names_the_source() -> None:
    with pytest.raises(DataError, match=re.escape("some/file.gz: bad IDX magic")):
        idx.parse(b"\x01\x02\x08\x01\x00\x00\x00\x00", "some/file.gz")


def test_expected_magic_checked_for_labels_too(tmp_path: Path) -> None:
    path = _write_raw_gz(tmp_path / "labels.gz", _images_bytes())
    with pytest.raises(DataError, match=r"IDX magic 2051 \(images\) but expected 2049 \(labels\)"):
        idx.read_gz(path, idx.LABELS_MAGIC)
    assert idx.read_gz(path).shape == (2, 3, 4)  # without a required magic the same file is fine


def test_read_gz_rejects_a_file_that_is_not_gzip(tmp_path: Path) -> None:
    path = tmp_path / "plain.gz"
    path.write_bytes(_images_bytes())  # valid IDX, but not compressed
    with pytest.raises(DataError, match=re.escape(f"{path}: not a valid gzip file")):
        idx.read_gz(path, idx.IMAGES_MAGIC)


def test_read_gz_rejects_a_truncated_gzip_stream(tmp_path: Path) -> None:
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(_images_bytes() * 50)[:-20])
    with pytest.raises(DataError, match=re.escape(f"{path}: not a valid gzip file")):
        idx.read_gz(path)


def test_read_gz_empty_file_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "zero.gz"
    path.write_bytes(b"")
    with pytest.raises(DataError, match=re.escape(f"{path}: empty IDX file")):
        idx.read_gz(path, idx.IMAGES_MAGIC)


def test_read_gz_missing_file_says_how_to_get_it(tmp_path: Path) -> None:
    path = tmp_path / "absent.gz"
    with pytest.raises(DataError, match=re.escape(f"{path} is missing; run the download stage")):
        idx.read_gz(path)
