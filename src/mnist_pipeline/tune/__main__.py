"""``python -m mnist_pipeline.tune``: the tuner's command line (:mod:`.command`), if its extra is installed.

Optuna and psycopg come with the ``tune`` extra (``make tune`` installs it); without them the command
says so in one line instead of an import traceback.
"""

from __future__ import annotations

import sys

from mnist_pipeline.cli import run

EXTRA = ("optuna", "psycopg", "sqlalchemy")  # what the tune extra brings


def main() -> None:
    try:
        from mnist_pipeline.tune.command import main as tune
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in EXTRA:
            raise
        print(
            f"error: tune: {exc.name} is not installed; run `make tune`, or install the extra: "
            "pip install -c requirements.lock -e '.[tune]'",
            file=sys.stderr,
        )
        sys.exit(1)
    run(tune, "tune")


if __name__ == "__main__":
    main()
