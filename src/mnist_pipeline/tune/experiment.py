"""One trial as one DVC experiment: ``dvc exp run --temp -n NAME -S ...``, its metrics, its push.

``--temp`` runs the pipeline in a temporary copy under ``.dvc/tmp/exps`` and saves the result as an
experiment ref (``refs/exps/...``, listed by ``dvc exp show``), so the workspace's params.yaml
and outputs are never touched: a worker killed mid-trial leaves nothing half-written in the repo.
``dvc`` runs in its own process group, which :func:`run_experiment` kills whole if the worker is
interrupted, and which gets SIGKILL from the kernel if the worker itself is killed (Linux).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mnist_pipeline import paths
from mnist_pipeline.check_metrics import flatten, git_show
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.io import json_object
from mnist_pipeline.params import is_finite_number
from mnist_pipeline.sweep import Dvc

log = logging.getLogger(__name__)

LOG_DIR = Path(".dvc/tmp/tune/logs")  # one dvc output log per trial, named after its experiment
EXPS_TMP = Path(".dvc/tmp/exps")  # DVC 3: run/<rev>/<rev>.run describe temp runs, standalone/ holds their copies
OBJECTIVE = "val.accuracy"  # of reports/metrics.json; test metrics never steer the search
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Outcome:
    """What a finished experiment measured: the objective and the training wall clock."""

    val_accuracy: float
    train_seconds: float | None


def experiment_name(study: str, number: int) -> str:
    """``<study>-t<NNN>``: the DVC experiment of trial ``number``."""
    return f"{study}-t{number:03d}"


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def run_experiment(dvc: str, name: str, overrides: Sequence[str], cwd: Path | None = None) -> None:
    """Run ``dvc exp run --temp -n name -S ...`` to the end, its output in ``LOG_DIR/name.log``.

    Raises
    ------
    PipelineError
        If it exits non-zero: the last ``error:`` line of its output (or its last line) and the log.
    """
    args = [dvc, "exp", "run", "--temp", "-n", name]
    for item in overrides:
        args += ["-S", item]
    log_file = (cwd or Path()) / LOG_DIR / f"{name}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log.info("%s: dvc exp run --temp %s", name, " ".join(overrides))
    with open(log_file, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(
            args, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=_die_with_parent,
        )  # fmt: skip
        try:
            code = proc.wait()
        except BaseException:  # interrupted (SIGINT/SIGTERM raise here): stop the whole run first
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    if code != 0:
        lines = log_file.read_text(encoding="utf-8", errors="replace").strip().splitlines() or ["no output"]
        stage_errors = [line for line in lines if line.startswith("error:")]  # cli.run's line: the cause
        dvc_errors = [line for line in lines if line.startswith("ERROR:")]
        reason = (stage_errors or dvc_errors or lines)[-1].strip()
        raise PipelineError(f"dvc exp run exited {code}: {reason} (log: {log_file})")


def remove_stale_runs(names: set[str], cwd: Path | None = None) -> list[str]:
    """Delete the temporary copies of killed ``dvc exp run --temp`` runs named in ``names``; return those names.

    A run killed mid-way leaves its copy under ``.dvc/tmp/exps/standalone``, and ``dvc exp show``
    lists it as running for as long as that copy exists (DVC 3 calls a temp run active while its
    info file says so and its directory is there). Only runs of trials known to be over are named.
    """
    removed = []
    root = (cwd or Path()) / EXPS_TMP
    for info_file in root.glob("run/*/*.run"):
        try:
            info = json.loads(paths.read_capped_text(info_file, "it is DVC's"))
        except (OSError, ValueError, PipelineError):
            continue
        copy = Path(str(info.get("root_dir", "")))
        if info.get("name") in names and info.get("location") == "tempdir" and copy.is_dir():
            if root.resolve() in copy.resolve().parents:  # never anything outside DVC's scratch space
                shutil.rmtree(copy, ignore_errors=True)
                removed.append(info["name"])
    return removed


GIT_TIMEOUT = 120.0  # seconds a local git command may take (listing refs, reading a commit's file)


def _git(args: Sequence[str], cwd: Path | None) -> str:
    try:
        proc = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=GIT_TIMEOUT
        )
    except subprocess.TimeoutExpired as exc:
        raise PipelineError(f"`git {' '.join(args)}` took over {GIT_TIMEOUT:g} s") from exc
    if proc.returncode != 0:
        raise PipelineError(f"`git {' '.join(args)}` exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def experiment_ref(name: str, cwd: Path | None = None) -> str:
    """The git ref DVC saved experiment ``name`` under (``refs/exps/<baseline>/<name>``)."""
    refs = [
        r for r in _git(["for-each-ref", "--format=%(refname)", "refs/exps"], cwd).split() if r.endswith(f"/{name}")
    ]
    if not refs:
        raise PipelineError(f"experiment {name} finished but saved no ref under refs/exps")
    return refs[-1]


def read_outcome(name: str, cwd: Path | None = None) -> Outcome:
    """Validation accuracy (never test) and train seconds from experiment ``name``'s committed metrics.

    Raises
    ------
    PipelineError
        If the metrics are missing or the accuracy is not a finite number (a diverged run).
    """
    ref = experiment_ref(name, cwd)
    metrics = flatten(json_object(_show(ref, paths.METRICS_FILE, cwd), f"experiment {name}'s {paths.METRICS_FILE}"))
    accuracy = metrics.get(OBJECTIVE)
    if accuracy is None or not is_finite_number(accuracy):
        raise PipelineError(f"experiment {name} diverged or has no {OBJECTIVE}: {accuracy}")
    try:
        timing = flatten(json_object(_show(ref, paths.TIMING_FILE, cwd), str(paths.TIMING_FILE)))
    except PipelineError:
        timing = {}
    return Outcome(float(accuracy), timing.get("train_seconds"))


def _show(ref: str, path: Path, cwd: Path | None) -> str:
    """``path`` as committed in ``ref`` (capped in size, see :func:`check_metrics.git_show`)."""
    text, why = git_show(ref, path.as_posix(), cwd)
    if text is None:
        raise PipelineError(why)
    return text


def push_remote(dvc: str, cwd: Path | None = None) -> str | None:
    """The git remote to push experiments to: ``origin`` (else the first one), if a default DVC remote is set too.

    Both are what workers on several machines share (docs/tuning.md); a repo without a DVC remote
    is one machine's, and an experiment pushed without its data would be of no use elsewhere.
    """
    try:
        Dvc(dvc, cwd)("remote", "default")
    except PipelineError:  # "No default remote set"
        return None
    remotes = _git(["remote"], cwd).split()
    return "origin" if "origin" in remotes else (remotes[0] if remotes else None)


def push_experiment(dvc: str, remote: str, name: str, cwd: Path | None = None) -> None:
    """``dvc exp push remote name``: its git ref to the git remote, its data to the default DVC remote."""
    Dvc(dvc, cwd)("exp", "push", remote, name)
