"""Interleaved repetitions of ours, PyTorch and the GEMM floor on one config, and their statistics.

Repetition ``r`` runs the three implementations in an order rotated by ``r`` (ours-torch-floor,
torch-floor-ours, floor-ours-torch, ...), each in a fresh worker process, so slow drifts of the machine
(other load, thermal state) spread over all three instead of biasing one. A run's seconds per epoch is
the mean over its epochs (first epoch included; each run's median epoch is kept too, as the steady
state); the statistic reported is the median over repetitions, with min and max as the spread.
"""

from __future__ import annotations

import json
import logging
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mnist_pipeline.bench.configs import BenchConfig
from mnist_pipeline.bench.flops import epoch_flops
from mnist_pipeline.bench.worker import IMPLS

log = logging.getLogger(__name__)

ACCURACY_TOLERANCE_POINTS = 0.3  # |ours - torch| test accuracy, in percentage points, else the comparison is void
WORKER_TIMEOUT = 600


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min, max and count of ``values``."""
    if not values:
        raise ValueError("no values")
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def rotation(rep: int, impls: Sequence[str] = IMPLS) -> list[str]:
    """The order of the implementations in repetition ``rep``."""
    k = rep % len(impls)
    return [*impls[k:], *impls[:k]]


def run_worker(impl: str, cfg: BenchConfig, features: Path, threads: int, env: dict[str, str]) -> dict[str, Any]:
    """One run in a fresh ``python -m mnist_pipeline.bench.worker`` process; its JSON result."""
    spec = {"impl": impl, "config": cfg.as_dict(), "features": str(features), "threads": threads}
    cmd = [sys.executable, "-m", "mnist_pipeline.bench.worker", json.dumps(spec)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=WORKER_TIMEOUT, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{impl} worker on {cfg.name} failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarize(cfg: BenchConfig, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per-implementation statistics, ratios, GFLOP/s and the accuracy/identity checks of one config."""
    n = runs["ours"][0]["n_train"]
    flops = epoch_flops(cfg.sizes, n, cfg.batch_size)
    out: dict[str, Any] = {"config": cfg.as_dict(), "label": cfg.label, "n_train": n, "gemm_flops_per_epoch": flops}
    per_epoch = {}
    for impl, impl_runs in runs.items():
        per_epoch[impl] = [sum(r["epoch_seconds"]) / len(r["epoch_seconds"]) for r in impl_runs]
        s = spread(per_epoch[impl])
        out[impl] = {
            "seconds_per_epoch": s,
            "train_seconds": spread([sum(r["epoch_seconds"]) for r in impl_runs]),
            # steady state: each run's median epoch (a first-touch page-fault epoch does not count)
            "median_epoch_seconds": spread([statistics.median(r["epoch_seconds"]) for r in impl_runs]),
            "gflops": flops / s["median"] / 1e9,
            "runs": impl_runs,
        }
        if impl != "floor":
            out[impl]["test_acc"] = spread([r["test_acc"] for r in impl_runs])
    med = {impl: out[impl]["seconds_per_epoch"]["median"] for impl in runs}
    paired = [o / t for o, t in zip(per_epoch["ours"], per_epoch["torch"], strict=True)]
    out["ratios"] = {
        "ours_over_torch": med["ours"] / med["torch"],
        "ours_over_torch_paired": spread(paired),
        "torch_over_ours": med["torch"] / med["ours"],
        "ours_over_floor": med["ours"] / med["floor"],
        "torch_over_floor": med["torch"] / med["floor"],
    }
    out["checks"] = checks(runs)
    return out


def checks(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Same initial weights and data order in every ours/torch run, float32 parameters, accuracy agreement."""
    trained = runs["ours"] + runs["torch"]
    diff = 100 * (
        statistics.median(r["test_acc"] for r in runs["ours"]) - statistics.median(r["test_acc"] for r in runs["torch"])
    )
    same_init = len({r["init_sha256"] for r in trained}) == 1
    same_order = len({r["order_sha256"] for r in trained}) == 1
    float32 = all(r["param_dtypes"] == ["float32"] for r in trained)
    agree = abs(diff) <= ACCURACY_TOLERANCE_POINTS
    reasons = [
        text
        for ok, text in (
            (same_init, "initial weights differ"),
            (same_order, "data orders differ"),
            (float32, "parameters are not all float32"),
            (agree, f"test accuracies differ by {diff:+.2f} points (> {ACCURACY_TOLERANCE_POINTS})"),
        )
        if not ok
    ]
    return {
        "accuracy_diff_points": diff,
        "same_initial_weights": same_init,
        "same_data_order": same_order,
        "float32": float32,
        "valid": not reasons,
        "void_reasons": reasons,
    }


def compare(cfg: BenchConfig, features: Path, threads: int, env: dict[str, str]) -> dict[str, Any]:
    """Run ``cfg.reps`` interleaved repetitions of every implementation; :func:`summarize` them."""
    runs: dict[str, list[dict[str, Any]]] = {impl: [] for impl in IMPLS}
    for rep in range(cfg.reps):
        for impl in rotation(rep):
            result = run_worker(impl, cfg, features, threads, env)
            runs[impl].append(result)
            mean = sum(result["epoch_seconds"]) / len(result["epoch_seconds"])
            log.info("%s rep %d/%d %-5s %.3f s/epoch", cfg.name, rep + 1, cfg.reps, impl, mean)
    return summarize(cfg, runs)
