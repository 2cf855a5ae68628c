"""The command line of :mod:`mnist_pipeline.serve`: load the model, then serve it with uvicorn."""

from __future__ import annotations

import argparse
import errno
import logging
import socket
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


# What to change when the socket cannot listen, by errno (others: both flags are named).
LISTEN_HINTS = {
    errno.EADDRINUSE: "pick another --port (0 picks a free one)",
    errno.EACCES: "pick a --port above 1023",
    errno.EADDRNOTAVAIL: "--host must be an address of this machine (127.0.0.1, or 0.0.0.0 for all)",
}


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port} is invalid: must be 0 to 65535")
    model = predict.load_model(args.model)  # a bad model stops here, in one line, before any request
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)  # bound here, so that --port 0 can say which port it got
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # accepted connections inherit it: no 40 ms Nagle wait
    try:
        sock.bind((args.host, args.port))
        sock.listen(128)  # connections wait in the backlog from now on, until uvicorn accepts them
    except OSError as exc:
        sock.close()
        hint = LISTEN_HINTS.get(exc.errno or 0, "check --host and --port")
        raise ConfigError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}; {hint}") from exc
    port = sock.getsockname()[1]
    log.info("serving %s on http://%s:%d/ (Ctrl-C stops it)", args.model, args.host, port)
    config = uvicorn.Config(create_app(model, args.model), log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
