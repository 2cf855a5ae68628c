"""The command line of :mod:`mnist_pipeline.serve`: load the model, then serve it with uvicorn."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

import uvicorn

from mnist_pipeline import cli, predict
from mnist_pipeline.errors import ConfigError
from mnist_pipeline.paths import MODEL_FILE
from mnist_pipeline.serve import __doc__ as DOC
from mnist_pipeline.serve.app import create_app

log = logging.getLogger(__name__)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = cli.ArgumentParser(prog="serve", description=(DOC or "").split("\n\n")[0])
    parser.add_argument("--model", default=str(MODEL_FILE), help=f"model file (default {MODEL_FILE})")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port} is invalid: must be 0 to 65535")
    model = predict.load_model(args.model)  # a bad model stops here, in one line, before any request
    log.info("serving %s on http://%s:%d/ (Ctrl-C stops it)", args.model, args.host, args.port)
    uvicorn.run(create_app(model, args.model), host=args.host, port=args.port, log_level="warning", access_log=False)
