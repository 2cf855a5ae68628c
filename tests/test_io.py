"""Tests for ``io.py``: npz round trips with stable bytes, clear load errors, atomic text writers.

Fault behaviour (writers that raise or are SIGKILLed, pickle-bearing files) is in
``tests/reliability/test_atomic_outputs.py`` and ``test_no_pickle.py``.
"""

from __future__ import annotations

import json
import os
import stat
import zipfile

import numpy as np
import pytest

from mnist_pipeline import io
from mnist_pipeline.errors import DataError


def test_save_and_load_npz_round_trip_preserves_values_dtypes_and_meta(tmp_path):
    path = tmp_path / "a.npz"
    arrays = {"x": np.arange(12, dtype=np.float32).reshape(3, 4), "y": np.array([1, 2, 3], np.uint8)}

    io.save_npz(path, {"normalize": "scale", "mean": 0.5}, **arrays)
    loaded = io.load_npz(path, ["x", "y"])

    assert sorted(loaded) == ["meta", "x", "y"]
    for name, array in arrays.items():
        assert loaded[name].dtype == array.dtype
        np.testing.assert_array_equal(loaded[name], array)
    assert io.npz_meta(loaded, path) == {"mean": 0.5, "normalize": "scale"}


def test_save_npz_is_byte_identical_for_equal_arrays_whatever_the_order(tmp_path):
    x, y = np.ones((5, 2), np.float32), np.zeros(5, np.uint8)
    io.save_npz(tmp_path / "1.npz", {"b": 1, "a": 2}, x=x, y=y)
    io.save_npz(tmp_path / "2.npz", {"a": 2, "b": 1}, y=y, x=x)

    assert (tmp_path / "1.npz").read_bytes() == (tmp_path / "2.npz").read_bytes()
    with zipfile.ZipFile(tmp_path / "1.npz") as zf:
        assert zf.namelist() == ["meta.npy", "x.npy", "y.npy"]
        assert {info.date_time for info in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_load_npz_missing_file_names_it(tmp_path):
    with pytest.raises(DataError, match=r"missing\.npz is missing; run `dvc repro`"):
        io.load_npz(tmp_path / "missing.npz")


def test_load_npz_names_the_first_missing_required_array(tmp_path):
    io.save_npz(tmp_path / "a.npz", x=np.zeros(2))

    with pytest.raises(DataError, match=r"a\.npz lacks array 'onehot'"):
        io.load_npz(tmp_path / "a.npz", ["x", "onehot", "y"])


def test_load_npz_refuses_a_bare_npy_array(tmp_path):
    path = tmp_path / "a.npz"
    with open(path, "wb") as f:
        np.save(f, np.zeros(3))

    with pytest.raises(DataError, match=r"a\.npz is not an \.npz archive \(starts with b'\\x93NUM'\)"):
        io.load_npz(path)


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04truncated"], ids=["empty", "text", "cut"])
def test_load_npz_refuses_unreadable_files(tmp_path, content):
    path = tmp_path / "a.npz"
    path.write_bytes(content)

    with pytest.raises(DataError, match=r"a\.npz is not (an \.npz archive|a readable \.npz)"):
        io.load_npz(path)


def test_load_npz_truncated_archive_is_refused(tmp_path):
    path = tmp_path / "a.npz"
    io.save_npz(path, x=np.arange(1000, dtype=np.float32))
    path.write_bytes(path.read_bytes()[:2000])

    with pytest.raises(DataError, match="not a readable .npz"):
        io.load_npz(path)


def test_load_npz_corrupt_member_header_is_called_corrupt_not_pickled(tmp_path):
    path = tmp_path / "a.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.npy", b"\x93NUMPY\x01\x00garbage")

    with pytest.raises(DataError, match=r"a\.npz is corrupt"):
        io.load_npz(path)


@pytest.mark.parametrize(("offset", "value"), [(6, 0x1), (8, 99)], ids=["encrypted-flag", "compression-99"])
def test_load_npz_member_zipfile_cannot_extract_is_a_data_error(tmp_path, offset, value):
    # zipfile raises RuntimeError (encrypted) or NotImplementedError (unknown method) for these
    path = tmp_path / "a.npz"
    io.save_npz(path, x=np.arange(10, dtype=np.float32))
    data = bytearray(path.read_bytes())
    for header in (b"PK\x03\x04", b"PK\x01\x02"):  # the local header and the central directory entry
        at = data.find(header) + (offset if header == b"PK\x03\x04" else offset + 2)
        data[at : at + 2] = value.to_bytes(2, "little")
    path.write_bytes(bytes(data))

    with pytest.raises(DataError, match=r"a\.npz: member 'x\.npy' is encrypted or compressed in a way numpy never"):
        io.load_npz(path)


def test_load_npz_on_a_directory_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="is a directory, not a regular file"):
        io.load_npz(tmp_path)


def test_npz_meta_missing_or_corrupt(tmp_path):
    path = tmp_path / "a.npz"
    with pytest.raises(DataError, match="has no metadata"):
        io.npz_meta({"x": np.zeros(1)}, path)
    with pytest.raises(DataError, match="has corrupt metadata"):
        io.npz_meta({"meta": np.array("{not json")}, path)


def test_write_json_sorted_keys_trailing_newline(tmp_path):
    path = tmp_path / "reports" / "m.json"  # parent directories are created

    io.write_json(path, {"b": 1, "a": {"d": 2.5, "c": [1, 2]}})

    text = path.read_text(encoding="utf-8")
    assert text == json.dumps({"a": {"c": [1, 2], "d": 2.5}, "b": 1}, indent=2) + "\n"
    assert os.listdir(path.parent) == ["m.json"]


def test_write_csv_uses_unix_line_endings(tmp_path):
    io.write_csv(tmp_path / "p.csv", ("actual", "predicted"), [[1, 2], [3, 4]])

    assert (tmp_path / "p.csv").read_bytes() == b"actual,predicted\n1,2\n3,4\n"


def test_write_text_is_utf8(tmp_path):
    io.write_text(tmp_path / "r.txt", "accuracy ≥ 0.98\n")

    assert (tmp_path / "r.txt").read_bytes() == "accuracy ≥ 0.98\n".encode()


def test_atomic_write_replaces_content_and_leaves_no_temp(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")

    with io.atomic_write(path) as f:
        f.write(b"new")
        assert path.read_bytes() == b"old"  # nothing visible until the writer finishes

    assert path.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_atomic_write_gives_normal_permissions(tmp_path):
    old_umask = os.umask(0o022)
    try:
        io.write_json(tmp_path / "m.json", {})
        io.save_npz(tmp_path / "a.npz", x=np.zeros(1))
    finally:
        os.umask(old_umask)

    # A temp file from tempfile.mkstemp would be 0o600 and stay so after the rename.
    assert stat.S_IMODE((tmp_path / "m.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "a.npz").stat().st_mode) == 0o644
