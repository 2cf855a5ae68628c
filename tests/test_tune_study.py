"""tune end to end: real ``dvc exp run`` trials on the tiny MNIST, an embedded study and a PostgreSQL one.

A module fixture builds a throw-away repo whose default preset trains 1 epoch on the tiny
synthetic MNIST, runs the baseline, pushes code to a bare git remote and data to a local DVC
remote, and adds ``conf/tune/tiny.yaml``. The embedded test tunes in that repo. The PostgreSQL
tests start a real server (tests/helpers/postgres.py) and run workers in clones of the bare remote,
as separate machines would: two in parallel on one study, then one killed mid-trial and restarted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from helpers.dvc_sandbox import Sandbox, publish, sandbox_env, tiny_tune_sandbox
from helpers.tune_space import train_running
from mnist_pipeline.tune.storage import JOURNAL_DIR

pytestmark = pytest.mark.slow

WORKER_TIMEOUT = 420


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> tuple[Sandbox, Path]:
    """The repo that ran its baseline and pushed it (code to the bare repo returned, data to a DVC remote)."""
    base = tmp_path_factory.mktemp("tune")
    box = tiny_tune_sandbox(base / "work", base / "tiny")
    box.dvc("repro")
    box.dvc("remote", "add", "-d", "storage", str(base / "dvc-remote"))
    box.commit("baseline, DVC remote")
    box.dvc("push")
    return box, publish(box, base / "origin.git")


def _clone(origin: tuple[Sandbox, Path], dest: Path) -> Sandbox:
    """A worker machine: a clone of the git remote with the baseline's data pulled from the DVC remote."""
    box, bare = origin
    box.run("git", "clone", "-q", bare, dest, cwd=dest.parent)
    clone = Sandbox(dest, sandbox_env(dest, data_mirror=None))
    clone.dvc("pull")
    return clone


def _tune_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "mnist_pipeline.tune", "--space", "tiny", *args]


def _start(box: Sandbox, *args: str) -> subprocess.Popen:
    """A worker in its own process group (so the test can kill the group, as a scheduler does)."""
    out = open(box.root.parent / f"{box.root.name}-worker.log", "a", encoding="utf-8")  # noqa: SIM115
    return subprocess.Popen(
        _tune_cmd(*args), cwd=box.root, env=box.env, stdout=out, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


def _finish(box: Sandbox, worker: subprocess.Popen) -> str:
    try:
        code = worker.wait(timeout=WORKER_TIMEOUT)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
    output = (box.root.parent / f"{box.root.name}-worker.log").read_text(encoding="utf-8")
    assert code == 0, output
    return output


def _exp_params(box: Sandbox) -> dict[str, dict]:
    """params.yaml of each experiment that ``dvc exp show`` lists, by experiment name."""
    found = {}
    for baseline in json.loads(box.dvc("exp", "show", "--json")):
        for group in baseline.get("experiments") or []:
            found[group["name"]] = group["revs"][0]["data"]["params"]["params.yaml"]["data"]
    return found


def _chosen_in(params: dict, trial_params: dict) -> bool:
    """True if an experiment's params.yaml holds every value the sampler chose for its trial."""
    group_values = {"model": lambda p: len(p["model"]["hidden"]), "optimizer": lambda p: p["optimizer"]["name"]}
    expected_groups = {"mlp_64_sigmoid": 1, "softmax_regression": 0}
    for key, value in trial_params.items():
        if key in group_values:
            actual, value = group_values[key](params), expected_groups.get(value, value)
        else:
            section, leaf = key.split(".")
            actual = params[section][leaf]
        if actual != value:
            return False
    return True


def test_embedded_study_gives_one_experiment_per_trial_and_is_reproducible(origin: tuple[Sandbox, Path]) -> None:
    box, _ = origin
    params_before = (box.root / "params.yaml").read_bytes()
    output = box.run(*_tune_cmd("--study", "emb", "--trials", "4", "--no-push"), timeout=WORKER_TIMEOUT)
    study = optuna.load_study(study_name="emb", storage=_journal(box, "emb"))
    trials = study.get_trials()
    assert [(t.number, t.state.name) for t in trials] == [(n, "COMPLETE") for n in range(4)], output
    exps = _exp_params(box)
    for trial in trials:
        assert trial.user_attrs["experiment"] == f"emb-t{trial.number:03d}"
        assert _chosen_in(exps[f"emb-t{trial.number:03d}"], trial.params), (trial.params, exps)
        assert 0 <= trial.value <= 1 and trial.user_attrs["train_seconds"] > 0
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 4
    assert f"dvc exp apply emb-t{study.best_trial.number:03d}" in output
    assert box.git("status", "--porcelain") == "" and (box.root / "params.yaml").read_bytes() == params_before

    # Same seed, a new study: the same first proposal (`false` as dvc: the trial fails at once, proposed all the same)
    box.run(*_tune_cmd("--study", "emb-again", "--trials", "1", "--dvc", "false"), check=False)
    again = optuna.load_study(study_name="emb-again", storage=_journal(box, "emb-again")).get_trials()
    assert again[0].params == trials[0].params and again[0].state.name == "FAIL"
    assert "dvc exp run exited 1" in again[0].user_attrs["error"]


def _journal(box: Sandbox, study: str) -> optuna.storages.JournalStorage:
    path = box.root / JOURNAL_DIR / f"{study}.log"
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))


def _remote_experiments(box: Sandbox, bare: Path) -> list[str]:
    refs = box.git("ls-remote", str(bare), "refs/exps/*").split()
    return sorted(ref.rsplit("/", 1)[1] for ref in refs if ref.startswith("refs/exps/"))


def test_two_workers_share_one_postgresql_study(origin: tuple[Sandbox, Path], database: str, tmp_path: Path) -> None:
    workers = [_clone(origin, tmp_path / name) for name in ("machine-a", "machine-b")]
    running = [_start(w, "--study", "duo", "--trials", "4", "--storage", database) for w in workers]
    outputs = [_finish(w, p) for w, p in zip(workers, running, strict=True)]
    trials = optuna.load_study(study_name="duo", storage=database).get_trials()
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    others = [t for t in trials if t.state.name != "COMPLETE"]
    assert len(complete) == 4, outputs
    assert all("skipped" in t.user_attrs for t in others), outputs  # at most a race for the last place, never run
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(len(trials)))  # distinct, none lost
    names = sorted(t.user_attrs["experiment"] for t in complete)
    assert names == sorted({f"duo-t{t.number:03d}" for t in complete})  # one experiment a trial, no duplicate
    assert len({t.user_attrs["worker"] for t in complete}) == 2  # both workers ran trials
    assert [n for n in _remote_experiments(origin[0], origin[1]) if n.startswith("duo-")] == names  # all pushed
    for w in workers:
        assert w.git("status", "--porcelain") == ""


def _wait_mid_trial(box: Sandbox, database: str, study: str, timeout: float = 180) -> None:
    """Until the study has a RUNNING trial whose experiment is running a stage."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if train_running(box.root, database, study):
            return
        time.sleep(0.5)
    raise AssertionError(f"no trial of {study} got to the train stage within {timeout} s")


def test_worker_killed_mid_trial_leaves_the_study_consistent(
    origin: tuple[Sandbox, Path], database: str, tmp_path: Path
) -> None:
    box = _clone(origin, tmp_path / "machine-c")
    params_before = (box.root / "params.yaml").read_bytes()
    args = ("--study", "kill", "--trials", "2", "--storage", database)
    worker = _start(box, *args)
    _wait_mid_trial(box, database, "kill")
    os.killpg(worker.pid, signal.SIGKILL)  # the whole worker, as a scheduler does; dvc dies with it
    worker.wait(timeout=30)
    killed = optuna.load_study(study_name="kill", storage=database).get_trials()
    assert [t.state.name for t in killed] == ["RUNNING"]  # nobody has noticed yet
    assert box.git("status", "--porcelain") == "" and (box.root / "params.yaml").read_bytes() == params_before

    _finish(box, _start(box, *args))  # the restarted worker continues the study
    trials = optuna.load_study(study_name="kill", storage=database).get_trials()
    assert trials[0].state.name == "FAIL" and "died" in trials[0].user_attrs["error"]
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE" and retry[0].params == trials[0].params
    assert sum(t.state.name == "COMPLETE" for t in trials) == 2 and len(trials) == 3
    assert box.git("status", "--porcelain") == "" and (box.root / "params.yaml").read_bytes() == params_before
    assert "kill-t000" not in _exp_params(box)  # the killed run saved no experiment
