"""The ASGI application of :mod:`mnist_pipeline.serve` (Starlette): routes, bounds and JSON errors."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mnist_pipeline import cli, predict
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.serve import page

MAX_BODY = 4 << 20  # bytes of one request body: a photo of a digit, or an IDX file of a few thousand images
MAX_IMAGES = 10_000  # images one request may hold (an IDX file): with MAX_BODY, what bounds one prediction
WAIT = 10.0  # seconds a request may wait for the model while others use it
# The page may load only what this server serves; no inline script, no other origin.
CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'"
SECURITY = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}

log = logging.getLogger(__name__)
T = TypeVar("T")


class OneAtATime:
    """Jobs run on one thread of their own, in the order they come; one that has waited more than ``wait``
    seconds by its turn is not run (:meth:`run` returns None).

    One thread, not one lock over a pool's threads: a request's images are decoded and predicted in one
    place, so one request's memory (up to about 1 GB for a 25-megapixel photo) is all the server holds,
    and it is reused (each thread would keep its own malloc arena of freed memory: 2.3 GB for six such
    requests at once, against 0.9 GB one after the other). The network's buffers are its own, too.
    """

    def __init__(self, wait: float) -> None:
        self.wait = wait
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")

    async def run(self, fn: Callable[[], T]) -> T | None:
        queued = time.monotonic()

        def job() -> T | None:
            return None if time.monotonic() - queued > self.wait else fn()

        return await asyncio.get_running_loop().run_in_executor(self.executor, job)


def error(status: int, message: str) -> JSONResponse:
    """``{"error": message}`` with ``status``: one line, control characters shown escaped, cut as the
    command line's errors are (:func:`mnist_pipeline.cli.error_text`)."""
    return JSONResponse({"error": cli.error_text(message)}, status_code=status, headers=SECURITY)


async def read_body(request: Request) -> bytes:
    """The request body, refused (413) as soon as it is over :data:`MAX_BODY`, announced or not."""
    announced = request.headers.get("content-length")
    if announced is not None and (not announced.isdigit() or int(announced) > MAX_BODY):
        raise HTTPException(413, f"the body is {announced} bytes, more than the {MAX_BODY} accepted")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise HTTPException(413, f"the body is over {MAX_BODY} bytes, the most accepted")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(model: predict.Model, model_path: str) -> Starlette:
    """The service for ``model`` (loaded from ``model_path``)."""
    turns = OneAtATime(WAIT)

    def run_prediction(data: bytes, invert: str, center: bool) -> list[dict[str, Any]]:
        names, images = predict.decode_bytes(data, "body", MAX_IMAGES)
        return predict.predict_images(model, "body", names, images, invert, center)

    async def predict_route(request: Request) -> Response:
        invert = request.query_params.get("invert", "auto")
        center = request.query_params.get("center", "false")
        if invert not in predict.INVERT_CHOICES:
            return error(400, f"invert={invert!r} is invalid; use one of {', '.join(predict.INVERT_CHOICES)}")
        if center not in ("true", "false"):
            return error(400, f"center={center!r} is invalid; use true or false")
        data = await read_body(request)
        if not data:
            return error(400, "the body is empty; send the bytes of a PNG, JPEG or IDX file")
        try:
            records = await turns.run(lambda: run_prediction(data, invert, center == "true"))
        except PipelineError as exc:
            return error(400, str(exc))
        if records is None:
            busy = error(503, f"the model was busy with other requests for over {WAIT:g} s; retry")
            busy.headers["Retry-After"] = "1"
            return busy
        return JSONResponse({"predictions": records}, headers=SECURITY)

    async def health(request: Request) -> Response:
        body = {
            "status": "ok",
            "model": model_path,
            "classes": list(model.class_names),
            "image_shape": list(model.image_shape),
        }
        return JSONResponse(body, headers=SECURITY)

    async def index(request: Request) -> Response:
        return Response(page.HTML, media_type="text/html; charset=utf-8", headers=SECURITY)

    async def script(request: Request) -> Response:
        return Response(page.SCRIPT, media_type="text/javascript; charset=utf-8", headers=SECURITY)

    async def style(request: Request) -> Response:
        return Response(page.STYLE, media_type="text/css; charset=utf-8", headers=SECURITY)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error(exc.status_code, str(exc.detail))

    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("bug while answering %s %s: %r", request.method, request.url.path, exc)
        return error(500, "internal error; the server log has the details")

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/app.js", script, methods=["GET"]),
        Route("/app.css", style, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/predict", predict_route, methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: server_error})
