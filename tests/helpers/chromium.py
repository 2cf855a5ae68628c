"""Headless Chromium driven over its DevTools pipe (``--remote-debugging-pipe``), standard library only.

Chromium reads commands on fd 3 and writes answers and events on fd 4, each a JSON message ended by
a NUL byte. :class:`Page` opens one tab and offers what the page tests need: navigate, evaluate
JavaScript, and press, move and release the mouse. Every request except to 127.0.0.1 is refused
(a dead proxy and a resolver that finds nothing), so a page that needs the internet shows it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Any

OFFLINE = ["--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]


class Page:
    def __init__(self, chromium: str, timeout: float = 30.0) -> None:
        to_chrome, self._write = os.pipe()
        self._read, from_chrome = os.pipe()

        def wire() -> None:  # in the child: its fd 3 reads our commands, its fd 4 writes its answers
            os.dup2(to_chrome, 100)  # out of the way first: the pipes may themselves be fds 3 and 4
            os.dup2(from_chrome, 101)
            os.dup2(100, 3)  # dup2 makes them inheritable, so they survive the exec
            os.dup2(101, 4)

        self._profile = tempfile.mkdtemp(prefix="chromium-")  # its own: no lock shared with another
        args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", *OFFLINE]
        args.append(f"--user-data-dir={self._profile}")
        self.proc = subprocess.Popen(
            [*args, "--window-size=800,900", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=wire,
            close_fds=False,
            start_new_session=True,  # its zygote and renderers share the group, killed whole by close()
            env={**os.environ, "TMPDIR": self._profile},  # its scratch dirs too go with the profile
        )
        os.close(to_chrome)
        os.close(from_chrome)
        self.timeout, self._next, self._buffer, self.session = timeout, 0, b"", None
        try:
            target = self.call("Target.createTarget", url="about:blank")["targetId"]
            self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            self.call("Page.enable")
            self.call("Runtime.enable")
        except BaseException:  # no Page to close for the caller: the browser and its profile go now
            self.close()
            raise

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command; its result (RuntimeError on an error answer or after ``timeout`` seconds)."""
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params}
        if self.session is not None:
            message["sessionId"] = self.session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            answer = self._message(deadline)
            if answer.get("id") == self._next:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                result: dict[str, Any] = answer.get("result", {})
                return result

    def _message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("chromium did not answer in time")
            os.set_blocking(self._read, False)
            try:
                chunk = os.read(self._read, 1 << 16)
            except BlockingIOError:
                time.sleep(0.01)
                continue
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        parsed: dict[str, Any] = json.loads(raw)
        return parsed

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str) -> None:
        """Navigate to ``url`` and wait until its document (not the one before) and its scripts have run."""
        self.call("Page.navigate", url=url)
        self.wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete'")

    def wait_for(self, condition: str) -> Any:
        """Poll a JavaScript expression until it is truthy; its value."""
        deadline = time.monotonic() + self.timeout
        while not (value := self.evaluate(condition)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"still false after {self.timeout} s: {condition}")
            time.sleep(0.05)
        return value

    def stroke(self, points: list[tuple[float, float]]) -> None:
        """Press the left button at the first point, move through the others, release at the last."""
        (x, y), *rest = points
        self.call("Input.dispatchMouseEvent", type="mousePressed", x=x, y=y, button="left", buttons=1, clickCount=1)
        for x, y in rest:
            self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y, button="left", buttons=1)
        self.call("Input.dispatchMouseEvent", type="mouseReleased", x=x, y=y, button="left", buttons=0, clickCount=1)

    def close(self) -> None:
        """Kill the browser and its helper processes, then delete the profile they were writing to."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        os.close(self._write)
        os.close(self._read)
        deadline = time.monotonic() + 10
        while os.path.lexists(self._profile):  # a helper killed a moment ago may still be flushing into it
            try:
                shutil.rmtree(self._profile)
            except OSError:  # a file added or gone under rmtree's feet: again, for a while
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
