"""Entry-point helper: logging set-up and one-line errors for every stage.

A stage's ``main()`` raises :class:`~mnist_pipeline.errors.PipelineError` (or the
model's :class:`~mnist_pipeline.mlp.errors.MLPError`) for anything the user can
fix; :func:`run` turns it (and any ``OSError``: missing permissions, a full disk)
into one line on stderr and exit status 1. Set ``LOGLEVEL=DEBUG`` or pass
``--verbose`` to see the traceback as well. Bugs (any other exception) keep
their traceback.

A stopped stage stops cleanly: SIGTERM (and SIGHUP) unwind it like Ctrl-C, so no output is left
half-written (each file is written atomically) and the live log it was rewriting is put back as it
was; it exits 143. And a
stage dies with the command that started it: if ``dvc`` (or whatever ran it, through any shell in
between) goes away, killed or crashed, the stage stops itself within a second instead of training on
as an orphan and rewriting outputs that ``dvc.lock`` no longer describes.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.mlp.errors import MLPError
from mnist_pipeline.text import clipped, terminal, terminal_lines

log = logging.getLogger("mnist_pipeline")

VERBOSE_FLAG = "--verbose"
SHELLS = {"sh", "dash", "bash", "zsh", "ksh", "fish"}  # a ``sh -c`` between dvc and the stage
WATCH_SECONDS = 0.5  # how often the stage looks whether what started it is still there
# An error line's message is cut in the middle to about this many characters (once escaped), so that
# one that echoes a pasted file or a huge value stays readable.
MAX_LINE_CHARS = 1000


class Stopped(BaseException):
    """A stop signal (SIGTERM, SIGHUP) as an exception: every ``finally`` and restore runs."""


def _stop(signum: int, frame: object) -> None:
    raise Stopped(signal.Signals(signum).name)


def _stat(pid: int) -> tuple[str, list[str]] | None:
    """Process ``pid``'s command name and the fields of ``/proc/<pid>/stat`` after it, or None if it is gone."""
    try:
        head, _, rest = Path(f"/proc/{pid}/stat").read_text().rpartition(")")
    except OSError:
        return None
    return head.partition("(")[2], rest.split()


def _identity(pid: int) -> str | None:
    """Process ``pid``'s start time (field 22 of its stat), or None if it is gone or unknown."""
    stat = _stat(pid)
    return stat[1][19] if stat and len(stat[1]) > 19 else None


def starters(pid: int | None = None) -> list[tuple[int, str]]:
    """The processes this one dies with, as ``(pid, start time)``: its parent and, while that is a
    shell, the shell's parent too (``dvc`` runs a stage through ``$SHELL -c``)."""
    chain, pid = [], os.getppid() if pid is None else pid
    while pid > 1 and (stat := _stat(pid)) is not None and len(stat[1]) > 19:
        name, fields = stat
        chain.append((pid, fields[19]))
        if name not in SHELLS or not fields[1].isdigit():
            break
        pid = int(fields[1])  # the parent
    return chain


def die_with_starters(chain: list[tuple[int, str]], period: float = WATCH_SECONDS) -> threading.Thread:
    """A daemon thread that sends this process SIGTERM once any process of ``chain`` is gone."""

    def watch() -> None:
        while all(_identity(pid) == start for pid, start in chain):
            time.sleep(period)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, name="die-with-parent", daemon=True)
    thread.start()
    return thread


def setup_logging(stage: str, verbose: bool = False) -> None:
    """Configure the root logger from ``LOGLEVEL`` (default INFO; DEBUG if ``verbose``).

    Records read ``<stage>: message``; verbose ones name the module instead. Each is one line
    with control characters shown escaped (:func:`mnist_pipeline.text.terminal`): a file name or a
    server's reason phrase cannot split it or reach the terminal as an escape sequence.
    """
    level = logging.getLevelName("DEBUG" if verbose else os.environ.get("LOGLEVEL", "INFO").upper())
    handler = logging.StreamHandler()
    handler.setFormatter(_TerminalFormatter("%(name)s: %(message)s" if verbose else f"{stage}: %(message)s"))
    logging.basicConfig(level=level if isinstance(level, int) else logging.INFO, handlers=[handler])


class _TerminalFormatter(logging.Formatter):
    """A log record through :func:`~mnist_pipeline.text.terminal`: its line, and each line of a traceback after it."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        return terminal(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's name
        return terminal_lines(super().formatException(ei))


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, whose errors are one terminal-safe line (it echoes the arguments it refuses)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {error_text(message)}; see --help\n")


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) folded into one space."""
    return " ".join(text.split())


def error_text(message: str) -> str:
    """``message`` as the text of one error line: whitespace folded, escaped for the terminal, then cut to
    about :data:`MAX_LINE_CHARS` characters."""
    return clipped(terminal(one_line(message)), MAX_LINE_CHARS)


def run_extra(name: str, load: Callable[[], Callable[[], None]], packages: tuple[str, ...]) -> None:
    """:func:`run` the command that ``load`` imports from an optional extra named ``name``; if one of the
    extra's ``packages`` is missing, say in one line how to install it (``make name``) instead of a traceback."""
    try:
        main = load()
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in packages:
            raise
        print(
            f"error: {name}: {exc.name} is not installed; run `make {name}`, or install the extra: "
            f"pip install -c requirements.lock -e '.[{name}]'",
            file=sys.stderr,
        )
        sys.exit(1)
    run(main, name)


def run(main: Callable[[], None], name: str, before: Callable[[], None] | None = None) -> None:
    """Run a stage's ``main`` and exit 0, or 1 with a one-line error on stderr.

    ``--verbose`` is taken out of ``sys.argv`` so ``main`` never sees it. ``before`` runs first,
    under the same error handling: a stage whose outputs depend on floating-point rounding passes
    :func:`mnist_pipeline.config.enter_compute_environment`, which may restart the process.
    """
    verbose = VERBOSE_FLAG in sys.argv[1:]
    if verbose:
        sys.argv = [arg for arg in sys.argv if arg != VERBOSE_FLAG]
    verbose = verbose or os.environ.get("LOGLEVEL", "").upper() == "DEBUG"
    setup_logging(name, verbose)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop)
    try:
        if before is not None:
            before()
        die_with_starters(starters())
        main()
    except (PipelineError, MLPError, OSError) as exc:
        if verbose:
            log.exception("%s failed", name)
        message = str(exc) if isinstance(exc, PipelineError | MLPError) else f"{type(exc).__name__}: {exc}"
        print(f"error: {name}: {error_text(message)}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"error: {name}: interrupted", file=sys.stderr)
        sys.exit(130)
    except Stopped as exc:
        print(f"error: {name}: stopped by {exc}", file=sys.stderr)
        sys.exit(143)
