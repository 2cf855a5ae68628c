"""Synthetic files for the download tests: blobs with their ``FileSpec``, corruption, sources, listings.

Used by ``tests/stages/test_download.py`` and the reliability suite.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from mnist_pipeline.data_config import FileSpec
from mnist_pipeline.stages.download import Source

from .http_faults import FaultyServer


@dataclass(frozen=True)
class Blob:
    """A file's bytes and the :class:`FileSpec` (name, size, sha256) that describes them."""

    data: bytes
    spec: FileSpec

    def route(self, mirror: str) -> str:
        """URL path of this file on ``mirror`` (e.g. ``"m1"`` -> ``/m1/<name>``)."""
        return f"/{mirror}/{self.spec.name}"


def make_blob(name: str = "blob-idx1-ubyte.gz", size: int = 100_000, seed: int = 7) -> Blob:
    """Deterministic pseudo-random bytes (no repeating pattern, so any corruption changes the sha256)."""
    data = b"".join(hashlib.sha256(f"{seed}:{i}".encode()).digest() for i in range(size // 32 + 1))[:size]
    return Blob(data, FileSpec(name, size, hashlib.sha256(data).hexdigest()))


def corrupt(data: bytes) -> bytes:
    """Same length, different bytes (every byte flipped)."""
    return bytes(b ^ 0xFF for b in data)


def http_sources(server: FaultyServer, *mirrors: str) -> list[Source]:
    """One http :class:`Source` per mirror prefix on ``server``, labelled by the prefix."""
    return [Source(mirror, server.url(f"{mirror}/"), local=False) for mirror in mirrors]


def listing(directory: Path) -> list[str]:
    """Every entry in ``directory``, hidden ones included (temp and ``.part`` files start with a dot)."""
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []
