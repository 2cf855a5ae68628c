"""Run a command as a child process under a memory cap and a time bound, and read its peak RSS.

The cap is ``RLIMIT_AS`` (address space) set in the child before it starts, so an allocation
beyond it fails there (a ``MemoryError``) instead of swapping the machine; the peak RSS comes from
``wait4``'s resource usage of that child alone.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

MEMORY_CAP = 1 << 30  # bytes of address space for the child
TIMEOUT = 60.0  # seconds
CLEARED = ("LOGLEVEL", "DATA_MIRROR")  # inherited variables that would change what the child does


@dataclass(frozen=True)
class Capped:
    """How a capped run ended: exit code, output, peak resident memory, and whether it ran out of time."""

    returncode: int
    stdout: str
    stderr: str
    peak_rss: int  # bytes
    timed_out: bool

    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]


def run_capped(
    args: Sequence[str | Path],
    cwd: Path,
    env: dict[str, str] | None = None,
    memory: int = MEMORY_CAP,
    timeout: float = TIMEOUT,
) -> Capped:
    """Run ``args`` in ``cwd`` with at most ``memory`` bytes of address space; kill it after ``timeout`` s.

    The child gets this environment less :data:`CLEARED`, plus ``env``.
    """

    def limit_memory() -> None:  # runs in the child, before exec
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [str(a) for a in args],
            cwd=cwd,
            env={**{k: v for k, v in os.environ.items() if k not in CLEARED}, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            text=True,
            preexec_fn=limit_memory,
        )
        deadline = time.monotonic() + timeout
        timed_out = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                timed_out = True
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.01)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: Popen must not wait again
        out.seek(0)
        err.seek(0)
        return Capped(proc.returncode, out.read(), err.read(), usage.ru_maxrss * 1024, timed_out)


def python_module(module: str, *args: str | Path) -> list[str | Path]:
    """The command line that runs ``python -m module args...`` with this interpreter."""
    return [sys.executable, "-m", module, *args]
