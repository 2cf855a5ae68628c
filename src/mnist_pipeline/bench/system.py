"""What the benchmark ran on: CPU, cores, load, BLAS library/kernel/threads, and the environment it used.

``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` may be set on these machines for safety (they force an
OpenBLAS kernel or cache size). The benchmark removes both from the environment of every process it
starts, says so, and records which kernel OpenBLAS picks with the inherited environment and without.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

UNSET_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

_PROBE = (
    "import json, numpy, threadpoolctl; "
    "print(json.dumps([{k: p.get(k) for k in ('internal_api', 'version', 'architecture', 'num_threads')} "
    "for p in threadpoolctl.threadpool_info()]))"
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


def blas_probe(env: dict[str, str]) -> list[dict[str, Any]]:
    """BLAS/OpenMP pools (library, version, kernel, threads) that numpy loads in a process with ``env``."""
    proc = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        return [{"error": proc.stderr.strip()[-500:]}]
    return json.loads(proc.stdout)


def environment_report(threads: int) -> tuple[dict[str, str], dict[str, Any]]:
    """The environment for the measured processes, and what to record about it."""
    env, removed = clean_env(dict(os.environ), threads)
    inherited_env = {**os.environ, **{k: str(threads) for k in THREAD_VARS}}
    return env, {
        "unset_vars": list(UNSET_VARS),
        "removed": removed,
        "note": (
            f"{' and '.join(UNSET_VARS)} are removed from the environment of every benchmark subprocess "
            + (f"(they were set: {removed})" if removed else "(neither was set here)")
        ),
        "threads": threads,
        "thread_vars": list(THREAD_VARS),
        "blas_inherited_env": blas_probe(inherited_env),
        "blas_benchmark_env": blas_probe(env),
    }
