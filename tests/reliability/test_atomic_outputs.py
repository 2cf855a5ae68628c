"""Atomic outputs: a writer that fails or is SIGKILLed leaves the old complete file or none.

``io.atomic_write`` streams into a hidden temp file beside the target and renames
it over the target only after the last byte is flushed and fsynced. These tests
break the writer at the worst moments: an exception midway, and a SIGKILL of a
subprocess that has written half of a large ``save_npz`` entry to disk.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from helpers.files import listing
from helpers.stall import reaped, stall_env, stalling_script, wait_for_stall
from mnist_pipeline import io
from mnist_pipeline.errors import DataError

pytestmark = pytest.mark.timeout(60)

BIG = 4 << 20  # float32 elements per array: 16 MiB, so a write is caught midway


def version(path: Path) -> int:
    """The single version number a complete file holds; fails on a partial or mixed file."""
    arrays = io.load_npz(path, ["x", "meta"])
    v = io.npz_meta(arrays, path)["version"]
    assert arrays["x"].shape == (BIG,)
    assert np.all(arrays["x"] == v)
    return v


def save_version(path: Path, v: int) -> None:
    io.save_npz(path, {"version": v}, x=np.full(BIG, v, np.float32))


# --- exceptions inside the writer -------------------------------------------------------------


@pytest.mark.parametrize("mode", ["wb", "w"])
def test_writer_raising_midway_leaves_old_file_intact(tmp_path, mode):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old complete content")

    with pytest.raises(RuntimeError, match="boom"), io.atomic_write(path, mode) as f:
        f.write(b"new partial " if "b" in mode else "new partial ")
        f.flush()
        raise RuntimeError("boom")

    assert path.read_bytes() == b"old complete content"
    assert listing(tmp_path) == ["out.bin"]  # the temp file is gone too


def test_writer_raising_midway_leaves_no_file_when_there_was_none(tmp_path):
    with pytest.raises(KeyboardInterrupt), io.atomic_write(tmp_path / "out.json", "w") as f:
        f.write('{"half": ')
        raise KeyboardInterrupt  # BaseException too: Ctrl-C mid-write

    assert listing(tmp_path) == []


def test_save_npz_failing_after_first_array_leaves_old_file_intact(tmp_path):
    path = tmp_path / "train.npz"
    save_version(path, 1)

    # Entries are written in sorted order: "a" (big) is on disk before "z" fails to serialize.
    with pytest.raises(ValueError, match="allow_pickle=False"):
        io.save_npz(path, a=np.zeros(BIG, np.float32), z=np.array([object()], dtype=object))

    assert version(path) == 1
    assert listing(tmp_path) == ["train.npz"]


# --- SIGKILL mid-write ------------------------------------------------------------------------

# The child stalls halfway through its first big write (helpers/stall_shim.py): it writes the first
# half, flushes it to disk, reports its pid in a marker file, then waits until it is killed.
PRELUDE = """
import sys
import numpy as np
from mnist_pipeline import io
path = sys.argv[1]
"""
MIN_STALL = (1 << 20) + 1  # bytes: only the arrays' data, never a zip header

WRITERS = {
    "save_npz": f"io.save_npz(path, {{'version': 2}}, x=np.full({BIG}, 2, np.float32))",
    "atomic_write": "with io.atomic_write(path) as f: f.write(b'2' * (4 << 20))",
}


def kill_midway(path: Path, writer: str) -> None:
    """Run ``writer`` in a subprocess, SIGKILL it once half its data is on disk, check that it was."""
    with tempfile.TemporaryDirectory() as scratch:  # the marker stays out of path's directory
        marker = Path(scratch) / "stalled"
        child = subprocess.Popen(
            [sys.executable, "-c", stalling_script(PRELUDE + WRITERS[writer]), str(path)],
            env={**os.environ, **stall_env(None, marker, min_bytes=MIN_STALL)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        with reaped(child):
            assert wait_for_stall(marker, child) == child.pid
            temps = [p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.") and p.suffix == ".tmp"]
            assert len(temps) == 1 and temps[0].stat().st_size >= 1 << 20  # really killed mid-write
            child.send_signal(signal.SIGKILL)
            assert child.wait(timeout=10) == -signal.SIGKILL


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_sigkill_mid_write_leaves_old_complete_file(tmp_path, writer):
    path = tmp_path / "model.npz"
    save_version(path, 1)
    old = path.read_bytes()

    kill_midway(path, writer)

    assert path.read_bytes() == old
    assert version(path) == 1


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_sigkill_mid_write_leaves_no_file_when_there_was_none(tmp_path, writer):
    path = tmp_path / "model.npz"

    kill_midway(path, writer)

    assert not path.exists()
    with pytest.raises(DataError, match="is missing"):
        io.load_npz(path)


def test_next_write_after_sigkill_succeeds_and_clears_the_dead_writers_temp(tmp_path):
    path = tmp_path / "model.npz"
    save_version(path, 1)
    kill_midway(path, "save_npz")
    assert len(listing(tmp_path)) == 2  # model.npz and the killed writer's temp file

    save_version(path, 3)

    assert version(path) == 3
    assert listing(tmp_path) == ["model.npz"]


def test_temp_file_of_a_live_writer_is_left_alone(tmp_path):
    path = tmp_path / "model.npz"
    live = tmp_path / f".model.npz.{os.getppid()}.cafe.tmp"  # our parent is alive
    live.write_bytes(b"someone else is writing")

    save_version(path, 1)

    assert live.exists()


LOOP = """
import itertools, sys
import numpy as np
from mnist_pipeline import io
for v in itertools.count(1):
    io.save_npz(sys.argv[1], {"version": v}, x=np.full(int(sys.argv[2]), v, np.float32))
    print(v, flush=True)
"""


@pytest.mark.parametrize("delay", [0.0, 0.013, 0.029])
def test_sigkill_at_any_moment_of_repeated_saves_leaves_one_complete_version(tmp_path, delay):
    # Unpatched writer killed at an arbitrary point (after 2 saves plus ``delay``): whatever the
    # timing, the file must hold exactly one complete version.
    path = tmp_path / "prepared.npz"
    child = subprocess.Popen([sys.executable, "-c", LOOP, str(path), str(BIG)], stdout=subprocess.PIPE, text=True)
    try:
        while int(child.stdout.readline() or "-1") < 2:
            assert child.poll() is None
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        child.kill()
        child.communicate()

    assert version(path) >= 2
