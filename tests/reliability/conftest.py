"""Fixtures for the reliability suite.

``fault_server``
    A running :class:`~reliability.http_faults.FaultyServer` on 127.0.0.1, torn down after the
    test (stalled responses are released). Proxies are bypassed for it and ``DATA_MIRROR`` is unset.
``blob``
    A 100 kB synthetic file and its ``FileSpec`` (see :func:`~reliability.support.make_blob`).
``fast_cfg``
    A ``DownloadConfig`` with short timeouts, 2 retries and no backoff.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mnist_pipeline.config import DownloadConfig

from .http_faults import FaultyServer
from .support import Blob, make_blob


@pytest.fixture
def fault_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultyServer]:
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    monkeypatch.delenv("DATA_MIRROR", raising=False)
    with FaultyServer() as server:
        yield server


@pytest.fixture
def blob() -> Blob:
    return make_blob()


@pytest.fixture
def fast_cfg() -> DownloadConfig:
    return DownloadConfig(connect_timeout=2.0, read_timeout=2.0, retries=2, backoff=0.0)
