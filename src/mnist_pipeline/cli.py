"""Entry-point helper: logging set-up and one-line errors for every stage.

A stage's ``main()`` raises :class:`~mnist_pipeline.errors.PipelineError` for
anything the user can fix; :func:`run` turns it into one line on stderr and a
non-zero exit. Set ``LOGLEVEL=DEBUG`` to see the traceback as well.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from mnist_pipeline.errors import PipelineError

log = logging.getLogger("mnist_pipeline")


def setup_logging() -> None:
    """Configure the root logger from ``LOGLEVEL`` (default INFO)."""
    level = os.environ.get("LOGLEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(name)s: %(message)s", stream=sys.stderr)


def run(main: Callable[[], None], name: str) -> None:
    """Run a stage's ``main`` and exit 0, or 1 with a one-line error on stderr."""
    setup_logging()
    debug = os.environ.get("LOGLEVEL", "").upper() == "DEBUG"
    try:
        main()
    except PipelineError as exc:
        if debug:
            log.exception("%s failed", name)
        print(f"error: {name}: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"error: {name}: interrupted", file=sys.stderr)
        sys.exit(130)
