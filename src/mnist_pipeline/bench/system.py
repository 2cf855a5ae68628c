"""What the benchmark ran on: CPU, cores, load, BLAS library/kernel/threads, and the environments it used.

``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` may be set on these machines for safety (they force an
OpenBLAS kernel or cache size), and ``NPY_DISABLE_CPU_FEATURES``/``NPY_ENABLE_CPU_FEATURES`` cap numpy's
SIMD (a stage on portable kernels sets them). The benchmark removes all four from the environment of
every process it starts (its native environment), says so, and records which kernel OpenBLAS picks with
the inherited environment and without. The portable environment is the native one plus the variables
:func:`mnist_pipeline.compute.plan` gives for portable kernels, or none where they cannot apply.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from mnist_pipeline import compute

UNSET_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", compute.DISABLE_VAR, compute.ENABLE_VAR)
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

_BLAS_PROBE = (
    "import json, numpy, threadpoolctl; "
    "print(json.dumps([{k: p.get(k) for k in ('internal_api', 'version', 'architecture', 'num_threads')} "
    "for p in threadpoolctl.threadpool_info()]))"
)
_PLAN_PROBE = (
    "import json, os; from mnist_pipeline import compute; print(json.dumps(compute.plan('portable', os.environ)))"
)


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The ``model name`` of the first CPU, or the platform's processor string."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    import numpy as np

    return {
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def clean_env(base: dict[str, str], threads: int | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """``base`` without :data:`UNSET_VARS` (and with the thread variables set to ``threads`` if given).

    Returns the new environment and the removed variables with their values.
    """
    env = {k: v for k, v in base.items() if k not in UNSET_VARS}
    removed = {k: base[k] for k in UNSET_VARS if k in base}
    if threads is not None:
        env.update({k: str(threads) for k in THREAD_VARS})
    return env, removed


def probe(code: str, env: dict[str, str]) -> Any:
    """The JSON ``code`` prints in a fresh Python process started with ``env``; RuntimeError if it fails."""
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip()[-500:])
    return json.loads(proc.stdout)


def blas_probe(env: dict[str, str]) -> list[dict[str, Any]]:
    """BLAS/OpenMP pools (library, version, kernel, threads) that numpy loads in a process with ``env``."""
    try:
        return probe(_BLAS_PROBE, env)
    except RuntimeError as e:
        return [{"error": str(e)}]


def portable_plan(env: dict[str, str]) -> tuple[dict[str, str], str]:
    """``compute.plan("portable", env)`` as a fresh process started with ``env`` computes it.

    Not in this process: numpy reads which CPU features it may use once, at import, so a benchmark
    started with ``NPY_DISABLE_CPU_FEATURES`` set would plan from capped features and leave AVX-512 on.
    """
    try:
        variables, reason = probe(_PLAN_PROBE, env)
    except RuntimeError as e:
        return {}, f"planning portable kernels failed: {e}"
    return variables, reason


def environment_report(threads: int) -> tuple[dict[str, dict[str, str]], dict[str, Any]]:
    """The environments for the measured processes by ``compute.kernels`` mode, and what to record about them.

    ``native`` always; ``portable`` only where portable kernels apply (the report says why not otherwise).
    """
    env, removed = clean_env(dict(os.environ), threads)
    inherited_env = {**os.environ, **{k: str(threads) for k in THREAD_VARS}}
    variables, skipped = portable_plan(env)
    envs = {"native": env, **({} if skipped else {"portable": {**env, **variables}})}
    return envs, {
        "unset_vars": list(UNSET_VARS),
        "removed": removed,
        "note": (
            f"{', '.join(UNSET_VARS)} are removed from the environment of every benchmark subprocess "
            + (f"(set here: {removed})" if removed else "(none was set here)")
        ),
        "portable": {"variables": variables, "skipped": skipped},
        "threads": threads,
        "thread_vars": list(THREAD_VARS),
        "blas_inherited_env": blas_probe(inherited_env),
        "blas_benchmark_env": blas_probe(env),
    }
