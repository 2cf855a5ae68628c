"""The shared-machine table: the default ``train`` stage alone, pinned to one CPU, two at once, beside a CPU hog.

Every run is ``python -m mnist_pipeline.stages.train`` in a copy of the pipeline's fresh clone (its own
``params.yaml`` and outputs, ``data/features`` linked), as ``dvc repro`` runs it; its time is the stage's
own ``reports/timing.json`` (training seconds, no interpreter start or data loading). Rounds interleave
the scenarios and the table gives medians, each scenario also as a ratio to the same round's run alone.
Every run's ``model.npz`` is hashed: the compute threads change with the scenario (two CPUs, one, or
two shared), the bytes must not.

Then parallel experiments: four default runs (seeds) queued with ``dvc exp run --queue`` and run by
``dvc queue start -j 1``, then four more by ``-j 2``, as ``make sweep`` runs a queue
(:func:`~mnist_pipeline.sweep.run_queue`, which starts again the workers DVC stops with work queued);
wall seconds of ``run_queue``: its first status, the workers' start, the wait until the last experiment is
saved, and the workers' stop.
Last the tuner as a user runs it (:func:`measure_tune`): a study of four default trials on one
``python -m mnist_pipeline.tune`` worker, then another on two workers started side by side with nothing
set, each trial choosing its threads from the CPUs it may use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mnist_pipeline import sweep
from mnist_pipeline.paths import FEATURES_DIR, MODEL_FILE, TIMING_FILE

log = logging.getLogger(__name__)

SCENARIOS = ("alone", "one CPU", "two at once", "beside a hog")
LIMITS = {"one CPU": 2.2, "two at once": 2.2, "beside a hog": 2.5}  # x the same round's run alone
QUEUE_LIMIT = 0.75  # four experiments two at a time over one at a time; four tune trials on two workers over one
TUNE_TRIALS = 4
# The tuner's study for the measurement: default runs that differ only in their seed. Trial n's sampler is
# seeded with the study's seed + n, so the two studies get seeds TUNE_TRIALS apart or more (no run-cache hits).
TUNE_SPACE = f"""\
trials: {TUNE_TRIALS}
seed: 0
startup_trials: {TUNE_TRIALS}
params:
  train.seed: {{type: int, low: 1000, high: 999999}}
"""
ROUNDS = 3
TIMEOUT = 900  # seconds per run: a collapse like 33x is measured, not waited for without end
HOG = "while True: pass"


def copy_workspace(workspace: Path, dest: Path) -> Path:
    """``dest`` laid out for the train stage: ``workspace``'s params.yaml and a link to its features."""
    (dest / FEATURES_DIR).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(workspace / "params.yaml", dest / "params.yaml")
    (dest / FEATURES_DIR).symlink_to((workspace / FEATURES_DIR).resolve(), target_is_directory=True)
    return dest


def start(cmd: list[str], cwd: Path, env: dict[str, str], cpus: set[int] | None = None) -> subprocess.Popen[bytes]:
    pin = None if cpus is None else (lambda: os.sched_setaffinity(0, cpus))
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=pin)


def wait(proc: subprocess.Popen[bytes], what: str) -> str:
    """Wait for ``proc`` (killed after :data:`TIMEOUT`); its stderr, or RuntimeError naming ``what`` if it failed."""
    try:
        _, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}): {err.decode()[-2000:]}")
    return err.decode()


def finish(proc: subprocess.Popen[bytes], ws: Path) -> dict[str, Any]:
    """Wait for a train run; its training seconds, median epoch seconds and model hash."""
    err = wait(proc, f"train in {ws}")
    timing = json.loads((ws / TIMING_FILE).read_text())
    threads = [line for line in err.splitlines() if " chunks on " in line]
    return {
        "train_seconds": timing["train_seconds"],
        "epoch_median": statistics.median(timing["epoch_seconds"]),
        "model_sha256": hashlib.sha256((ws / MODEL_FILE).read_bytes()).hexdigest()[:16],
        "compute_line": threads[-1].split(": ", 1)[-1] if threads else "",
    }


def run_scenario(name: str, spaces: list[Path], env: dict[str, str], cpu: int) -> list[dict[str, Any]]:
    train = [sys.executable, "-m", "mnist_pipeline.stages.train"]
    if name == "two at once":
        procs = [start(train, ws, env) for ws in spaces]
        try:
            return [finish(p, ws) for p, ws in zip(procs, spaces, strict=True)]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    hog = start([sys.executable, "-c", HOG], spaces[0], env, {cpu}) if name == "beside a hog" else None
    try:
        return [finish(start(train, spaces[0], env, {cpu} if name == "one CPU" else None), spaces[0])]
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()


def measure(workspace: Path, workdir: Path, env: dict[str, str], rounds: int = ROUNDS) -> dict[str, Any]:
    """Every scenario ``rounds`` times, interleaved; per scenario the runs and medians (see the module doc)."""
    began = time.perf_counter()
    spaces = [copy_workspace(workspace, workdir / f"shared-{i}") for i in (1, 2)]
    cpu = min(os.sched_getaffinity(0))
    runs: dict[str, list[list[dict[str, Any]]]] = {s: [] for s in SCENARIOS}
    for r in range(rounds):
        for name in SCENARIOS:
            runs[name].append(run_scenario(name, spaces, env, cpu))
            log.info("shared machine, round %d: %s %s s", r + 1, name, [x["train_seconds"] for x in runs[name][-1]])
    alone = [rnd[0]["train_seconds"] for rnd in runs["alone"]]
    summary = {}
    for name, rnds in runs.items():
        seconds = [x["train_seconds"] for rnd in rnds for x in rnd]
        ratios = [x["train_seconds"] / a for rnd, a in zip(rnds, alone, strict=True) for x in rnd]
        summary[name] = {
            "train_seconds": statistics.median(seconds),
            "worst_ratio": max(ratios),
            "median_ratio": statistics.median(ratios),
            "compute_line": rnds[0][0]["compute_line"],
        }
    hashes = sorted({x["model_sha256"] for rnds in runs.values() for rnd in rnds for x in rnd})
    return {
        "rounds": rounds,
        "runs": runs,
        "summary": summary,
        "model_sha256": hashes,
        "seconds": time.perf_counter() - began,
    }


def measure_experiments(workspace: Path, env: dict[str, str], dvc: str) -> dict[str, Any]:
    """Wall seconds of four default experiments (one seed each) queued and run by DVC's queue with one worker,
    then of four others with two, each sharing the CPUs out (:func:`~mnist_pipeline.compute.shared_by`), as
    ``make sweep -j N`` runs them."""
    out: dict[str, Any] = {}
    began = time.perf_counter()
    runner = sweep.Dvc(dvc, workspace)
    for jobs, seeds in ((1, (11, 12, 13, 14)), (2, (15, 16, 17, 18))):
        queued = sweep.parse_queued(runner("exp", "run", "--queue", "-S", f"train.seed={','.join(map(str, seeds))}"))
        if len(queued) != len(seeds):
            raise RuntimeError(f"dvc exp run --queue queued {len(queued)} experiment(s), not {len(seeds)}")
        start_time = time.perf_counter()
        sweep.run_queue(runner, list(queued), jobs, timeout=TIMEOUT, repo=workspace, env=env)
        out[f"j{jobs}"] = time.perf_counter() - start_time
        log.info("4 default experiments by dvc queue -j %d: %.1f s", jobs, out[f"j{jobs}"])
    out["ratio"] = out["j2"] / out["j1"]
    out["seconds"] = time.perf_counter() - began
    return out


def measure_tune(workspace: Path, workdir: Path, env: dict[str, str], dvc: str) -> dict[str, Any]:
    """Wall seconds of a study of :data:`TUNE_TRIALS` default trials (:data:`TUNE_SPACE`) on one tune worker,
    then of another study (sampler seeds :data:`TUNE_TRIALS` on, so no trial repeats one of the first) on two
    workers started at once, sharing its budget. Each study is a new journal file under ``workdir``, never a
    ``$TUNE_STORAGE`` database.

    Nothing shares the CPUs out: each trial's stages take the CPUs they may use, as in two shells running
    ``make tune``. Returns ``w1``, ``w2`` (seconds) and ``ratio``.
    """
    space = workdir / "bench-tune.yaml"
    space.write_text(TUNE_SPACE)
    out: dict[str, Any] = {"trials": TUNE_TRIALS}
    began = time.perf_counter()
    for workers in (1, 2):
        study = f"bench-tune-w{workers}"
        journal = workdir / f"{study}.log"
        journal.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "mnist_pipeline.tune", "--space", str(space), "--study", study]
        cmd += ["--storage", str(journal), "--seed", str((workers - 1) * TUNE_TRIALS), "--no-push", "--dvc", dvc]
        start_time = time.perf_counter()
        for proc in [start(cmd, workspace, env) for _ in range(workers)]:
            wait(proc, f"tune worker of {study}")
        out[f"w{workers}"] = time.perf_counter() - start_time
        log.info("tune, %d trials on %d worker(s): %.1f s", TUNE_TRIALS, workers, out[f"w{workers}"])
    out["ratio"] = out["w2"] / out["w1"]
    out["seconds"] = time.perf_counter() - began
    return out


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The shared-machine targets: each scenario's worst ratio to alone, the bits, the queue's speed-up."""
    shared = result.get("shared")
    if not shared:
        return []
    rows = []
    for name, limit in LIMITS.items():
        worst = shared["summary"][name]["worst_ratio"]
        rows.append({"target": f"train {name} ≤ {limit}× alone", "measured": worst, "unit": "×", "met": worst <= limit})
    n = len(shared["model_sha256"])
    rows.append({"target": "one model.npz in every scenario", "measured": n, "unit": " hash(es)", "met": n == 1})
    queue, tune = result.get("queue"), result.get("tune")
    if queue:
        rows.append(_speedup(f"4 queued experiments: dvc queue -j 2 ≤ {QUEUE_LIMIT}× -j 1", queue["ratio"]))
    if tune:
        rows.append(_speedup(f"make tune, {tune['trials']} trials: 2 workers ≤ {QUEUE_LIMIT}× 1 worker", tune["ratio"]))
    return rows


def _speedup(target: str, ratio: float) -> dict[str, Any]:
    return {"target": target, "measured": ratio, "unit": "×", "met": ratio <= QUEUE_LIMIT}


def lines(result: dict[str, Any]) -> list[str]:
    """The shared-machine section of ``reports/benchmark.md``."""
    shared = result.get("shared")
    if not shared:
        return []
    out = [
        "## Shared machine: the default `train` stage",
        "",
        f"`python -m mnist_pipeline.stages.train` in copies of the fresh clone, {shared['rounds']} interleaved rounds; "
        "training seconds from each run's `reports/timing.json`, ratios to the same round's run alone. "
        f"Model hashes over every run: {', '.join(shared['model_sha256'])}.",
        "",
        "| scenario | train s (median) | × alone (median) | × alone (worst) | compute |",
        "|---|---|---|---|---|",
    ]
    for name in SCENARIOS:
        s = shared["summary"][name]
        out.append(
            f"| {name} | {s['train_seconds']:.2f} | {s['median_ratio']:.2f} | {s['worst_ratio']:.2f} "
            f"| {s['compute_line']} |"
        )
    queue = result.get("queue")
    if queue:
        out += [
            "",
            f"Parallel experiments: 4 default runs (one seed each) queued with `dvc exp run --queue` took "
            f"{queue['j1']:.1f} s on `dvc queue start -j 1` and {queue['j2']:.1f} s on `-j 2` ({queue['ratio']:.2f}×; "
            "run as `make sweep` runs a queue, each experiment on its share of the CPUs).",
        ]
    tune = result.get("tune")
    if tune:
        out += [
            "",
            f"Tuning: a study of {tune['trials']} default trials (`python -m mnist_pipeline.tune`, one seed each) took "
            f"{tune['w1']:.1f} s on one worker and {tune['w2']:.1f} s on two workers started side by side "
            f"({tune['ratio']:.2f}×; nothing set, each trial on the CPUs it may use).",
        ]
    return [*out, ""]
