"""SIGKILL a stage mid-run: its outputs stay the previous complete files or are absent, never
partial, and the next ``dvc repro`` recovers without manual cleanup.

Each test works in its own throw-away copy of the repo (the venv's ``dvc``, ``PYTHONPATH`` on the
copy's ``src/``, as in ``tests/test_pipeline_e2e.py``) over the tiny synthetic MNIST of
``tests/conftest.py``, served from a local directory through ``DATA_MIRROR``. A clean ``dvc repro``
runs once per module; its outputs are the reference that every recovery must reproduce byte for
byte, and every test starts from a copy of that workspace.

Where a kill lands is chosen, not left to luck: a test-only ``sitecustomize`` (``tests/helpers/stall_shim.py``,
on ``PYTHONPATH`` and inert unless ``STALL_MODULE`` names the module run with ``-m``) makes a stage
stop halfway through one large write, with that half flushed to its temp file, and report its pid:
the moment a non-atomic writer would leave a truncated file behind. Other kills land at seeded
random moments: just after a temp file appears, or in the middle of training.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from helpers.dvc_sandbox import BIN, DVC, copy_repo, stages_run
from helpers.stall import reaped, stall_env, wait_for_stall, write_stall_shim
from mnist_pipeline import io
from mnist_pipeline.epoch_log import files, metric_file
from mnist_pipeline.paths import LIVE_DIR

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

PREPARE = "mnist_pipeline.stages.prepare"
TRAIN = "mnist_pipeline.stages.train"
SITE_CACHE = ".dvc-site-cache"  # DVC's per-user state, kept inside the copy

# Every array each .npz output must hold.
NPZ_ARRAYS = {
    "data/prepared/train.npz": ("meta", "x", "y"),
    "data/prepared/test.npz": ("meta", "x", "y"),
    "data/features/train.npz": ("meta", "onehot", "x", "y"),
    "data/features/val.npz": ("meta", "onehot", "x", "y"),
    "data/features/test.npz": ("meta", "onehot", "x", "y"),
    "data/model/model.npz": ("W0", "W1", "W2", "b0", "b1", "b2", "meta"),
}
PREPARED = ["data/prepared/train.npz", "data/prepared/test.npz"]
MODEL = "data/model/model.npz"
LIVE_FILES = [p.as_posix() for p in files(LIVE_DIR)]  # DVCLive's per-epoch log, rewritten every epoch
TRAINED = [MODEL, *LIVE_FILES]
# Deterministic outputs of download..evaluate, and dvc.lock (report.md shows wall-clock times).
OUTPUTS = [
    "data/raw/train-images-idx3-ubyte.gz",
    "data/raw/train-labels-idx1-ubyte.gz",
    "data/raw/t10k-images-idx3-ubyte.gz",
    "data/raw/t10k-labels-idx1-ubyte.gz",
    *NPZ_ARRAYS,
    *LIVE_FILES,
    "reports/metrics.json",
    "reports/classification_report.json",
    "reports/classification_report.txt",
    "reports/predictions.csv",
    "dvc.lock",
]


@dataclass
class Workspace:
    """A throw-away copy of the repo where ``dvc`` and the stages run."""

    root: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout)

    def dvc(self, *args: str) -> str:
        """Run ``dvc args``, assert it succeeds, return its output."""
        result = self.run(str(DVC), *args)
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{output}"
        return output

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start ``args`` (``dvc ...`` or ``python -m ...``) in the background, output piped."""
        return subprocess.Popen(
            args,
            cwd=self.root,
            env={**self.env, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def start_stage(self, module: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        return self.start(str(BIN / "python"), "-m", module, env=env)

    def snapshot(self) -> dict[str, bytes | None]:
        """The bytes of every path in :data:`OUTPUTS` (None if absent)."""
        return {rel: (self.root / rel).read_bytes() if (self.root / rel).exists() else None for rel in OUTPUTS}

    def set_param(self, section: str, key: str, value: object) -> None:
        path = self.root / "params.yaml"
        params = yaml.safe_load(path.read_text(encoding="utf-8"))
        params[section][key] = value
        path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def environment(root: Path, mirror: Path, shim_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STALL_") and k != "LOGLEVEL"}
    return {
        **env,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # `python` in dvc.yaml = this venv
        "PYTHONPATH": f"{root / 'src'}{os.pathsep}{shim_dir}",  # the copy's code, and the shim
        "DATA_MIRROR": str(mirror),
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(root / SITE_CACHE),
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
    }


def new_workspace(root: Path, mirror: Path, files: dict, shim_dir: Path) -> Workspace:
    """A git repo in ``root`` holding the pipeline over the dataset ``files`` in ``mirror``; nothing run yet.

    ``params.yaml`` is the repo's with ``dataset.files`` replaced, ``featurize.val_size`` 100 and
    ``train.epochs`` 2.
    """
    if not DVC.is_file():
        pytest.skip(f"dvc not installed next to {sys.executable}")
    copy_repo(root)
    ws = Workspace(root, environment(root, mirror, shim_dir))
    ws.set_param("dataset", "files", files)
    ws.set_param("featurize", "val_size", 100)
    ws.set_param("train", "epochs", 2)
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "pipeline copy"]):
        subprocess.run(["git", *args], cwd=root, env=ws.env, check=True, capture_output=True, timeout=60)
    return ws


def temp_files(directory: Path) -> list[Path]:
    """Hidden temp files that ``io.atomic_write`` streams into (``.<name>.<pid>.<hex>.tmp``)."""
    return sorted(directory.glob(".*.tmp"))


def sigkill_mid_write(proc: subprocess.Popen, marker: Path) -> None:
    """Once ``proc`` stalls mid-write (half of a big array flushed to disk), SIGKILL it."""
    assert wait_for_stall(marker, proc) == proc.pid
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL


def wait_until_written(directory: Path, name: str, proc: subprocess.Popen) -> None:
    """Poll until a file named like ``name`` (itself or its temp file) appears, changes or goes in ``directory``.

    Returns early if ``proc`` exits. Knows nothing of how the stage writes, so a non-atomic writer
    (truncating ``name`` in place) is caught just the same.
    """

    def state() -> dict[str, tuple[int, int]]:
        found = {}
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(directory):
                with contextlib.suppress(FileNotFoundError):  # renamed away meanwhile
                    if name in entry.name:
                        found[entry.name] = (entry.stat().st_size, entry.stat().st_mtime_ns)
        return found

    before = state()
    while proc.poll() is None and state() == before:
        time.sleep(0.001)


@dataclass(frozen=True)
class Reference:
    root: Path  # the workspace after a clean `dvc repro`
    outputs: dict[str, bytes | None]


def assert_complete_or_absent(ws: Workspace, reference: Reference, paths: list[str]) -> list[str]:
    """Each of ``paths`` is absent or the complete file (an ``.npz`` loads with all its arrays); return those present.

    Stage outputs are deterministic, so the previous complete file and the new one are the same bytes.
    """
    present = []
    for rel in paths:
        path = ws.root / rel
        if not path.exists():
            continue
        if rel in NPZ_ARRAYS:
            io.load_npz(path, NPZ_ARRAYS[rel])  # DataError on a partial file
        assert path.read_bytes() == reference.outputs[rel], f"{rel} is neither a complete output nor absent"
        present.append(rel)
    return present


def assert_recovers(ws: Workspace, reference: Reference) -> list[str]:
    """``dvc repro`` succeeds and leaves every output as a clean run does; return the stages it ran."""
    output = ws.dvc("repro")
    after = ws.snapshot()
    assert [rel for rel in OUTPUTS if after[rel] != reference.outputs[rel]] == [], output
    status = ws.dvc("status")
    assert "up to date" in status, status
    return stages_run(output)


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stall_shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_stall_shim(tmp_path_factory.mktemp("shim"))


@pytest.fixture(scope="module")
def _clean_runs() -> dict[str, Reference]:
    return {}


@pytest.fixture
def reference(_clean_runs, tiny_mnist_dir, tmp_path_factory, stall_shim) -> Reference:
    """A workspace after a clean ``dvc repro``: built by the module's first test, then shared.

    ``tiny_mnist_dir`` is seeded, so every test's copy of it has the same bytes (the key says so).
    """
    key = str(sorted(tiny_mnist_dir.sha256.items()))
    if key not in _clean_runs:
        ws = new_workspace(
            tmp_path_factory.mktemp("clean"), tiny_mnist_dir.dir, tiny_mnist_dir.file_specs(), stall_shim
        )
        ws.dvc("repro")
        _clean_runs[key] = Reference(ws.root, ws.snapshot())
    return _clean_runs[key]


@pytest.fixture
def ws(reference, tiny_mnist_dir, tmp_path, stall_shim) -> Workspace:
    """This test's own copy of the reference workspace, outputs and DVC cache included."""
    root = tmp_path / "repo"
    shutil.copytree(reference.root, root, symlinks=True, ignore=shutil.ignore_patterns(SITE_CACHE))
    workspace = Workspace(root, environment(root, tiny_mnist_dir.dir, stall_shim))
    assert workspace.snapshot() == reference.outputs
    return workspace


# --- prepare ------------------------------------------------------------------------------------


@pytest.mark.parametrize("skip", [0, 1], ids=["in-train.npz", "in-test.npz"])
def test_prepare_killed_mid_write_keeps_previous_outputs(ws, reference, tmp_path, skip):
    marker = tmp_path / "stalled"

    with reaped(ws.start_stage(PREPARE, stall_env(PREPARE, marker, skip))) as proc:
        sigkill_mid_write(proc, marker)

    assert assert_complete_or_absent(ws, reference, PREPARED) == PREPARED
    # The killed writer's temp file is inside data/prepared, so DVC sees that output modified and
    # restores it (from its run-cache), temp file gone.
    assert_recovers(ws, reference)
    assert temp_files(ws.root / "data/prepared") == []


def test_prepare_killed_at_random_moments_of_its_writes(ws, reference):
    # Unpatched stage: SIGKILL a random 0-5 ms after it starts writing an output (mid-write, fsync
    # or rename), with the previous outputs present or deleted beforehand.
    rng = random.Random(20240607)
    for i, name in enumerate(["train.npz", "test.npz"] * 3):
        if i % 2:
            for rel in PREPARED:
                (ws.root / rel).unlink(missing_ok=True)
        before = [rel for rel in PREPARED if (ws.root / rel).exists()]
        with reaped(ws.start_stage(PREPARE)) as proc:
            wait_until_written(ws.root / "data/prepared", name, proc)
            time.sleep(rng.uniform(0, 0.005))
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=10) in (0, -signal.SIGKILL)
        present = assert_complete_or_absent(ws, reference, PREPARED)
        assert set(before) <= set(present)  # a killed run never removes a previous output

    assert_recovers(ws, reference)


# --- train --------------------------------------------------------------------------------------


def test_train_killed_mid_training_keeps_previous_outputs(ws, reference):
    params = ws.root / "params.yaml"
    original = params.read_bytes()
    ws.set_param("train", "epochs", 1000)  # the most validation accepts: every kill lands inside fit()
    rng = random.Random(7)
    for _ in range(2):
        with reaped(ws.start_stage(TRAIN)) as proc:
            for line in proc.stderr:
                if line.startswith("train: epoch 3/"):
                    break
            assert proc.poll() is None, "train ended before its third epoch"
            time.sleep(rng.uniform(0, 0.3))
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=10) == -signal.SIGKILL

        assert assert_complete_or_absent(ws, reference, [MODEL]) == [MODEL]
        assert temp_files(ws.root / "data/model") == []  # killed before it wrote anything
        # The live log shows the killed run's first epochs: it is written while training runs, and
        # a SIGKILL leaves no chance to put the previous one back (an exception does: test_train).
        lines = metric_file(ws.root / LIVE_DIR, "val_acc").read_text(encoding="utf-8").splitlines()
        assert [line.split("\t")[0] for line in lines[:4]] == ["step", "1", "2", "3"]
    params.write_bytes(original)

    # DVC sees train's live log changed and reruns train alone: its outputs come back as before,
    # so nothing downstream reruns.
    assert assert_recovers(ws, reference) == ["train"]


@pytest.mark.parametrize("previous", [True, False], ids=["previous-outputs", "no-outputs"])
def test_train_killed_mid_write_of_the_model(ws, reference, tmp_path, previous):
    if not previous:
        for rel in TRAINED:
            (ws.root / rel).unlink()
    marker = tmp_path / "stalled"

    with reaped(ws.start_stage(TRAIN, stall_env(TRAIN, marker))) as proc:
        sigkill_mid_write(proc, marker)

    # The live log is written epoch by epoch, before the model: complete (the same run) by now.
    assert assert_complete_or_absent(ws, reference, TRAINED) == (TRAINED if previous else LIVE_FILES)
    ran = assert_recovers(ws, reference)
    # Without outputs train reruns (dvclive/ is not cached, so no run-cache restore); its outputs
    # equal the old ones, so nothing downstream reruns.
    assert ran == ([] if previous else ["train"])


# --- under dvc repro ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stage", "module", "skip", "outs"),
    [("prepare", PREPARE, 1, PREPARED), ("train", TRAIN, 0, TRAINED)],
    ids=["prepare", "train"],
)
def test_stage_killed_inside_dvc_repro_recovers(ws, reference, tmp_path, stage, module, skip, outs):
    marker = tmp_path / "stalled"
    args = (str(DVC), "repro", "--force", "--single-item", stage)

    with reaped(ws.start(*args, env=stall_env(module, marker, skip)), marker, module) as proc:
        os.kill(wait_for_stall(marker, proc), signal.SIGKILL)  # the stage, not dvc
        out, err = proc.communicate(timeout=60)

    assert proc.returncode != 0
    # DVC runs the command through $SHELL: a shell that execs it reports the signal (-9), one that
    # forks reports the shell's status for a SIGKILLed child (128 + 9).
    assert f"failed to reproduce '{stage}'" in err, out + err
    assert re.search(r"exited with (-9|137)\b", err), out + err
    assert_complete_or_absent(ws, reference, outs)  # DVC deleted them before the run; some may be rewritten
    assert_recovers(ws, reference)
