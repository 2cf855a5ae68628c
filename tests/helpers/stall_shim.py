"""Test-only: stall a process halfway through a large write, so a test can SIGKILL it there.

Copied into a directory on ``PYTHONPATH`` as ``sitecustomize.py`` by :func:`helpers.stall.write_stall_shim`,
or put before the code of a ``python -c`` script by :func:`helpers.stall.stalling_script`; never
imported by the tests themselves.

Inert unless installed: at interpreter start-up when STALL_MODULE names the module this interpreter
runs with ``-m``, or by calling :func:`install`. Then the (STALL_SKIP+1)-th write of at least
STALL_BYTES bytes through an ``os.fdopen`` file (how ``io.atomic_write`` writes) writes half its
data, flushes it, writes this process's pid to STALL_MARKER, and waits for the file STALL_RELEASE
to exist (or, without one, to be killed; at most 60 s) before finishing the write.
"""

import os
import sys
import time

_skip = [int(os.environ.get("STALL_SKIP", "0"))]  # big writes still to let through; -1: done


class StallHalfway:
    """A file object that stalls halfway through one big write (see the module docstring)."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        if len(data) < int(os.environ["STALL_BYTES"]) or _skip[0] < 0:
            return self._f.write(data)
        _skip[0] -= 1
        if _skip[0] >= 0:
            return self._f.write(data)
        half = len(data) // 2
        self._f.write(data[:half])
        self._f.flush()
        marker = os.environ["STALL_MARKER"]
        with open(marker + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(marker + ".tmp", marker)
        release = os.environ.get("STALL_RELEASE")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (release and os.path.exists(release)):
            time.sleep(0.01)
        return half + self._f.write(data[half:])

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __iter__(self):  # dunder methods bypass __getattr__: reading line by line (dulwich's .gitignore) too
        return iter(self._f)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)


def install():
    """Make every file ``os.fdopen`` opens from now on a :class:`StallHalfway`."""
    fdopen = os.fdopen
    os.fdopen = lambda *args, **kwargs: StallHalfway(fdopen(*args, **kwargs))


if os.environ.get("STALL_MODULE") and sys.orig_argv[1:3] == ["-m", os.environ["STALL_MODULE"]]:
    install()
