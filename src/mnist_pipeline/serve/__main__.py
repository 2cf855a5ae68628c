"""``python -m mnist_pipeline.serve``: the service (:mod:`.command`), if the ``serve`` extra is installed."""

from __future__ import annotations

from collections.abc import Callable

from mnist_pipeline.cli import run_extra

EXTRA = ("starlette", "uvicorn", "anyio", "h11")  # what the serve extra brings


def load() -> Callable[[], None]:
    from mnist_pipeline.serve.command import main

    return main


if __name__ == "__main__":
    run_extra("serve", load, EXTRA)
