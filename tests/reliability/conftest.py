"""Fixtures for the reliability suite (``fault_server`` comes from ``tests/conftest.py``).

``blob``
    A 100 kB synthetic file and its ``FileSpec`` (see :func:`~helpers.files.make_blob`).
``fast_cfg``
    A ``DownloadConfig`` with short timeouts, 2 retries and no backoff.
"""

from __future__ import annotations

import pytest

from helpers.files import Blob, make_blob
from mnist_pipeline.data_config import DownloadConfig


@pytest.fixture
def blob() -> Blob:
    return make_blob()


@pytest.fixture
def fast_cfg() -> DownloadConfig:
    return DownloadConfig(connect_timeout=2.0, read_timeout=2.0, retries=2, backoff=0.0, max_seconds=600.0)
