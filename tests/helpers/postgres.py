"""A real, throw-away PostgreSQL server for tests: ``initdb`` + ``pg_ctl`` in a temp dir on 127.0.0.1.

:func:`postgres_server` is a context manager yielding the SQLAlchemy URL of a fresh database
(``postgresql+psycopg://postgres@127.0.0.1:PORT/tune``, trust authentication, so no password). The
server listens on 127.0.0.1 only, keeps its Unix socket in its own directory, and is stopped with
``pg_ctl stop -m immediate`` and deleted afterwards. PostgreSQL refuses to run as root, so as root
the server runs as ``nobody``, in a directory it owns. :func:`find_bin_dir` returns None when no
server binaries are installed (the caller skips, saying so).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from helpers.ports import free_port

DATABASE = "tune"
UNPRIVILEGED = "nobody"
START_SECONDS = 60


def find_bin_dir() -> Path | None:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres`` (PATH first, then Debian's layout)."""
    on_path = shutil.which("initdb")
    candidates = ([str(Path(on_path).resolve().parent)] if on_path else []) + sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), reverse=True
    )
    for directory in candidates:
        if all((Path(directory) / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return Path(directory)
    return None


def _as_server_user() -> dict[str, Any]:
    """subprocess arguments that drop root to ``nobody`` (PostgreSQL will not run as root)."""
    if os.geteuid() != 0:
        return {}
    return {
        "user": UNPRIVILEGED,
        "group": UNPRIVILEGED if _group_exists(UNPRIVILEGED) else "nogroup",
        "extra_groups": [],
    }


def _group_exists(name: str) -> bool:
    import grp

    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


@contextlib.contextmanager
def postgres_server(bin_dir: Path) -> Iterator[str]:
    """Start a server from ``bin_dir``, create database ``tune``, yield its URL; stop and delete it after."""
    root = Path(tempfile.mkdtemp(prefix="tune-pg-"))  # under /tmp: reachable by `nobody`, unlike pytest's 0700 dirs
    drop = _as_server_user()
    if drop:
        shutil.chown(root, user=UNPRIVILEGED)
    data, port = root / "data", free_port()
    env = {**os.environ, "LC_ALL": "C", "TZ": "UTC"}

    def run(*cmd: str | Path, timeout: float = START_SECONDS) -> None:
        subprocess.run(
            [str(c) for c in cmd], check=True, capture_output=True, env=env, cwd=root, timeout=timeout, **drop
        )

    try:
        run(bin_dir / "initdb", "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync")
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
        run(
            bin_dir / "pg_ctl",
            "-D",
            data,
            "-l",
            root / "server.log",
            "-o",
            options,
            "-w",
            "-t",
            str(START_SECONDS),
            "start",
        )
        run(bin_dir / "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", DATABASE)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/{DATABASE}"
    except subprocess.CalledProcessError as exc:
        log = (root / "server.log").read_text(errors="replace") if (root / "server.log").exists() else ""
        raise RuntimeError(f"{exc.cmd[0]} failed: {exc.stderr.decode(errors='replace')}\n{log}") from exc
    finally:
        if (data / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.SubprocessError):
                run(bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop", timeout=30)
        time.sleep(0.1)
        shutil.rmtree(root, ignore_errors=True)
