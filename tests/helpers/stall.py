"""Stall a process halfway through a large write, then kill it there: the test side of :mod:`helpers.stall_shim`.

Where a kill lands is chosen, not left to luck: the shim makes a process stop halfway through one
large write, with that half flushed to its temp file, and report its pid in a marker file: the
moment a non-atomic writer would leave a truncated file behind. Install it in a ``python -m``
stage with :func:`write_stall_shim` (a ``sitecustomize`` on ``PYTHONPATH``) and :func:`stall_env`,
or in a ``python -c`` script with :func:`stalling_script`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SHIM = Path(__file__).with_name("stall_shim.py")
BIG_WRITE = 100_000  # bytes; by default the shim stalls only writes this large (whole arrays, not zip headers)


def write_stall_shim(directory: Path) -> Path:
    """Write the shim as ``directory/sitecustomize.py``; return ``directory`` (for ``PYTHONPATH``)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(SHIM.read_text(encoding="utf-8"), encoding="utf-8")
    return directory


def stalling_script(code: str) -> str:
    """A ``python -c`` script: the shim, installed, then ``code``; run it with :func:`stall_env` (no module)."""
    return f"{SHIM.read_text(encoding='utf-8')}\ninstall()\n{code}"


def stall_env(
    module: str | None,
    marker: Path,
    skip: int = 0,
    release: Path | None = None,
    min_bytes: int = BIG_WRITE,
) -> dict[str, str]:
    """Environment that makes ``python -m module`` stall in its ``skip + 1``-th write of ``min_bytes`` or more.

    ``module`` None: for a :func:`stalling_script`, which installs the shim itself. Without
    ``release`` the stalled process waits to be killed (60 s at most).
    """
    env = {"STALL_MARKER": str(marker), "STALL_SKIP": str(skip), "STALL_BYTES": str(min_bytes)}
    if module is not None:
        env["STALL_MODULE"] = module
    return {**env, "STALL_RELEASE": str(release)} if release else env


def wait_for_stall(marker: Path, proc: subprocess.Popen, timeout: float = 60) -> int:
    """Wait until the shim writes ``marker`` (the stalled process's pid) and return that pid."""
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"{proc.args} exited with {proc.returncode} before stalling:\n{out}{err}")
        if time.monotonic() > deadline:
            pytest.fail(f"{proc.args} did not stall within {timeout} s")
        time.sleep(0.01)
    return int(marker.read_text())


def _runs_module(pid: int, module: str) -> bool:
    try:
        return module in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False


@contextlib.contextmanager
def reaped(proc: subprocess.Popen, marker: Path | None = None, module: str = "") -> Iterator[subprocess.Popen]:
    """Yield ``proc``; afterwards make sure it, and the ``module`` stage stalled by it (pid in ``marker``), are gone."""
    try:
        yield proc
    finally:
        if marker is not None and marker.exists():
            pid = int(marker.read_text())
            if _runs_module(pid, module):  # still our stalled stage, not a recycled pid
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
