"""What a test does when a system service it needs (PostgreSQL, sshd, SLURM, Chromium) is not installed.

On a developer's machine it skips, with a one-line reason naming the package to install. Under CI
(``CI=true``) it fails instead: .ci/run installs every one of them, so a skip there would only hide
a broken install step.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def unavailable(reason: str) -> NoReturn:
    """Skip the test with ``reason``, or fail it under ``CI=true``."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI must not skip it (.ci/run installs it)", pytrace=False)
    pytest.skip(reason)
