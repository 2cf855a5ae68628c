"""Sharing results through remotes: a DVC remote for data, a bare git remote for code and experiments.

On a throw-away copy of the repo running on the tiny synthetic MNIST: ``dvc push`` to a
local-directory remote, then a fresh ``git clone`` + ``dvc pull`` restores every output so
``dvc repro`` runs nothing; and an experiment travels with ``dvc exp push``/``dvc exp pull``.
The clone never gets DATA_MIRROR and the tiny dataset has no mirrors, so any stage that tried
to rerun would fail.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers.dvc_sandbox import TINY_TRAINING, Sandbox, make_sandbox, publish, sandbox_env, tiny_dataset_yaml
from helpers.tiny_mnist import TinyMnist

pytestmark = pytest.mark.slow


@pytest.fixture
def shared(tmp_path: Path, tiny_mnist_dir: TinyMnist) -> tuple[Sandbox, Path]:
    """A repo that ran its pipeline, pushed code to a bare git remote and data to a DVC remote."""
    box = make_sandbox(
        tmp_path / "origin-work",
        preset=TINY_TRAINING,
        datasets={"tiny": tiny_dataset_yaml(tiny_mnist_dir.file_specs())},
        data_mirror=tiny_mnist_dir.dir,
    )
    box.dvc("repro")
    box.dvc("remote", "add", "-d", "storage", str(tmp_path / "dvc-remote"))
    box.commit("results and a DVC remote")
    pushed = box.dvc("push")
    assert re.search(r"\d+ files? pushed", pushed), pushed
    return box, publish(box, tmp_path / "origin.git")


def _clone(box: Sandbox, bare: Path, dest: Path) -> Sandbox:
    box.run("git", "clone", "-q", bare, dest, cwd=dest.parent)
    return Sandbox(dest, sandbox_env(dest, data_mirror=None))


def test_pull_in_a_fresh_clone_restores_every_output(shared: tuple[Sandbox, Path], tmp_path: Path) -> None:
    box, bare = shared
    clone = _clone(box, bare, tmp_path / "clone")
    assert not (clone.root / "data").exists()
    assert "DATA_MIRROR" not in clone.env

    pulled = clone.dvc("pull")
    assert "fetched" in pulled or "added" in pulled, pulled
    original = box.outputs()
    assert {"data/model/model.npz", "data/features/train.npz", "reports/metrics.json"} <= set(original)
    assert clone.outputs() == original  # every output, byte for byte

    repro = clone.dvc("repro")
    assert "Running stage" not in repro, repro
    assert "up to date" in clone.dvc("status")
    assert clone.git("status", "--porcelain") == ""


def test_experiment_travels_through_exp_push_and_pull(shared: tuple[Sandbox, Path], tmp_path: Path) -> None:
    box, bare = shared
    box.dvc("exp", "run", "-n", "lr-half", "-S", "train.lr=0.05")
    metrics = box.read_json("reports/metrics.json")
    model = (box.root / "data/model/model.npz").read_bytes()
    assert box.params()["train"]["lr"] == 0.05
    assert "lr-half" in box.dvc("exp", "push", "origin", "lr-half")  # git refs to origin, data to storage

    clone = _clone(box, bare, tmp_path / "clone")
    assert "lr-half" in clone.dvc("exp", "list", "origin", "--name-only")  # on the git remote
    assert "lr-half" not in clone.dvc("exp", "list", "--name-only")  # not yet here
    clone.dvc("exp", "pull", "origin", "lr-half")
    shown = clone.dvc("exp", "show", "--json")
    assert "lr-half" in shown
    clone.dvc("exp", "apply", "lr-half")
    assert clone.read_json("reports/metrics.json") == metrics
    assert clone.params()["train"]["lr"] == 0.05
    assert (clone.root / "data/model/model.npz").read_bytes() == model  # data came from the DVC remote
    assert "Running stage" not in clone.dvc("repro")
