"""Exit codes and error lines: ``python -m mnist_pipeline.stages.download`` run as a subprocess, and ``cli.run``.

Every failure exits 1 with exactly one line on stderr (``error: download: ...``)
and no traceback, unless ``LOGLEVEL=DEBUG`` or ``--verbose`` asks for it. Each
run happens in a temp dir holding a copy of ``params.yaml`` whose mirrors point
at the local fault server, so a test can assert that no request was made.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers.files import listing
from helpers.http_faults import status
from mnist_pipeline import cli
from mnist_pipeline.errors import DataError
from mnist_pipeline.mlp.network import Network
from mnist_pipeline.mlp.optimizers import OptimizerConfig
from mnist_pipeline.mlp.schedules import ScheduleConfig
from mnist_pipeline.mlp.trainer import Split, TrainConfig, fit
from mnist_pipeline.paths import RAW_DIR
from mnist_pipeline.stages.download import MIRROR_ENV

pytestmark = pytest.mark.timeout(60)


def run_download(workdir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in (MIRROR_ENV, "LOGLEVEL")}
    return subprocess.run(
        [sys.executable, "-m", "mnist_pipeline.stages.download", *args],
        cwd=workdir,
        env={**base, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1", **env},
        capture_output=True,
        text=True,
        timeout=45,
    )


@pytest.fixture
def workdir(tmp_path, repo_root, fault_server) -> Path:
    """A temp dir with ``params.yaml`` copied from the repo, mirrors pointed at ``fault_server``."""
    params = yaml.safe_load((repo_root / "params.yaml").read_text(encoding="utf-8"))
    params["dataset"]["mirrors"] = [fault_server.url("m1/"), fault_server.url("m2/")]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    return tmp_path


def assert_one_line_error(proc: subprocess.CompletedProcess) -> str:
    """Exit 1; the error is the last stderr line and the only one starting ``error:``; no traceback.

    (Lines before it are log records, e.g. one warning per failed attempt.)
    """
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.splitlines()
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], proc.stderr
    assert lines[-1].startswith("error: download: ")
    assert "Traceback" not in proc.stderr
    return lines[-1]


@pytest.mark.parametrize("value", ["{tmp}/no/such/dir", "http://[::1/mnist/", "htp://example.com/mnist/"])
def test_bad_data_mirror_exits_1_with_one_line_and_no_request(workdir, fault_server, value):
    value = value.format(tmp=workdir)

    proc = run_download(workdir, {MIRROR_ENV: value})

    line = assert_one_line_error(proc)
    assert len(proc.stderr.splitlines()) == 1  # nothing else was logged: it failed before any work
    assert f"{MIRROR_ENV}={value}" in line
    assert fault_server.requests == []
    assert not (workdir / "data").exists()


@pytest.mark.parametrize(("env", "args"), [({"LOGLEVEL": "DEBUG"}, ()), ({}, ("--verbose",))])
def test_debug_or_verbose_shows_the_traceback(workdir, fault_server, env, args):
    proc = run_download(workdir, {MIRROR_ENV: str(workdir / "missing"), **env}, *args)

    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert "ConfigError" in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("error: download: ")


def test_all_sources_failing_exits_1_with_one_line_naming_each(workdir, fault_server):
    proc = run_download(workdir, {})  # every path on the fault server is a 404

    line = assert_one_line_error(proc)
    assert f"{fault_server.url('m1/')}: HTTP 404 Not Found" in line
    assert f"{fault_server.url('m2/')}: HTTP 404 Not Found" in line
    assert f"set {MIRROR_ENV} to a directory" in line
    assert len(fault_server.requests) == 2  # 404 is not retried; stopped at the first file
    assert listing(workdir / RAW_DIR) == []


def test_transient_failure_is_retried_then_reported(workdir, fault_server):
    params = yaml.safe_load((workdir / "params.yaml").read_text(encoding="utf-8"))
    params["download"].update(connect_timeout=2, read_timeout=2, retries=1, backoff=0.01)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    for spec in params["dataset"]["files"].values():
        fault_server.route(f"/m1/{spec['name']}", status(503))

    proc = run_download(workdir, {})

    line = assert_one_line_error(proc)
    assert "m1/: HTTP 503 Service Unavailable" in line and "m2/: HTTP 404 Not Found" in line
    first = fault_server.requests[0]
    assert fault_server.requests == [first, first, first.replace("/m1/", "/m2/")]  # m1 retried once


def test_success_exits_0(workdir, fault_server, tiny_mnist_dir):
    params = yaml.safe_load((workdir / "params.yaml").read_text(encoding="utf-8"))
    params["dataset"]["files"] = tiny_mnist_dir.file_specs()
    (workdir / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")

    proc = run_download(workdir, {MIRROR_ENV: str(tiny_mnist_dir.dir)})

    assert proc.returncode == 0, proc.stderr
    assert "error" not in proc.stderr
    assert listing(workdir / RAW_DIR) == sorted(p.name for p in tiny_mnist_dir.paths.values())
    assert fault_server.requests == []


# --- cli.run in process -----------------------------------------------------------------------


def run_stage(main, monkeypatch, argv=("stage",), loglevel=None) -> int:
    monkeypatch.setattr(sys, "argv", list(argv))
    if loglevel is None:
        monkeypatch.delenv("LOGLEVEL", raising=False)
    else:
        monkeypatch.setenv("LOGLEVEL", loglevel)
    with pytest.raises(SystemExit) as exit_info:
        cli.run(main, "stage")
    return exit_info.value.code


def test_multi_line_pipeline_error_is_folded_into_one_line(monkeypatch, capsys):
    def main():
        raise DataError("first line\nsecond line\n  third")

    assert run_stage(main, monkeypatch) == 1
    assert capsys.readouterr().err == "error: stage: first line second line third\n"


def test_os_error_is_one_line_too(monkeypatch, capsys, tmp_path):
    def main():
        open(tmp_path / "no" / "such" / "file")

    assert run_stage(main, monkeypatch) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: stage: FileNotFoundError: [Errno 2] No such file or directory")
    assert err.count("\n") == 1


def test_model_error_is_one_line_like_a_pipeline_error(monkeypatch, capsys):
    def main():  # the trainer raises its own MLPError: a batch larger than the training set
        rng = np.random.default_rng(0)
        data = Split(np.zeros((3, 2), np.float32), np.zeros(3, np.uint8), np.eye(2, dtype=np.float32)[[0, 1, 0]])
        train_cfg = TrainConfig(epochs=1, batch_size=4, lr=0.1, l2=0.0, seed=0, dtype="float32")
        net = Network([2, 2], "identity", "zeros", rng)
        fit(net, data, data, train_cfg, OptimizerConfig("sgd"), ScheduleConfig("constant"), rng)

    assert run_stage(main, monkeypatch) == 1
    assert capsys.readouterr().err == "error: stage: train.batch_size=4 exceeds the 3 training examples; lower it\n"


def test_interrupt_exits_130(monkeypatch, capsys):
    def main():
        raise KeyboardInterrupt

    assert run_stage(main, monkeypatch) == 130
    assert capsys.readouterr().err == "error: stage: interrupted\n"


def test_a_bug_keeps_its_traceback(monkeypatch):
    def main():
        raise ZeroDivisionError("a bug, not a user error")

    monkeypatch.setattr(sys, "argv", ["stage"])
    with pytest.raises(ZeroDivisionError):
        cli.run(main, "stage")


def test_verbose_flag_is_removed_before_main_sees_it(monkeypatch):
    seen = []

    def main():
        seen.append(list(sys.argv))
        raise SystemExit(0)

    assert run_stage(main, monkeypatch, argv=("stage", "--verbose", "train.lr=0.1")) == 0
    assert seen == [["stage", "train.lr=0.1"]]


def test_unknown_loglevel_does_not_crash(monkeypatch, capsys):
    def main():
        raise DataError("clear message")

    assert run_stage(main, monkeypatch, loglevel="CHATTY") == 1
    assert capsys.readouterr().err == "error: stage: clear message\n"
