"""A real, throw-away OpenSSH server for tests, and a TCP relay in front of it that can drop the line.

:func:`ssh_server` starts ``sshd`` from a generated config in a temp dir: a fresh ed25519 host key,
one user key in its own ``authorized_keys``, listening on 127.0.0.1 only, public keys only, SFTP
served in process. It yields an :class:`SshServer` whose :meth:`SshServer.client_home` writes the
client side the way a user sets it up: a ``$HOME/.ssh`` with the key, ``known_hosts`` and a ``config``
entry naming the host alias, its address, port and user. DVC's ssh plugin (asyncssh) reads that
file, so a remote URL is just ``ssh://ALIAS/path``. :func:`find_sshd` returns None when OpenSSH's
server is not installed (the caller skips, saying so).

:class:`Relay` forwards a local port to the server, counts the bytes it carried, and can cut every
connection and stop listening once the client has sent a given number of bytes: a network remote
that goes away in the middle of a transfer. ``Relay.resume`` listens again on the same port.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from helpers.ports import free_port

START_SECONDS = 30
PRIVSEP_DIR = Path("/run/sshd")  # Debian's sshd refuses to start without it (privilege separation)


def find_sshd() -> Path | None:
    """OpenSSH's server and key generator, or None if either is missing."""
    sshd = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").is_file() else None)
    if sshd is None or shutil.which("ssh-keygen") is None:
        return None
    return Path(sshd)


def _keygen(path: Path) -> str:
    """A new passphrase-less ed25519 key at ``path``; its public line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mnist-pipeline-test", "-f", str(path)],
        check=True, capture_output=True, timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return path.with_suffix(".pub").read_text("ascii").strip()


@dataclass
class SshServer:
    root: Path
    port: int
    user: str
    user_key: Path
    host_public: str  # "ssh-ed25519 AAAA..."

    def client_home(self, home: Path, alias: str, port: int | None = None) -> Path:
        """Make ``home/.ssh`` point ``alias`` at this server (or at ``port``, a relay in front of it)."""
        ssh = home / ".ssh"
        ssh.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = ssh / "id_ed25519"
        shutil.copyfile(self.user_key, key)
        key.chmod(0o600)
        port = port or self.port
        (ssh / "known_hosts").write_text(f"[127.0.0.1]:{port} {self.host_public}\n", "ascii")
        (ssh / "config").write_text(
            f"Host {alias}\n"
            f"  HostName 127.0.0.1\n  Port {port}\n  User {self.user}\n"
            f"  IdentityFile {key}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {ssh / 'known_hosts'}\n  StrictHostKeyChecking yes\n",
            "ascii",
        )
        return home

    def log(self) -> str:
        path = self.root / "sshd.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextlib.contextmanager
def ssh_server(sshd: Path) -> Iterator[SshServer]:
    """Start ``sshd`` on a free 127.0.0.1 port for the current user; stop it and delete its files after."""
    root = Path(tempfile.mkdtemp(prefix="test-sshd-"))
    server: subprocess.Popen[bytes] | None = None
    try:
        server, port, host_public = _start(sshd, root)
        yield SshServer(root, port, pwd.getpwuid(os.geteuid()).pw_name, root / "user_ed25519", host_public)
    finally:
        if server is not None:
            sessions = _sessions(server)  # each connection's sshd: its own session, renamed, so found now
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            for process in sessions:
                with contextlib.suppress(psutil.Error):
                    process.kill()
            server.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


def _start(sshd: Path, root: Path) -> tuple[subprocess.Popen[bytes], int, str]:
    """Keys, config and a listening ``sshd -D`` in ``root``: the process, its port, its host key."""
    user = pwd.getpwuid(os.geteuid()).pw_name
    port = free_port()
    host_public = _keygen(root / "host_ed25519")
    _keygen(root / "user_ed25519")
    shutil.copyfile(root / "user_ed25519.pub", root / "authorized_keys")
    config = root / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {root / 'host_ed25519'}",
                f"PidFile {root / 'sshd.pid'}",
                f"AuthorizedKeysFile {root / 'authorized_keys'}",
                "StrictModes no",  # the temp dir's modes are pytest's, not a home directory's
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "UsePAM no",
                f"AllowUsers {user}",
                "Subsystem sftp internal-sftp",
                "MaxStartups 64:30:128",  # DVC opens several connections at once
                "MaxSessions 64",
                "LogLevel VERBOSE",
                "",
            ]
        ),
        "ascii",
    )
    if os.geteuid() == 0:
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    with open(root / "sshd.log", "ab") as log:  # the server keeps its own copy of the descriptor
        server = subprocess.Popen(
            [str(sshd), "-D", "-e", "-f", str(config)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    try:
        _wait_listening(port, server, root)
    except BaseException:
        server.kill()
        server.wait(timeout=30)
        raise
    return server, port, host_public


def _wait_listening(port: int, server: subprocess.Popen[bytes], root: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"sshd exited {server.returncode}:\n{(root / 'sshd.log').read_text(errors='replace')}")
        with socket.socket() as s:
            s.settimeout(1)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"sshd did not listen on 127.0.0.1:{port} within {START_SECONDS} s")


def _sessions(server: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """The server's per-connection processes and what they run (each in a session of its own)."""
    try:
        return psutil.Process(server.pid).children(recursive=True)
    except psutil.Error:
        return []


class Relay:
    """127.0.0.1:``port`` → 127.0.0.1:``target``; after ``cut_after`` client bytes, drop every connection."""

    def __init__(self, target: int, port: int | None = None) -> None:
        self.target = target
        self.port = port or free_port()
        self.sent = 0  # bytes from clients to the server, over all connections
        self.cut_after: int | None = None
        self.cut = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None

    def __enter__(self) -> Relay:
        self.resume()
        return self

    def __exit__(self, *exc: object) -> None:
        self._drop()

    def resume(self) -> None:
        """Listen (again) on the same port and carry traffic normally."""
        self._drop()
        self.cut_after, self.sent = None, 0
        self.cut.clear()
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target), timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                if self.cut.is_set():
                    client.close()
                    server.close()
                    continue
                self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, upstream: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(1 << 16):
                if upstream:
                    with self._lock:
                        self.sent += len(data)
                        over = self.cut_after is not None and self.sent >= self.cut_after
                    if over:
                        self._drop()
                        return
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def _drop(self) -> None:
        """Stop listening and reset every connection (RST, as a vanished host or a dead link does)."""
        with self._lock:
            self.cut.set()
            sockets, self._sockets = self._sockets, []
            listener, self._listener = self._listener, None
        for s in [*sockets, *([listener] if listener else [])]:
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                s.shutdown(socket.SHUT_RDWR)
            s.close()
