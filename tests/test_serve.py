"""serve: the model over a real HTTP server on 127.0.0.1 (uvicorn, started as ``make serve`` starts it).

Answers must equal ``predict``'s for the same bytes; every error is one JSON line with a 4xx code
and no traceback; the page names nothing but the server's own files, and says so in its CSP.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from helpers.chromium import Page
from helpers.ports import free_port
from helpers.services import unavailable
from mnist_pipeline import idx, predict
from mnist_pipeline.mlp.network import Network
from mnist_pipeline.model_file import save_network
from mnist_pipeline.serve.app import MAX_BODY, OneAtATime

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "model.npz"
    net = Network([784, 32, 10], "relu", "he_normal", np.random.default_rng(0))
    meta = {"class_names": [f"d{c}" for c in range(10)], "image_shape": [28, 28]}
    save_network(path, net, {**meta, "dataset": "mnist", "normalize": "scale", "mean": 0.0, "std": 1.0})
    return path


@pytest.fixture(scope="module")
def server(model_file: Path) -> Iterator[str]:
    """A server on the free port it picks itself (``--port 0``) and names in its first line."""
    cmd = [sys.executable, "-m", "mnist_pipeline.serve", "--model", str(model_file), "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stderr], [], [], 30)
        assert ready, "the server said nothing in 30 s"
        assert proc.stderr is not None
        line = proc.stderr.readline()
        found = re.match(r"serve: serving .* on (http://127\.0\.0\.1:(\d+))/ \(Ctrl-C stops it\)$", line)
        assert found and found.group(2) != "0", line
        url = found.group(1)
        assert requests.get(f"{url}/health", timeout=10).json()["status"] == "ok"
        yield url
    finally:
        proc.terminate()
        proc.communicate(timeout=15)


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(var, "127.0.0.1")


def digit_png(tmp_path: Path) -> Path:
    path = tmp_path / "digit.png"
    image = np.zeros((28, 28), np.uint8)
    image[4:24, 12:16] = 255  # a "1"
    Image.fromarray(image).save(path)
    return path


def test_health_names_the_model_and_its_classes(server: str, model_file: Path) -> None:
    body = requests.get(f"{server}/health", timeout=10).json()
    assert body == {
        "status": "ok",
        "model": str(model_file),
        "classes": [f"d{c}" for c in range(10)],
        "image_shape": [28, 28],
    }


@pytest.mark.parametrize("query", ["", "?invert=no&center=true", "?invert=yes"])
def test_an_image_gets_exactly_what_predict_says(server: str, model_file: Path, tmp_path: Path, query: str) -> None:
    path = digit_png(tmp_path)
    options = dict(re.findall(r"(\w+)=(\w+)", query))
    expected = predict.predict_file(
        predict.load_model(model_file), path, options.get("invert", "auto"), options.get("center") == "true"
    )

    response = requests.post(f"{server}/predict{query}", data=path.read_bytes(), timeout=30)

    assert response.status_code == 200
    record = response.json()["predictions"][0]
    assert record["probabilities"] == expected[0]["probabilities"]
    assert record["prediction"] == expected[0]["prediction"] and record["top3"] == expected[0]["top3"]


def test_an_idx_file_gets_one_answer_per_image(server: str) -> None:
    images = np.random.default_rng(0).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    body = gzip.compress(idx.serialize(images), mtime=0)

    records = requests.post(f"{server}/predict", data=body, timeout=30).json()["predictions"]

    assert [r["file"] for r in records] == [f"body[{i}]" for i in range(7)]


BAD_REQUESTS = {
    # case: (method, path, body, status, what the error says)
    "empty-body": ("POST", "/predict", b"", 400, "the body is empty"),
    "not-an-image": ("POST", "/predict", b"<html>\x1b[31m", 400, "neither an image Pillow can read nor an IDX file"),
    "bad-option": ("POST", "/predict?invert=maybe", b"x", 400, "invert='maybe' is invalid"),
    "too-many-images": (
        "POST",
        "/predict",
        idx.serialize(np.zeros((10_001, 1, 1), np.uint8)),
        400,
        "body: 10001 images, more than the 10000 accepted per IDX file; split it",
    ),
    "too-large": ("POST", "/predict", b"\0" * (MAX_BODY + 1), 413, f"more than the {MAX_BODY} accepted"),
    "unknown-path": ("GET", "/admin", None, 404, "Not Found"),
    "wrong-method": ("GET", "/predict", None, 405, "Method Not Allowed"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_requests_get_one_json_line_and_a_4xx(server: str, case: str) -> None:
    method, path, body, status, needle = BAD_REQUESTS[case]

    response = requests.request(method, f"{server}{path}", data=body, timeout=30)

    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert needle in error and "\n" not in error and "\x1b" not in error and "Traceback" not in error


def test_a_streamed_body_without_a_length_is_refused_once_over_the_cap(server: str) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer, refused once over the cap
        for _ in range(MAX_BODY // (1 << 16) + 2):
            yield b"\0" * (1 << 16)

    response = requests.post(f"{server}/predict", data=chunks(), timeout=30)
    assert response.status_code == 413 and "the most accepted" in response.json()["error"]


def test_the_page_loads_nothing_but_the_servers_own_files(server: str) -> None:
    page = requests.get(server, timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    linked = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sorted(linked) == ["/app.css", "/app.js"]
    script = requests.get(f"{server}/app.js", timeout=10)
    style = requests.get(f"{server}/app.css", timeout=10)
    assert script.status_code == style.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    for text in (page.text, script.text, style.text):
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]", text, re.IGNORECASE)  # no other origin
    assert "innerHTML" not in script.text  # class names are set as text
    assert 'fetch("/predict' in script.text


def test_serve_refuses_a_bad_model_in_one_line_before_serving(tmp_path: Path) -> None:
    bad = tmp_path / "model.npz"
    bad.write_bytes(b"not a model")
    proc = subprocess.run(
        [sys.executable, "-m", "mnist_pipeline.serve", "--model", str(bad), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"error: serve: {bad}")


@pytest.mark.parametrize(
    ("case", "hint"),
    [
        ("port-in-use", "Address already in use; pick another --port (0 picks a free one)"),
        ("host-not-here", "--host must be an address of this machine (127.0.0.1, or 0.0.0.0 for all)"),
    ],
)
def test_serve_that_cannot_listen_names_the_flag_to_change(model_file: Path, case: str, hint: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        host = "127.0.0.1" if case == "port-in-use" else "192.0.2.1"  # TEST-NET-1: no machine's own address
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "mnist_pipeline.serve",
                "--model",
                str(model_file),
                "--host",
                host,
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"error: serve: cannot listen on {host}:{port}: ")
    assert proc.stderr.endswith(f"{hint}\n"), proc.stderr


def test_jobs_run_one_at_a_time_and_one_that_waited_too_long_is_not_run() -> None:
    turns = OneAtATime(wait=0.3)
    ran: list[str] = []

    def job(name: str, seconds: float) -> Callable[[], str]:
        def work() -> str:
            ran.append(f"{name} on {threading.current_thread().name}")
            time.sleep(seconds)
            return name

        return work

    async def scenario() -> list[str | None]:
        first = asyncio.ensure_future(turns.run(job("slow", 0.6)))
        await asyncio.sleep(0.05)  # "slow" has started: "late" waits behind it for 0.55 s, over 0.3
        late = await turns.run(job("late", 0.0))
        again = await turns.run(job("again", 0.0))  # the queue is free: runs at once
        return [await first, late, again]

    assert asyncio.run(scenario()) == ["slow", None, "again"]
    (thread,) = {entry.split(" on ")[1] for entry in ran}  # every job on the one thread
    assert ran == [f"slow on {thread}", f"again on {thread}"] and thread.startswith("predict")


def test_without_the_serve_extra_it_says_how_to_install_it(tmp_path: Path) -> None:
    # A `starlette` that cannot be imported, first on the path: as if the extra were not installed.
    (tmp_path / "starlette").mkdir()
    (tmp_path / "starlette" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'starlette'\", name='starlette')\n", encoding="utf-8"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, "-m", "mnist_pipeline.serve", "--help"], capture_output=True, text=True, timeout=60, env=env
    )
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [
        "error: serve: starlette is not installed; run `make serve`, or install the extra: "
        "pip install -c requirements.lock -e '.[serve]'"
    ]


def test_a_person_draws_a_digit_and_sees_the_prediction_with_nothing_loaded_from_outside(server: str) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        unavailable("needs Debian's chromium; apt-get install chromium")
    page = None
    try:
        page = Page(chromium)  # every request but to 127.0.0.1 refused
        page.open(f"{server}/")
        box = page.evaluate("(r => [r.left, r.top])(document.getElementById('pad').getBoundingClientRect())")
        left, top = box
        page.stroke([(left + 140, top + 40 + 10 * i) for i in range(21)])  # a vertical bar: a "1"

        answer = page.wait_for("(t => t.startsWith('Prediction') && t)(document.getElementById('answer').textContent)")
        bars = page.evaluate("[...document.querySelectorAll('.row')].map(r => r.textContent)")
        widths = page.evaluate("[...document.querySelectorAll('.fill')].map(f => parseFloat(f.style.width))")
        loaded = page.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
    finally:
        if page is not None:
            page.close()

    assert answer.removeprefix("Prediction: ") in {f"d{c}" for c in range(10)}
    assert [b[:2] for b in bars] == [f"d{c}" for c in range(10)]  # one bar per class, in order
    assert sum(widths) == pytest.approx(100, abs=0.6)  # the probabilities, as percentages
    assert sorted({url.split("/")[2] for url in loaded}) == [server.split("/")[2]]  # this server only
