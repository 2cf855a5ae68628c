"""Entry-point helper: logging set-up and one-line errors for every stage.

A stage's ``main()`` raises :class:`~mnist_pipeline.errors.PipelineError` (or the
model's :class:`~mnist_pipeline.mlp.errors.MLPError`) for anything the user can
fix; :func:`run` turns it (and any ``OSError``: missing permissions, a full disk)
into one line on stderr and exit status 1. Set ``LOGLEVEL=DEBUG`` or pass
``--verbose`` to see the traceback as well. Bugs (any other exception) keep
their traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.mlp.errors import MLPError

log = logging.getLogger("mnist_pipeline")

VERBOSE_FLAG = "--verbose"


def setup_logging(stage: str, verbose: bool = False) -> None:
    """Configure the root logger from ``LOGLEVEL`` (default INFO; DEBUG if ``verbose``).

    Records read ``<stage>: message``; verbose ones name the module instead.
    """
    level = logging.getLevelName("DEBUG" if verbose else os.environ.get("LOGLEVEL", "INFO").upper())
    fmt = "%(name)s: %(message)s" if verbose else f"{stage}: %(message)s"
    logging.basicConfig(level=level if isinstance(level, int) else logging.INFO, format=fmt)


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) folded into one space."""
    return " ".join(text.split())


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
    try:
        if before is not None:
            before()
        main()
    except (PipelineError, MLPError, OSError) as exc:
        if verbose:
            log.exception("%s failed", name)
        message = str(exc) if isinstance(exc, PipelineError | MLPError) else f"{type(exc).__name__}: {exc}"
        print(f"error: {name}: {one_line(message)}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"error: {name}: interrupted", file=sys.stderr)
        sys.exit(130)
