"""Stage ``download``: fetch the dataset's four IDX ``.gz`` files, verified.

Sources are tried in order: ``$DATA_MIRROR`` (a URL or a local directory) and
then ``dataset.mirrors``. Every byte goes through the same path: streamed into
a temp file in ``data/raw/`` while its SHA-256 is computed, capped at the
expected size plus a margin, and renamed into place only when the checksum
matches. Files already present and verified are skipped.

Run: ``python -m mnist_pipeline.stages.download`` (normally via ``dvc repro``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlparse

import requests
from tqdm import tqdm

from mnist_pipeline import config
from mnist_pipeline.config import DownloadConfig, FileSpec
from mnist_pipeline.errors import DataError, PipelineError

log = logging.getLogger(__name__)

RAW_DIR = Path("data/raw")
MIRROR_ENV = "DATA_MIRROR"
CHUNK = 1 << 16
SIZE_MARGIN = 1 << 20  # bytes a source may send beyond the expected size before we stop reading
MAX_REDIRECTS = 5


class FetchError(Exception):
    """One source failed for one file; ``transient`` errors are worth retrying."""

    def __init__(self, reason: str, transient: bool = False) -> None:
        super().__init__(reason)
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
    """Validate ``$DATA_MIRROR`` before any network call; raise PipelineError if unusable."""
    label = f"{MIRROR_ENV}={value}"
    parsed = urlparse(value)
    if parsed.scheme in ("http", "https"):
        if not parsed.hostname:
            raise PipelineError(f"{label} is not a valid URL (no host); use e.g. http://127.0.0.1:8765/ or a directory")
        base = value if value.endswith("/") else value + "/"
        return Source(label, base, local=False)
    if parsed.scheme == "file":
        value = parsed.path
    elif "://" in value:
        raise PipelineError(f"{label}: unsupported scheme {parsed.scheme!r}; use http(s):// or a local directory")
    if not Path(value).is_dir():
        raise PipelineError(f"{label} is not an existing directory; point it at a folder holding the .gz files")
    return Source(label, str(Path(value).resolve()), local=True)


def sources(mirrors: Iterable[str], env: str | None) -> list[Source]:
    """``$DATA_MIRROR`` (if set) first, then the configured mirrors."""
    found = [mirror_from_env(env)] if env else []
    return found + [Source(url, url, local=False) for url in mirrors]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _stream_http(url: str, cfg: DownloadConfig, session: requests.Session) -> Iterator[bytes]:
    try:
        with session.get(url, stream=True, timeout=(cfg.connect_timeout, cfg.read_timeout)) as resp:
            if resp.status_code != 200:
                transient = resp.status_code in (408, 425, 429) or resp.status_code >= 500
                raise FetchError(f"HTTP {resp.status_code} {resp.reason}", transient)
            length = resp.headers.get("Content-Length")
            received = 0
            for chunk in resp.raw.stream(CHUNK, decode_content=False):
                received += len(chunk)
                yield chunk
            if length is not None and length.isdigit() and received < int(length):
                raise FetchError(f"truncated body: {received} of {length} bytes", transient=True)
    except requests.exceptions.TooManyRedirects as exc:
        raise FetchError(f"too many redirects (> {MAX_REDIRECTS})") from exc
    except requests.exceptions.InvalidSchema as exc:
        raise FetchError(f"redirected to an unsupported scheme ({exc})") from exc
    except (requests.exceptions.Timeout, TimeoutError) as exc:
        raise FetchError(f"timed out (connect {cfg.connect_timeout}s / read {cfg.read_timeout}s)", True) from exc
    except (requests.exceptions.RequestException, OSError) as exc:
        raise FetchError(f"{type(exc).__name__}: {str(exc)[:200]}", transient=True) from exc
    except Exception as exc:  # urllib3 protocol errors surface as their own types
        if type(exc).__module__.startswith("urllib3"):
            raise FetchError(f"{type(exc).__name__}: {str(exc)[:200]}", transient=True) from exc
        raise


def _stream_local(path: str) -> Iterator[bytes]:
    try:
        with open(path, "rb") as f:
            yield from iter(lambda: f.read(CHUNK), b"")
    except FileNotFoundError as exc:
        raise FetchError("no such file") from exc
    except OSError as exc:
        raise FetchError(f"cannot read: {exc.strerror}") from exc


def fetch_one(
    source: Source, spec: FileSpec, dest: Path, cfg: DownloadConfig, session: requests.Session
) -> None:
    """Fetch ``spec`` from ``source`` into ``dest`` atomically, verified; FetchError if not."""
    location = source.locate(spec.name)
    chunks = _stream_local(location) if source.local else _stream_http(location, cfg, session)
    cap = spec.size + SIZE_MARGIN
    tmp = dest.with_name(f".{dest.name}.part")
    digest = hashlib.sha256()
    size = 0
    try:
        with (
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
    sleep=time.sleep,
) -> str:
    """Make ``dest_dir/spec.name`` a verified copy; return where it came from.

    Tries each source in order, retrying transient failures with exponential
    backoff. Raises PipelineError listing every source's failure if none works.
    """
    dest = dest_dir / spec.name
    if dest.exists():
        if sha256_file(dest) == spec.sha256:
            return "already present"
        log.warning("%s exists but fails its checksum; downloading it again", dest)
        dest.unlink()
    failures = []
    for source in srcs:
        for attempt in range(cfg.retries + 1):
            try:
                fetch_one(source, spec, dest, cfg, session)
                return source.label
            except FetchError as exc:
                log.info("%s from %s: %s", spec.name, source.label, exc)
                if not exc.transient or attempt == cfg.retries:
                    failures.append(f"{source.label}: {exc}")
                    break
                sleep(cfg.backoff * 2**attempt)
    tried = "; ".join(failures) or "no sources configured"
    raise DataError(
        f"could not fetch {spec.name} from any source ({tried}); "
        f"set {MIRROR_ENV} to a directory or URL that holds it, e.g. {MIRROR_ENV}=../shared/datasets/mnist"
    )


def new_session() -> requests.Session:
    session = requests.Session()
    session.max_redirects = MAX_REDIRECTS
    session.trust_env = True
    return session


def download(
    specs: Iterable[FileSpec], srcs: list[Source], dest_dir: Path, cfg: DownloadConfig
) -> dict[str, str]:
    """Fetch every file; return ``{name: origin}``. The directory is created if needed."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    for stale in dest_dir.glob(".*.part"):  # left behind by a killed run
        stale.unlink()
    with new_session() as session:
        return {spec.name: fetch(spec, srcs, dest_dir, cfg, session) for spec in specs}


def main() -> None:
    cfg = config.load()
    srcs = sources(cfg.dataset.mirrors, os.environ.get(MIRROR_ENV))
    origins = download(cfg.dataset.files.values(), srcs, RAW_DIR, cfg.download)
    for name, origin in origins.items():
        log.info("%s: verified (%s)", name, origin)


if __name__ == "__main__":
    from mnist_pipeline.cli import run

    run(main, "download")
