"""docs/tuning.md's SLURM recipe, run as written on a real SLURM cluster, with a preempted task.

A one-node SLURM 22.05 cluster (tests/helpers/slurm.py), a real PostgreSQL server for the study, a
real sshd for the DVC remote (as in tests/test_ssh_remote.py) and a bare git repository. The
repository under test carries what a user's checkout does: the Makefile, pyproject.toml,
requirements.lock and ``slurm/tune-worker.sh``, so each array task installs its own ``.venv`` in
its own clone, exactly as on a cluster (uv, from its package cache, which may ask the package
index). There is no training data but the tiny synthetic MNIST, which only the origin's
``dvc repro`` reads. The ``sbatch`` command is read from the docs; only the sizes change (2 tasks of
1 CPU, 5 trials of the tiny space, 20 minutes).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from helpers.dvc_sandbox import REPO, Sandbox, publish, sandbox_env, tiny_tune_sandbox
from helpers.services import unavailable
from helpers.slurm import SKIP_REASON, SlurmCluster, find_binaries, slurm_cluster
from helpers.sshd import SshServer
from helpers.tune_space import train_running

pytestmark = pytest.mark.slow

ALIAS = "mnist-remote"
DOC = REPO / "docs" / "tuning.md"
WORKER = "slurm/tune-worker.sh"
TRIALS = 5
JOB_SECONDS = 420  # from sbatch to both tasks done: the test's whole budget under pytest-timeout's 600 s


@pytest.fixture(scope="module")
def cluster() -> Iterator[SlurmCluster]:
    binaries = find_binaries()
    if binaries is None:
        unavailable(SKIP_REASON)
    if os.geteuid() != 0:  # not a missing package: the helper's cluster runs as root (SlurmUser=root)
        pytest.skip("the test SLURM cluster runs its daemons and jobs as root; run the slow tests as root")
    with slurm_cluster(binaries) as running:
        yield running


def documented_sbatch() -> list[str]:
    """The ``sbatch`` command of docs/tuning.md's SLURM section, split as the shell would."""
    section = DOC.read_text(encoding="utf-8").split("### SLURM", 1)[1]
    block = re.search(r"```bash\n(sbatch .*?)```", section, re.DOTALL)
    assert block, f"no ```bash block starting with sbatch in {DOC}'s SLURM section"
    return shlex.split(block.group(1).replace("\\\n", " "))


def resized(command: list[str], git_remote: Path, storage: str, study: str) -> list[str]:
    """The documented command with this test's sizes and addresses; every other word as written."""
    options = dict(arg.removeprefix("--").split("=", 1) for arg in command[1:-2])
    assert command[0] == "sbatch" and command[-2] == "--wrap", command
    assert set(options) == {"array", "cpus-per-task", "time", "signal", "export"}, options
    assert options["signal"] == "TERM@120" and options["export"].startswith("ALL,GIT_REMOTE="), options
    wrap = shlex.split(command[-1])
    assert wrap[:3] == ["srun", "bash", WORKER] and wrap[3:5] == ["--study", "big"], wrap
    tune_args = ["--study", study, "--trials", str(TRIALS), "--minutes", "15", "--space", "tiny"]
    return [
        "sbatch",
        "--array=0-1",
        "--cpus-per-task=1",
        "--time=00:20:00",
        f"--signal={options['signal']}",
        f"--export=ALL,GIT_REMOTE={git_remote},TUNE_STORAGE={storage}",
        "--wrap",
        shlex.join([*wrap[:3], *tune_args]),
    ]


def test_docs_command_is_what_the_test_resizes() -> None:
    """The parse above must see the docs' words, not an empty or moved block."""
    command = documented_sbatch()
    assert command[:2] == ["sbatch", "--array=0-9"] and "--signal=TERM@120" in command
    assert (REPO / WORKER).is_file() and WORKER in command[-1]


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory, ssh_remote: SshServer) -> tuple[Sandbox, Path, Path]:
    """A checkout that ran its baseline and pushed it: code to a bare repo, outputs over SSH."""
    base = tmp_path_factory.mktemp("slurm")
    box = tiny_tune_sandbox(base / "work", base / "tiny")
    for name in ("Makefile", "pyproject.toml", "requirements.lock", "README.md"):
        shutil.copy2(REPO / name, box.root / name)
    shutil.copytree(REPO / "slurm", box.root / "slurm")
    box.env["HOME"] = str(ssh_remote.client_home(base / "home", ALIAS))
    box.dvc("repro")
    box.dvc("remote", "add", "-d", "storage", f"ssh://{ALIAS}{base / 'store'}")
    box.commit("baseline, what a checkout installs from, SSH remote")
    box.dvc("push")
    return box, publish(box, base / "origin.git"), base


def _job_env(cluster: SlurmCluster, box: Sandbox, base: Path) -> dict[str, str]:
    """What the submitting shell has: the cluster, the SSH Host entry, a TMPDIR; no test-only Python path."""
    env = {**cluster.env, "HOME": box.env["HOME"], "TMPDIR": str(base / "nodes"), "DVC_NO_ANALYTICS": "1"}
    for key in ("PYTHONPATH", "DATA_MIRROR", "VIRTUAL_ENV"):
        env.pop(key, None)
    # the developer's package caches (HOME is the test machine's own): installs reuse downloaded wheels
    env.setdefault("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
    env.update({key: value for key, value in box.env.items() if key.startswith("GIT_")})  # no user git config
    (base / "nodes").mkdir(exist_ok=True)
    return env


def _task_outputs(box: Sandbox, job: str) -> str:
    files = sorted(box.root.glob(f"slurm-{job}_*.out"))
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')}" for p in files)


def test_documented_array_runs_the_study_and_survives_a_preempted_task(
    cluster: SlurmCluster, origin: tuple[Sandbox, Path, Path], database: str, ssh_remote: SshServer
) -> None:
    box, bare, base = origin
    env = _job_env(cluster, box, base)
    command = resized(documented_sbatch(), bare, database, "slurm")
    started = time.monotonic()
    submitted = subprocess.run(
        [*command[:1], "--parsable", *command[1:]],
        cwd=box.root, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr + cluster.logs()
    job = submitted.stdout.strip().split(";")[0]

    task1 = base / "nodes" / f"mnist-{job}-1"
    deadline = time.monotonic() + JOB_SECONDS
    while not train_running(task1, database, "slurm"):
        states = {record.get("ArrayTaskId"): record.get("JobState") for record in cluster.jobs(job)}
        assert time.monotonic() < deadline and states.get("1") in (None, "PENDING", "RUNNING"), (
            f"task 1 never got to a train stage: {states}\n{_task_outputs(box, job)}\n{cluster.logs()}"
        )
        time.sleep(0.3)
    # The trial to preempt must leave work for task 0, or nobody would be left to run it again.
    done = optuna.load_study(study_name="slurm", storage=database).get_trials(states=(TrialState.COMPLETE,))
    states = {record.get("ArrayTaskId"): record.get("JobState") for record in cluster.jobs(job)}
    assert len(done) < TRIALS - 1 and states.get("0") == "RUNNING", (len(done), states)
    cluster.run("scancel", "--signal=TERM", f"{job}_1")  # preempted mid-trial, as `--signal=TERM@120` does
    preempted_at = time.monotonic() - started

    states = cluster.wait_job(job, timeout=max(1.0, deadline - time.monotonic()))
    wall = time.monotonic() - started
    outputs = _task_outputs(box, job)
    assert states[f"{job}_0"] == "COMPLETED", (states, outputs)
    assert states[f"{job}_1"] in ("COMPLETED", "FAILED"), (states, outputs)  # its own exit status after the TERM

    trials = optuna.load_study(study_name="slurm", storage=database).get_trials()
    failed = [t for t in trials if t.state.name == "FAIL"]
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(failed) == 1 and "SIGTERM" in failed[0].user_attrs.get("error", ""), (
        [(t.number, t.state.name, t.user_attrs) for t in trials],
        outputs,
    )
    retry = [t for t in complete if t.system_attrs.get("failed_trial") == failed[0].number]
    assert len(retry) == 1 and retry[0].params == failed[0].params, outputs  # run again, nothing lost
    assert len(complete) == TRIALS and failed[0].user_attrs["worker"] != retry[0].user_attrs["worker"]
    names = sorted(t.user_attrs["experiment"] for t in complete)
    pushed = box.git("ls-remote", str(bare), "refs/exps/*").split()
    assert sorted(ref.rsplit("/", 1)[1] for ref in pushed if ref.startswith("refs/exps/")) == names

    # Anywhere else: every experiment with its metrics, and the study's best applied, data over SSH
    reader_root = base / "reader"
    box.run("git", "clone", "-q", bare, reader_root, cwd=base)
    reader = Sandbox(reader_root, sandbox_env(reader_root, data_mirror=None))
    reader.env["HOME"] = str(ssh_remote.client_home(base / "reader-home", ALIAS))
    reader.dvc("exp", "pull", "origin", *names)
    shown = {
        exp["name"]: exp["revs"][0]["data"]["metrics"]["reports/metrics.json"]["data"]["val"]["accuracy"]
        for baseline in json.loads(reader.dvc("exp", "show", "--json"))
        for exp in baseline.get("experiments") or []
    }
    assert shown == {t.user_attrs["experiment"]: pytest.approx(t.value) for t in complete}
    best = max(complete, key=lambda t: t.value)
    reader.dvc("exp", "apply", best.user_attrs["experiment"])
    assert reader.read_json("reports/metrics.json")["val"]["accuracy"] == pytest.approx(best.value)
    assert "up to date" in reader.dvc("status")
    codes = {record.get("ArrayTaskId"): record.get("ExitCode") for record in cluster.jobs(job)}
    print(f"SLURM array: {len(trials)} trials, TERM at {preempted_at:.0f} s, wall {wall:.0f} s, {states}, exit {codes}")
