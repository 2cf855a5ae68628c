"""Stage ``download``: fetch the dataset's four IDX ``.gz`` files, verified.

Sources are tried in order: ``$DATA_MIRROR`` (a URL or a local directory) and
then ``dataset.mirrors``. Every byte goes through the same path: streamed into
a temp file in ``data/raw/`` while its SHA-256 is computed, capped at the
expected size plus a margin, and renamed into place only when the checksum
matches. Files already present and verified are skipped.

A source is never trusted: redirects are followed by hand (http(s) only, no
loops, at most ``MAX_REDIRECTS``), timeouts bound every connect and read,
``download.max_seconds`` bounds the whole time one file may take from one
source (retries included; a mirror dripping a byte just inside the read
timeout would otherwise never end), transient failures (5xx, 408/425/429,
timeouts, broken connections) are retried with capped exponential backoff,
and anything else moves on to the next source. When every source fails, one
line lists each source and why. A local source must hold regular files (a FIFO
or a device is refused before it is read), and credentials in a URL
(``http://user:secret@host/``) are masked in every message and log line.

Run: ``python -m mnist_pipeline.stages.download`` (normally via ``dvc repro``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlparse

import requests
import urllib3
from tqdm import tqdm

from mnist_pipeline import data_config
from mnist_pipeline.data_config import DownloadConfig, FileSpec, mask_credentials
from mnist_pipeline.errors import ConfigError, DataError
from mnist_pipeline.paths import RAW_DIR, open_regular

log = logging.getLogger(__name__)

MIRROR_ENV = "DATA_MIRROR"
CHUNK = 1 << 16
SIZE_MARGIN = 1 << 20  # bytes a source may send beyond the expected size before we stop reading
MAX_REDIRECTS = 5
MAX_BACKOFF = 60.0  # seconds; caps backoff * 2**attempt
HTTP_SCHEMES = ("http", "https")
_HOST = re.compile(r"^[\w.-]+$|^[0-9A-Fa-f:.]+$")  # a DNS name, IPv4 or (unbracketed) IPv6 address


class FetchError(Exception):
    """One source failed for one file; ``transient`` errors are worth retrying."""

    def __init__(self, reason: str, transient: bool = False) -> None:
        super().__init__(" ".join(mask_credentials(reason).split()))  # one line, whatever the server sent
        self.transient = transient


@dataclass(frozen=True)
class Source:
    """Where files can come from: an http(s) base URL or a local directory."""

    label: str
    base: str
    local: bool

    def locate(self, name: str) -> str:
        return str(Path(self.base) / name) if self.local else urljoin(self.base, name)


def mirror_from_env(value: str) -> Source:
    """Validate ``$DATA_MIRROR`` before any network call; raise ConfigError if unusable."""
    label = mask_credentials(f"{MIRROR_ENV}={value}")
    hint = "use e.g. http://127.0.0.1:8765/mnist/ or a directory such as ../shared/datasets/mnist"
    try:
        parsed = urlparse(value)
        port = parsed.port  # raises ValueError for a non-numeric or out-of-range port
    except ValueError as exc:
        raise ConfigError(mask_credentials(f"{label} is not a valid URL ({exc}); {hint}")) from exc
    if parsed.scheme in HTTP_SCHEMES:
        host = parsed.hostname or ""
        if not _HOST.match(host) or port == 0 or parsed.query or parsed.fragment:
            raise ConfigError(f"{label} is not a valid base URL (host {host!r}, no query or fragment); {hint}")
        return Source(label, value if value.endswith("/") else value + "/", local=False)
    if parsed.scheme == "file":
        value = parsed.path
    elif "://" in value:
        raise ConfigError(f"{label}: unsupported scheme {parsed.scheme!r}; {hint}")
    if not Path(value).is_dir():
        raise ConfigError(f"{label} is not an existing directory; point it at a folder holding the .gz files")
    return Source(label, str(Path(value).resolve()), local=True)


def sources(mirrors: Iterable[str], env: str | None) -> list[Source]:
    """``$DATA_MIRROR`` (if set) first, then the configured mirrors."""
    found = [mirror_from_env(env)] if env else []
    return found + [Source(mask_credentials(url), url, local=False) for url in mirrors]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open_regular(path) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _get(url: str, cfg: DownloadConfig, session: requests.Session) -> requests.Response:
    """GET ``url`` (streaming), following redirects by hand: http(s) only, no loops, bounded."""
    seen = {url}
    for _ in range(MAX_REDIRECTS + 1):
        resp = session.get(url, stream=True, timeout=(cfg.connect_timeout, cfg.read_timeout), allow_redirects=False)
        if not resp.is_redirect:
            return resp
        resp.close()
        try:
            target = urljoin(url, resp.headers["Location"])
            scheme = urlparse(target).scheme
        except ValueError as exc:
            raise FetchError(f"refused malformed redirect ({exc})") from exc
        if scheme not in HTTP_SCHEMES:
            raise FetchError(f"refused redirect to {mask_credentials(target)[:100]!r}: only http(s) is allowed")
        if target in seen:
            raise FetchError(f"refused redirect loop back to {mask_credentials(target)[:100]}")
        seen.add(target)
        url = target
    raise FetchError(f"too many redirects (> {MAX_REDIRECTS})")


def _content_length(resp: requests.Response) -> int | None:
    value = resp.headers.get("Content-Length", "")
    return int(value) if value.isdigit() else None


def _stream_http(
    url: str, cap: int, cfg: DownloadConfig, session: requests.Session, deadline: float
) -> Generator[bytes, None, None]:
    received, length = 0, None
    try:
        with contextlib.closing(_get(url, cfg, session)) as resp:
            if resp.status_code != 200:
                transient = resp.status_code in (408, 425, 429) or resp.status_code >= 500
                raise FetchError(f"HTTP {resp.status_code} {resp.reason}", transient)
            length = _content_length(resp)
            if length is not None and length > cap:
                raise FetchError(f"announces {length} bytes, more than the {cap} allowed; not downloaded")
            # Raw bytes (the checksum is over the file as published), as they arrive (read1: one
            # socket read each, so progress and the bytes on disk never lag behind the network).
            while chunk := resp.raw.read1(CHUNK, decode_content=False):
                received += len(chunk)
                if time.monotonic() > deadline:  # each read came in time, but the whole is too slow
                    of = f" of {length}" if length is not None else ""
                    raise FetchError(
                        f"gave up after max_seconds={cfg.max_seconds}s ({received}{of} bytes received): too slow"
                    )
                yield chunk
            if length is not None and received < length:  # urllib3 2.x raises first; belt and braces
                raise FetchError(f"truncated body: connection closed after {received} of {length} bytes", True)
    except (requests.exceptions.ConnectTimeout, urllib3.exceptions.ConnectTimeoutError) as exc:
        raise FetchError(f"connect timed out after {cfg.connect_timeout}s", transient=True) from exc
    except (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError, TimeoutError) as exc:
        raise FetchError(f"read timed out after {cfg.read_timeout}s ({received} bytes received)", True) from exc
    except urllib3.exceptions.ProtocolError as exc:  # IncompleteRead (urllib3 2.x enforces Content-Length), reset
        if length is not None and received < length:
            raise FetchError(f"truncated body: connection closed after {received} of {length} bytes", True) from exc
        reason = mask_credentials(str(exc))[:100]  # masked before it is cut, so no half URL escapes
        raise FetchError(f"connection broken after {received} bytes ({reason})", transient=True) from exc
    except requests.exceptions.ConnectionError as exc:  # refused, unresolvable host, reset before the body
        reason = mask_credentials(str(getattr(exc.args[0], "reason", exc) if exc.args else exc))
        raise FetchError(f"cannot connect: {reason.split('): ', 1)[-1][:200]}", transient=True) from exc
    except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise FetchError(f"{type(exc).__name__}: {mask_credentials(str(exc))[:200]}", transient=True) from exc


def _stream_local(path: str, cap: int) -> Generator[bytes, None, None]:
    try:
        with open_regular(path) as f:
            size = os.fstat(f.fileno()).st_size
            if size > cap:
                raise FetchError(f"is {size} bytes, more than the {cap} allowed; not copied")
            yield from iter(lambda: f.read(CHUNK), b"")
    except DataError as exc:  # a FIFO, a device: refused before a byte is read
        raise FetchError(str(exc)) from exc
    except FileNotFoundError as exc:
        raise FetchError("no such file") from exc
    except OSError as exc:
        raise FetchError(f"cannot read: {exc.strerror}") from exc


def part_path(dest: Path) -> Path:
    """The temp file a download of ``dest`` is streamed into (hidden, beside it)."""
    return dest.with_name(f".{dest.name}.part")


def fetch_one(
    source: Source,
    spec: FileSpec,
    dest: Path,
    cfg: DownloadConfig,
    session: requests.Session,
    deadline: float | None = None,
) -> None:
    """Fetch ``spec`` from ``source`` into ``dest`` atomically, verified; FetchError if not.

    An http source must deliver by ``deadline`` (``time.monotonic()`` seconds; default
    ``cfg.max_seconds`` from now).
    """
    location = source.locate(spec.name)
    cap = spec.size + SIZE_MARGIN
    if deadline is None:
        deadline = time.monotonic() + cfg.max_seconds
    stream = _stream_local(location, cap) if source.local else _stream_http(location, cap, cfg, session, deadline)
    tmp = part_path(dest)
    digest = hashlib.sha256()
    size = 0
    try:
        with (
            contextlib.closing(stream) as chunks,  # closes the connection as soon as we stop reading
            open(tmp, "wb") as f,
            tqdm(total=spec.size, unit="B", unit_scale=True, desc=spec.name, leave=False, disable=None) as bar,
        ):
            for chunk in chunks:
                size += len(chunk)
                if size > cap:
                    raise FetchError(f"body exceeds expected {spec.size} bytes (+{SIZE_MARGIN} margin); aborted")
                digest.update(chunk)
                f.write(chunk)
                bar.update(len(chunk))
        actual = digest.hexdigest()
        if actual != spec.sha256:
            raise FetchError(f"checksum mismatch for {spec.name}: expected sha256 {spec.sha256}, got {actual}")
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def fetch(
    spec: FileSpec,
    srcs: list[Source],
    dest_dir: Path,
    cfg: DownloadConfig,
    session: requests.Session,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Make ``dest_dir/spec.name`` a verified copy; return where it came from.

    Tries each source in order, retrying transient failures up to
    ``cfg.retries`` times with backoff ``min(MAX_BACKOFF, cfg.backoff * 2**attempt)``
    seconds (through ``sleep``), within ``cfg.max_seconds`` per source. Raises
    DataError listing every source's failure, in one line, if none works.
    """
    dest = dest_dir / spec.name
    if dest.exists():
        if sha256_file(dest) == spec.sha256:
            return "already present"
        log.warning("%s exists but fails its checksum; downloading it again", dest)
        dest.unlink()
    failures = []
    for source in srcs:
        deadline = time.monotonic() + cfg.max_seconds  # for this file from this source, retries included
        for attempt in range(cfg.retries + 1):
            try:
                fetch_one(source, spec, dest, cfg, session, deadline)
                return source.label
            except FetchError as exc:
                log.warning("%s from %s (attempt %d): %s", spec.name, source.label, attempt + 1, exc)
                if not exc.transient or attempt == cfg.retries or time.monotonic() > deadline:
                    failures.append(f"{source.label}: {exc}")
                    break
                sleep(min(MAX_BACKOFF, cfg.backoff * 2**attempt))
    tried = "; ".join(failures) or "no sources configured"
    raise DataError(
        mask_credentials(
            f"could not fetch {spec.name} from any source ({tried}); "
            f"set {MIRROR_ENV} to a directory or http(s) URL that holds it, e.g. {MIRROR_ENV}=../shared/datasets/mnist"
        )
    )


def new_session() -> requests.Session:
    session = requests.Session()
    session.headers["Accept-Encoding"] = "identity"  # the bytes as published, so the checksum applies
    return session


def download(
    specs: Iterable[FileSpec],
    srcs: list[Source],
    dest_dir: Path,
    cfg: DownloadConfig,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, str]:
    """Fetch every file; return ``{name: origin}``. The directory is created if needed."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    for stale in dest_dir.glob(".*.part"):  # left behind by a killed run: start that file clean
        log.info("removing %s left by an interrupted download", stale)
        stale.unlink()
    with new_session() as session:
        return {spec.name: fetch(spec, srcs, dest_dir, cfg, session, sleep) for spec in specs}


def main() -> None:
    cfg = data_config.load()
    srcs = sources(cfg.dataset.mirrors, os.environ.get(MIRROR_ENV))
    origins = download(cfg.dataset.files.values(), srcs, RAW_DIR, cfg.download)
    for name, origin in origins.items():
        log.info("%s: verified (%s)", name, origin)


if __name__ == "__main__":
    from mnist_pipeline.cli import run

    run(main, "download")
