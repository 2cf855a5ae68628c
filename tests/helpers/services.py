"""What a test does when a system service it needs (PostgreSQL, sshd, SLURM, Chromium) is not installed.

On a developer's machine it skips, with a one-line reason naming the package to install. Where the
runner has promised to install every one of them, it fails instead: .ci/run installs them all and
sets ``MNIST_PIPELINE_REQUIRE_SERVICES=1``, so a skip there could only hide a broken install step.
(Not ``CI``: GitHub Actions sets that too, on runners that install none of these.)
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

REQUIRE = "MNIST_PIPELINE_REQUIRE_SERVICES"


def unavailable(reason: str) -> NoReturn:
    """Skip the test with ``reason``, or fail it where :data:`REQUIRE` is 1."""
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"{reason}; {REQUIRE}=1 says it must be installed (.ci/run installs it)", pytrace=False)
    pytest.skip(reason)
