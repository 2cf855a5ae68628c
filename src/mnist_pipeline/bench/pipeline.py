"""Wall time and peak RSS of the pipeline: the install, cold and no-op ``dvc repro``, then each stage alone.

A new user's cold start is ``make repro`` = ``make install`` (a fresh ``.venv`` with the runtime
packages of requirements.lock) + a cold ``dvc repro``; ``make test`` adds ``make install-dev``.
Both installs are timed in the clone as the README has users run them (uv, warm package cache).

Time to accuracy (:func:`time_to_accuracy`): from the default run's per-epoch log and training
seconds, when its validation accuracy first reached each of :data:`THRESHOLDS`; the same for
``dvc exp run -S experiment=fast`` (:func:`preset_run`, unless ``--quick``) and, with ``--best``,
``experiment=best``, plus their total time: the accuracy-time frontier of the three.

Everything runs in a fresh ``git clone`` of the repository (with the working tree's ``src/``, ``conf/``,
``dvc.yaml`` and ``params.yaml`` copied over, so uncommitted code is what gets measured), never in the
checkout itself: an empty DVC cache makes the first ``dvc repro`` cold; the second one must run no
stage. Then ``data/`` is deleted and each stage runs as ``python -m mnist_pipeline.stages.<name>`` in
order, its peak RSS read from ``wait4``'s resource usage of that child alone.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from mnist_pipeline.epoch_log import read_history
from mnist_pipeline.paths import LIVE_DIR, METRICS_FILE, TIMING_FILE

log = logging.getLogger(__name__)

STAGES = ("download", "prepare", "featurize", "train", "evaluate", "report")
OVERLAY = ("src", "conf", "dvc.yaml", "params.yaml")
TIMEOUT = 300
THRESHOLDS = (0.98, 0.985, 0.99, 0.992, 0.993)  # validation accuracies whose time to first reach is reported
BEST_TIMEOUT = 3600
DVC = str(Path(sys.executable).parent / "dvc")  # this venv's dvc, whatever PATH says


def timed(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = TIMEOUT) -> dict[str, Any]:
    """Run ``cmd``; wall seconds, peak RSS (MiB) of the child and its reaped descendants, exit code, output tail."""
    with tempfile.TemporaryFile("w+") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.005)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: Popen must not wait again
        out.seek(0)
        text = out.read()
    return {
        "cmd": " ".join(cmd[-3:]),
        "seconds": seconds,
        "max_rss_mib": usage.ru_maxrss / 1024,  # Linux: KiB
        "returncode": proc.returncode,
        "output_tail": text[-1500:],
        "stages_run": text.count("Running stage"),
    }


def make_workspace(repo: Path, dest: Path) -> Path:
    """A fresh clone of ``repo`` at ``dest`` with the working tree's code and config copied over."""
    subprocess.run(["git", "clone", "-q", str(repo), str(dest)], check=True, timeout=120)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in OVERLAY:
        src = repo / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore, dirs_exist_ok=True)
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


def stage_env(base: dict[str, str], workspace: Path, data_mirror: str) -> dict[str, str]:
    """``base`` with this interpreter's venv first on PATH and the workspace's ``src`` importable."""
    bin_dir = str(Path(sys.executable).parent)
    return {
        **base,
        "PATH": bin_dir + os.pathsep + base.get("PATH", ""),
        "PYTHONPATH": str(workspace / "src"),
        "DATA_MIRROR": data_mirror,
        "DVC_NO_ANALYTICS": "1",
    }


def _check(step: str, result: dict[str, Any]) -> None:
    if result["returncode"] != 0:
        raise RuntimeError(f"{step} failed ({result['returncode']}):\n{result['output_tail']}")
    log.info("%-16s %6.2f s  peak RSS %6.0f MiB", step, result["seconds"], result["max_rss_mib"])


def measure(repo: Path, workdir: Path, base_env: dict[str, str], data_mirror: str) -> dict[str, Any]:
    """Cold ``dvc repro``, no-op ``dvc repro``, then every stage alone, in a fresh clone under ``workdir``.

    Returns the timings and the clone's ``data/features`` directory (reused by the training benchmark).
    """
    ws = make_workspace(repo, workdir / "repo")
    env = stage_env(base_env, ws, data_mirror)
    result: dict[str, Any] = {"workspace": "fresh git clone + working-tree src/, conf/, dvc.yaml, params.yaml"}
    result["data_mirror"] = data_mirror
    for target in ("install", "install-dev"):
        key = target.replace("-", "_")
        result[key] = timed(["make", target], ws, {**base_env, "DATA_MIRROR": data_mirror}, timeout=900)
        _check(f"make {target}", result[key])
    result["cold_dvc_repro"] = timed([DVC, "repro"], ws, env)
    _check("cold dvc repro", result["cold_dvc_repro"])
    result["noop_dvc_repro"] = timed([DVC, "repro"], ws, env)
    _check("no-op dvc repro", result["noop_dvc_repro"])
    shutil.rmtree(ws / "data")
    result["stages"] = {}
    for stage in STAGES:
        run = timed([sys.executable, "-m", f"mnist_pipeline.stages.{stage}"], ws, env)
        _check(stage, run)
        result["stages"][stage] = run
    result["features_dir"] = str(ws / "data" / "features")
    result["workspace_dir"] = str(ws)
    result["time_to_accuracy"] = time_to_accuracy(ws)
    return result


def time_to_accuracy(ws: Path) -> dict[str, Any]:
    """Training seconds (fit's epochs, validation passes excluded) until ``ws``'s run first reached each threshold.

    A threshold never reached maps to None.
    """
    history = read_history(ws / LIVE_DIR)
    epoch_seconds = json.loads((ws / TIMING_FILE).read_text(encoding="utf-8"))["epoch_seconds"]
    elapsed = np.cumsum(epoch_seconds)  # (E,)
    first = {}
    for threshold in THRESHOLDS:
        hit = np.flatnonzero(history["val_acc"] >= threshold)
        first[f"{threshold:g}"] = (
            {"epoch": int(history["epoch"][hit[0]]), "seconds": float(elapsed[hit[0]])} if hit.size else None
        )
    metrics = json.loads((ws / METRICS_FILE).read_text(encoding="utf-8"))
    return {
        "first_reached": first,
        "epochs": len(epoch_seconds),
        "train_seconds": float(elapsed[-1]),
        "val_accuracy": metrics["val"]["accuracy"],
        "test_accuracy": metrics["test"]["accuracy"],
    }


def preset_run(ws: Path, base_env: dict[str, str], data_mirror: str, preset: str) -> dict[str, Any]:
    """``dvc exp run -S experiment=PRESET`` in the clone :func:`measure` made: wall time and time to accuracy."""
    run = timed(
        [DVC, "exp", "run", "-S", f"experiment={preset}"], ws, stage_env(base_env, ws, data_mirror), BEST_TIMEOUT
    )
    _check(f"experiment={preset}", run)
    return {"dvc_exp_run": run, **time_to_accuracy(ws)}
