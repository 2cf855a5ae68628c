"""Interleaved repetitions of ours (native and portable kernels, and portable on OpenBLAS's own threads),
PyTorch and the GEMM floor on one config.

Repetition ``r`` runs the implementations in an order rotated by ``r`` (ours-portable-blas_threads-torch-floor,
portable-blas_threads-torch-floor-ours, ...), each in a fresh worker process, so slow drifts of the machine
(other load, thermal state) spread over all of them instead of biasing one; each holds every position once per
cycle of as many repetitions as there are implementations. Where portable kernels cannot apply,
``portable`` and ``blas_threads`` are skipped and the rotation is over the other three. ``blas_threads`` is
the trainer unchunked with every BLAS call on the threads (the design before ``compute.chunks``): what the
thread-independent bits cost alone on a quiet machine is ``chunks_over_blas_threads``, paired as the lead
below. A run's seconds per epoch is the mean over
its epochs (first epoch included; each run's median epoch is kept too, as the steady state); the
statistic reported is the median over repetitions, with min and max as the spread. PyTorch's lead over
ours (:data:`LEAD_IMPLS`, ``lead`` in the summary) is paired instead: per repetition, PyTorch's steady
epoch over ours (:func:`steady_epoch`), then the median of those ratios. The shared bench machines slow
down by up to 2x in phases of tens of seconds; a ratio of two runs of one repetition (at most one other
run between them) cancels much of such a phase, a ratio of medians over different repetitions does not.
"""

from __future__ import annotations

import json
import logging
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mnist_pipeline.bench.configs import BenchConfig
from mnist_pipeline.bench.flops import epoch_flops
from mnist_pipeline.bench.worker import IMPLS, PROCESS_KERNELS

log = logging.getLogger(__name__)

LEAD_IMPLS = ("ours", "portable")  # PyTorch's lead is reported over both of our kernel modes
ACCURACY_TOLERANCE_POINTS = 0.3  # |ours - torch| test accuracy, in percentage points, else the comparison is void
WORKER_TIMEOUT = 600


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min, max and count of ``values``."""
    if not values:
        raise ValueError("no values")
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def steady_epoch(seconds: Sequence[float]) -> float:
    """A run's steady state: the median of its epochs after the first (which pays page faults and warm-up);
    the one epoch of a one-epoch run."""
    return statistics.median(seconds[1:] or seconds)


def rotation(rep: int, impls: Sequence[str] = IMPLS) -> list[str]:
    """The order of the implementations in repetition ``rep``."""
    k = rep % len(impls)
    return [*impls[k:], *impls[:k]]


def schedule(envs: Mapping[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """Each implementation that can run, in :data:`IMPLS` order, with its process environment.

    ``envs`` maps a ``compute.kernels`` mode to the environment that starts a process in it; an
    implementation whose mode has none (portable, where it cannot apply) is left out.
    """
    modes = {impl: PROCESS_KERNELS.get(impl, "native") for impl in IMPLS}
    return {impl: envs[mode] for impl, mode in modes.items() if mode in envs}


def run_module(module: str, spec: dict[str, Any], env: dict[str, str], what: str) -> dict[str, Any]:
    """``python -m module '<spec as JSON>'`` in a fresh process with ``env``; the JSON of its last stdout line.

    Raises ``RuntimeError`` naming ``what`` with the end of its stderr if it fails.
    """
    cmd = [sys.executable, "-m", module, json.dumps(spec)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=WORKER_TIMEOUT, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_worker(
    impl: str, cfg: BenchConfig, features: Path, threads: int, env: dict[str, str], chunks: int = 1
) -> dict[str, Any]:
    """One run in a fresh ``python -m mnist_pipeline.bench.worker`` process; its JSON result."""
    spec = {"impl": impl, "config": cfg.as_dict(), "features": str(features), "threads": threads, "chunks": chunks}
    return run_module("mnist_pipeline.bench.worker", spec, env, f"{impl} worker on {cfg.name}")


def kernel_label(fingerprint: dict[str, Any]) -> str:
    """``"SkylakeX / X86_V3 X86_V4 AVX512_ICL"``: the OpenBLAS kernel and numpy SIMD targets of a run."""
    return f"{fingerprint['blas_kernel']} / {' '.join(fingerprint['numpy_simd']) or 'baseline only'}"


def paired(numerators: Sequence[float], denominators: Sequence[float]) -> dict[str, float]:
    """:func:`spread` of the per-repetition ratios: two implementations timed in the same repetition."""
    return spread([a / b for a, b in zip(numerators, denominators, strict=True)])


def summarize(cfg: BenchConfig, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per-implementation statistics, ratios, GFLOP/s and the accuracy/identity checks of one config.

    ``runs`` holds ``portable`` and ``blas_threads`` only if they ran; the ratios are then
    ``portable_over_native`` (portable to ``ours``) and ``chunks_over_blas_threads`` (portable to blas_threads).
    """
    n = runs["ours"][0]["n_train"]
    flops = epoch_flops(cfg.sizes, n, cfg.batch_size)
    out: dict[str, Any] = {"config": cfg.as_dict(), "label": cfg.label, "n_train": n, "gemm_flops_per_epoch": flops}
    per_epoch = {
        impl: [sum(r["epoch_seconds"]) / len(r["epoch_seconds"]) for r in impl_runs] for impl, impl_runs in runs.items()
    }
    steady = {impl: [steady_epoch(r["epoch_seconds"]) for r in impl_runs] for impl, impl_runs in runs.items()}
    for impl, impl_runs in runs.items():
        s = spread(per_epoch[impl])
        out[impl] = {
            "seconds_per_epoch": s,
            "train_seconds": spread([sum(r["epoch_seconds"]) for r in impl_runs]),
            "steady_epoch_seconds": spread(steady[impl]),
            "gflops": flops / s["median"] / 1e9,
            "kernels": sorted({kernel_label(r["compute"]) for r in impl_runs}),  # one label unless runs differ
            "runs": impl_runs,
        }
        if impl != "floor":
            out[impl]["test_acc"] = spread([r["test_acc"] for r in impl_runs])
    med = {impl: out[impl]["seconds_per_epoch"]["median"] for impl in runs}
    out["ratios"] = {
        "ours_over_torch": med["ours"] / med["torch"],
        "ours_over_torch_paired": paired(per_epoch["ours"], per_epoch["torch"]),
        "ours_over_floor": med["ours"] / med["floor"],
        "torch_over_floor": med["torch"] / med["floor"],
    }
    if "portable" in runs:
        out["ratios"]["portable_over_native"] = med["portable"] / med["ours"]
        out["ratios"]["portable_over_native_paired"] = paired(per_epoch["portable"], per_epoch["ours"])
    if "portable" in runs and "blas_threads" in runs:  # the price of thread-independent bits, paired as the lead
        out["ratios"]["chunks_over_blas_threads"] = paired(steady["portable"], steady["blas_threads"])
    # The PyTorch lead: per repetition, PyTorch's steady epoch over ours, then the median over repetitions.
    out["lead"] = {impl: paired(steady["torch"], steady[impl]) for impl in LEAD_IMPLS if impl in runs}
    out["checks"] = checks(runs)
    return out


def checks(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Same initial weights and data order in every trained run, float32 parameters, accuracy ours vs torch."""
    trained = [r for impl, impl_runs in runs.items() if impl != "floor" for r in impl_runs]
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


def compare(
    cfg: BenchConfig, features: Path, threads: int, envs: Mapping[str, dict[str, str]], chunks: int = 1
) -> dict[str, Any]:
    """Run ``cfg.reps`` interleaved repetitions of every implementation :func:`schedule` keeps; summarize them.

    ``envs`` maps ``compute.kernels`` modes (``native``, and ``portable`` where it applies) to environments.
    """
    impl_envs = schedule(envs)
    runs: dict[str, list[dict[str, Any]]] = {impl: [] for impl in impl_envs}
    for rep in range(cfg.reps):
        for impl in rotation(rep, list(impl_envs)):
            result = run_worker(impl, cfg, features, threads, impl_envs[impl], chunks)
            runs[impl].append(result)
            mean = sum(result["epoch_seconds"]) / len(result["epoch_seconds"])
            log.info("%s rep %d/%d %-8s %.3f s/epoch", cfg.name, rep + 1, cfg.reps, impl, mean)
    return summarize(cfg, runs)
