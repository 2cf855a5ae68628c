"""Two ``dvc repro`` at once: the second gets DVC's lock error, the first finishes intact.

In a throw-away copy of the repo over the tiny synthetic MNIST (its workspace from
``test_kill_stages.py``), the first ``dvc repro`` is held inside its train stage, halfway
through writing ``model.npz``, by the test-only stall shim, so the second one starts at a
known point of the first rather than after a guessed delay. DVC releases its repo lock while a
stage command runs but keeps per-path read/write locks (``.dvc/tmp/rwlock``) on that stage's
deps and outs, so the second run fails as soon as it reaches a stage touching them.
"""

from __future__ import annotations

import json

import pytest
import yaml

from helpers.dvc_sandbox import DVC, stages_run
from helpers.stall import reaped, stall_env, wait_for_stall, write_stall_shim
from mnist_pipeline import io
from mnist_pipeline.epoch_log import read_history
from mnist_pipeline.paths import LIVE_DIR

from .test_kill_stages import NPZ_ARRAYS, TRAIN, new_workspace

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

REPO_LOCK = "Unable to acquire lock"  # the repo-wide lock (dvc/lock.py)
PATH_LOCK = "is busy, it is being blocked by"  # a stage's deps/outs (dvc/rwlock.py)


def test_second_repro_gets_lock_error_and_first_finishes_intact(tiny_mnist_dir, tmp_path):
    ws = new_workspace(
        tmp_path / "repo", tiny_mnist_dir.dir, tiny_mnist_dir.file_specs(), write_stall_shim(tmp_path / "shim")
    )
    marker, release = tmp_path / "stalled", tmp_path / "release"
    first = ws.start(str(DVC), "repro", env=stall_env(TRAIN, marker, release=release))

    with reaped(first, marker, TRAIN):
        wait_for_stall(marker, first)  # the first run is inside train, half of model.npz on disk
        second = ws.run(str(DVC), "repro")
        release.touch()
        out, err = first.communicate(timeout=90)

    second_output = second.stdout + second.stderr
    assert second.returncode != 0, second_output
    assert stages_run(second_output) == [], second_output  # it ran no stage command at all
    blocked_by_first = PATH_LOCK in second_output and f"(PID {first.pid}): " in second_output
    assert REPO_LOCK in second_output or blocked_by_first, second_output

    assert first.returncode == 0, out + err
    dvc_yaml = yaml.safe_load((ws.root / "dvc.yaml").read_text(encoding="utf-8"))
    assert stages_run(out) == list(dvc_yaml["stages"])
    for rel, arrays in NPZ_ARRAYS.items():
        io.load_npz(ws.root / rel, arrays)
    assert list(read_history(ws.root / LIVE_DIR)["epoch"]) == [1, 2]  # train.epochs rows
    lock = yaml.safe_load((ws.root / "dvc.lock").read_text(encoding="utf-8"))
    assert sorted(lock["stages"]) == sorted(dvc_yaml["stages"])
    assert "up to date" in ws.dvc("status")  # dvc.lock matches every output on disk
    rwlock = json.loads((ws.root / ".dvc/tmp/rwlock").read_text(encoding="utf-8"))
    assert not rwlock.get("read") and not rwlock.get("write")  # neither run left a path locked
    assert stages_run(ws.dvc("repro")) == []
