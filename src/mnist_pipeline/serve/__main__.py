"""``python -m mnist_pipeline.serve``: the service (:mod:`.command`), if the ``serve`` extra is installed."""

from __future__ import annotations

import sys

from mnist_pipeline.cli import run

EXTRA = ("starlette", "uvicorn", "anyio", "h11")  # what the serve extra brings


def main() -> None:
    try:
        from mnist_pipeline.serve.command import main as serve
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in EXTRA:
            raise
        print(
            f"error: serve: {exc.name} is not installed; run `make serve`, or install the extra: "
            "pip install -c requirements.lock -e '.[serve]'",
            file=sys.stderr,
        )
        sys.exit(1)
    run(serve, "serve")


if __name__ == "__main__":
    main()
