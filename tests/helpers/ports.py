"""Free TCP ports on 127.0.0.1 for the servers the tests start."""

from __future__ import annotations

import contextlib
import socket


def free_ports(n: int = 1) -> list[int]:
    """``n`` distinct ports that were free a moment ago (all bound at once, so never the same twice)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]


def free_port() -> int:
    """One port that was free a moment ago."""
    return free_ports(1)[0]
