"""``python -m mnist_pipeline.tune``: the tuner's command line (:mod:`.command`), if its extra is installed.

Optuna and psycopg come with the ``tune`` extra (``make tune`` installs it); without them the command
says so in one line instead of an import traceback.
"""

from __future__ import annotations

from collections.abc import Callable

from mnist_pipeline.cli import run_extra

EXTRA = ("optuna", "psycopg", "sqlalchemy")  # what the tune extra brings


def load() -> Callable[[], None]:
    from mnist_pipeline.tune.command import main

    return main


if __name__ == "__main__":
    run_extra("tune", load, EXTRA)
