"""A scriptable, misbehaving HTTP server on 127.0.0.1 for download tests.

Each path gets a script of responses, served one per request (the last one
repeats); unscripted paths get 404. Responses misbehave on purpose: wrong
status, truncated, endless or dripping bodies, stalls after the headers,
redirects. The server records every request path and how many body bytes it
sent, so a test can assert that a file was skipped (no request) or that a
download was aborted early (few bytes sent).

Usage::

    with FaultyServer() as server:
        server.route("/m1/a.gz", status(503), ok(data))
        url = server.url("m1/")
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Response = Callable[[BaseHTTPRequestHandler], int]  # writes one response; returns body bytes sent
STALL_LIMIT = 20.0  # seconds a stalled response waits at most (teardown releases it sooner)
ENDLESS_LIMIT = 256 << 20  # bytes an endless body sends at most, so a broken client cannot hang the test


def _head(
    handler: BaseHTTPRequestHandler,
    code: int,
    length: int | None,
    extra: dict[str, str] | None = None,
    reason: str | None = None,
) -> None:
    handler.send_response(code, reason)
    handler.send_header("Content-Type", "application/octet-stream")
    if length is not None:
        handler.send_header("Content-Length", str(length))
    for key, value in (extra or {}).items():
        handler.send_header(key, value)
    handler.end_headers()


def ok(body: bytes) -> Response:
    """200 with the whole body and a correct Content-Length."""

    def respond(handler: BaseHTTPRequestHandler) -> int:
        _head(handler, 200, len(body))
        handler.wfile.write(body)
        return len(body)

    return respond


def status(code: int, reason: str | None = None) -> Response:
    """An error status with a short text body; ``reason`` replaces the standard phrase, sent as it is."""

    def respond(handler: BaseHTTPRequestHandler) -> int:
        body = f"status {code}\n".encode()
        _head(handler, code, len(body), reason=reason)
        handler.wfile.write(body)
        return len(body)

    return respond


def truncated(body: bytes, keep: int) -> Response:
    """Announce ``len(body)`` bytes, send ``keep`` of them, then close the connection."""

    def respond(handler: BaseHTTPRequestHandler) -> int:
        _head(handler, 200, len(body))
        handler.wfile.write(body[:keep])
        handler.wfile.flush()
        handler.close_connection = True
        return keep

    return respond


def stall(body: bytes, keep: int = 0) -> Response:
    """Send the headers and ``keep`` body bytes, then nothing until teardown (or STALL_LIMIT)."""

    def respond(handler: BaseHTTPRequestHandler) -> int:
        _head(handler, 200, len(body))
        handler.wfile.write(body[:keep])
        handler.wfile.flush()
        handler.server.release.wait(STALL_LIMIT)  # type: ignore[attr-defined]
        return keep

    return respond


def endless(announce: int | None = None, chunk: int = 1 << 16) -> Response:
    """200 streaming zeros until the client hangs up; Content-Length ``announce`` if given, else none."""

    def respond(handler: BaseHTTPRequestHandler) -> int:
        _head(handler, 200, announce)
        block, sent = b"\0" * chunk, 0
        try:
            while sent < ENDLESS_LIMIT and not handler.server.release.is_set():  # type: ignore[attr-defined]
                handler.wfile.write(block)
                sent += chunk
        except OSError:  # the client closed the connection: what we want
            pass
        handler.close_connection = True
        return sent

    return respond


def drip(body: bytes, interval: float, step: int = 1) -> Response:
    """200 with a correct Content-Length, then ``step`` bytes every ``interval`` seconds.

    Each read gets data well within any read timeout longer than ``interval``, so only a limit on
    the total time stops the client. Ends when the client hangs up, at teardown, or after the body.
    """

    def respond(handler: BaseHTTPRequestHandler) -> int:
        _head(handler, 200, len(body))
        sent = 0
        try:
            while sent < len(body) and not handler.server.release.wait(interval):  # type: ignore[attr-defined]
                piece = body[sent : sent + step]
                handler.wfile.write(piece)
                handler.wfile.flush()
                sent += len(piece)
        except OSError:  # the client closed the connection: what we want
            pass
        handler.close_connection = True
        return sent

    return respond


def redirect(location: str, code: int = 302) -> Response:
    """A redirect to ``location`` (any scheme, relative or absolute)."""

    def respond(handler: BaseHTTPRequestHandler) -> int:
        _head(handler, code, 0, {"Location": location})
        return 0

    return respond


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        respond = self.server.next_response(self.path)
        try:
            sent = respond(self)
        except OSError:  # client went away mid-response
            sent = -1
        self.server.record_sent(self.path, sent)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (signature from the base)
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.scripts: dict[str, list[Response]] = {}
        self.requests: list[str] = []
        self.sent: dict[str, list[int]] = {}

    def next_response(self, path: str) -> Response:
        with self.lock:
            self.requests.append(path)
            script = self.scripts.get(path)
            if not script:
                return status(404)
            return script.pop(0) if len(script) > 1 else script[0]

    def record_sent(self, path: str, sent: int) -> None:
        with self.lock:
            self.sent.setdefault(path, []).append(sent)


class FaultyServer:
    """Context manager running :class:`_Server` in a thread; see the module docstring."""

    def __init__(self) -> None:
        self._server = _Server()
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> FaultyServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def url(self, path: str = "") -> str:
        """Absolute URL of ``path`` (no leading slash) on this server."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/{path}"

    def route(self, path: str, *responses: Response) -> None:
        """Serve ``responses`` in order for ``path`` (leading slash); the last one repeats."""
        with self._server.lock:
            self._server.scripts[path] = list(responses)

    @property
    def requests(self) -> list[str]:
        """Every path requested so far, in order."""
        with self._server.lock:
            return list(self._server.requests)

    def count(self, path: str) -> int:
        """How many times ``path`` was requested."""
        return self.requests.count(path)

    def sent(self, path: str, wait: float = 5.0) -> list[int]:
        """Body bytes sent per request for ``path`` (-1: the client hung up mid-response).

        Waits up to ``wait`` seconds for every request made to ``path`` to finish responding.
        """
        deadline = time.monotonic() + wait
        while True:
            with self._server.lock:
                done = list(self._server.sent.get(path, []))
                if len(done) >= self._server.requests.count(path) or time.monotonic() > deadline:
                    return done
            time.sleep(0.01)
