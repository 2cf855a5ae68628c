"""``make serve``: the trained model behind a local HTTP service, with a page to draw a digit on.

``python -m mnist_pipeline.serve [--model PATH] [--host 127.0.0.1] [--port 8000]`` (the ``serve``
extra: Starlette on uvicorn) serves:

- ``POST /predict`` — the body is one PNG, JPEG or other image, or an IDX image file (gzipped or
  not); ``?invert=auto|yes|no`` and ``?center=true`` as ``predict``'s options. The answer is JSON:
  ``{"predictions": [{"file", "prediction", "top3", "probabilities"}, ...]}``, computed exactly
  as ``python -m mnist_pipeline.predict`` computes it.
- ``GET /health`` — ``{"status": "ok", ...}`` with the model's classes and image shape.
- ``GET /`` — a page where a person draws a digit with a mouse or a finger and sees the
  prediction and the probability of every class. It loads nothing but this server's own
  ``/app.js`` and ``/app.css``, and its Content-Security-Policy says so to the browser.

Bounded: a body over :data:`~mnist_pipeline.serve.app.MAX_BODY` bytes is refused (413) before it
is read whole, images over predict's pixel cap before decoding and more than
:data:`~mnist_pipeline.serve.app.MAX_IMAGES` images per request (400), which bounds the work of
one prediction; requests are decoded and predicted one at a time, on one thread, and a request that
has waited more than :data:`~mnist_pipeline.serve.app.WAIT` seconds by its turn gets 503 and
``Retry-After``. Every
error is a JSON ``{"error": "one line"}``: 4xx for the request, 503 when busy, 500 and no
traceback for a bug.
"""
