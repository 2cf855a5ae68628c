"""The arithmetic a stage runs on: portable kernels, a fixed decomposition on free threads, and their fingerprint.

Floating-point results depend on which instructions run, in which order. OpenBLAS picks a GEMM
kernel for the CPU (SkylakeX with AVX-512, Haswell with AVX2, ...) and splits each product over its
threads; numpy dispatches its loops (exp, tanh, ...) to the widest SIMD the CPU has. Machines that
differ in any of these round differently, and from the same params train different models.

Threads: every BLAS call here runs on one thread, and the network cuts its work into
``compute.chunks`` pieces fixed by the params (:mod:`mnist_pipeline.mlp.network`), which any number
of threads compute to the same bits. :func:`threads` picks that number from what this process may
use, the CPUs of its affinity mask and its cgroup's CPU quota (or ``$MNIST_PIPELINE_THREADS``), and
never more than the chunks. So a 1-core container, a machine shared with other runs and a big server
train the same model, each at its own speed, and none runs more threads than it has CPUs.

``compute.kernels: portable`` (the default) makes every x86-64 CPU with AVX2 and FMA run the same
instructions: OpenBLAS's Haswell kernel (``OPENBLAS_CORETYPE``) and numpy's dispatch capped at
X86_V3 (``NPY_DISABLE_CPU_FEATURES``). Both are read when numpy loads, so a stage started in another
environment restarts itself once with them set (:func:`restart_if_needed`). Where they cannot apply
(another architecture or BLAS, no AVX2/FMA, a kernel forced by the environment) the stage runs
natively and says why in one log line. ``native`` keeps the CPU's own kernels: a little faster,
results specific to the machine.

:func:`fingerprint` reads back what the process really computes with. Equal fingerprints, params
and data give bit-identical outputs; the fingerprint holds only what decides the arithmetic.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mnist_pipeline.errors import ConfigError

log = logging.getLogger(__name__)

KERNELS = ("portable", "native")
MAX_CHUNKS = 64
PORTABLE_KERNEL = "Haswell"  # OpenBLAS's AVX2 + FMA kernel; AMD's Zen kernels compute the same bits
PORTABLE_SIMD = "X86_V3"  # numpy's AVX2 + FMA level
REQUIRED_FEATURES = ("AVX2", "FMA3")  # numpy's names for what both need
CORETYPE_VAR = "OPENBLAS_CORETYPE"
DISABLE_VAR = "NPY_DISABLE_CPU_FEATURES"
ENABLE_VAR = "NPY_ENABLE_CPU_FEATURES"
THREADS_VAR = "MNIST_PIPELINE_THREADS"  # the compute threads, instead of the CPUs this process may use
CGROUP_ROOT = Path("/sys/fs/cgroup")


def above_portable(targets: Sequence[str]) -> list[str]:
    """The numpy SIMD dispatch targets beyond X86_V3 among ``targets`` (X86_V4 and every AVX512 group)."""
    return [t for t in targets if t == "X86_V4" or t.startswith("AVX512")]


def numpy_simd() -> tuple[dict[str, bool], list[str]]:
    """numpy's CPU features (name -> enabled in this process) and its SIMD dispatch targets."""
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:  # numpy 1.x
        from numpy.core._multiarray_umath import (  # type: ignore[no-redef]  # the same names, numpy 1.x's home
            __cpu_dispatch__,
            __cpu_features__,
        )
    return dict(__cpu_features__), list(__cpu_dispatch__)


def simd_targets() -> list[str]:
    """The dispatch targets numpy uses in this process (``found`` in ``numpy.show_runtime()``)."""
    features, dispatch = numpy_simd()
    return [t for t in dispatch if features.get(t)]


def blas_pool() -> dict[str, Any]:
    """numpy's BLAS as threadpoolctl sees it (``internal_api``, ``version``, ``architecture``, ``num_threads``)."""
    import threadpoolctl

    pools = [p for p in threadpoolctl.threadpool_info() if p.get("user_api") == "blas"]
    ours = [p for p in pools if "numpy" in str(p.get("filepath", ""))]  # wheels bundle it in numpy.libs
    return (ours or pools or [{}])[0]


def portable_blocker(environ: Mapping[str, str], machine: str, features: Mapping[str, bool], blas: str) -> str:
    """Why portable kernels cannot apply in this process ('' when they can)."""
    if machine.lower() not in ("x86_64", "amd64"):
        return f"the CPU architecture is {machine}, and portable kernels are defined for x86-64"
    missing = [f for f in REQUIRED_FEATURES if not features.get(f)]
    if missing:
        return f"this CPU lacks {' and '.join(missing)}"
    if blas != "openblas":
        return f"numpy's BLAS is {blas or 'unknown'}, not OpenBLAS"
    coretype = environ.get(CORETYPE_VAR, "")
    if coretype and coretype.lower() != PORTABLE_KERNEL.lower():
        return f"the environment forces {CORETYPE_VAR}={coretype}"
    if environ.get(ENABLE_VAR):
        return f"the environment sets {ENABLE_VAR}={environ[ENABLE_VAR]}"
    return ""


def plan(kernels: str, environ: Mapping[str, str]) -> tuple[dict[str, str], str]:
    """The variables that ``kernels`` needs set before numpy loads, and why none if none.

    Returns ``(variables, reason)``: for portable kernels that can apply, the variables and '';
    otherwise ``{}`` and one phrase saying why this process computes natively.
    """
    if kernels == "native":
        return {}, "compute.kernels=native"
    features, dispatch = numpy_simd()
    blocker = portable_blocker(environ, platform.machine(), features, blas_pool().get("internal_api", ""))
    if blocker:
        return {}, blocker
    disabled = environ.get(DISABLE_VAR, "").split()
    enabled_above = above_portable([t for t in dispatch if features.get(t)])
    disable = disabled + [t for t in enabled_above if t not in disabled]
    variables = {CORETYPE_VAR: PORTABLE_KERNEL}
    if disable:
        variables[DISABLE_VAR] = " ".join(disable)
    return variables, ""


def restart_if_needed(kernels: str) -> None:
    """Re-execute this command once in the environment ``kernels`` needs, if it is not already in it.

    For command-line entry points only: it replaces the running process. The restarted process
    finds its environment complete (the variables only ever gain the same values) and goes on.
    """
    variables, _ = plan(kernels, os.environ)
    if all(os.environ.get(k) == v for k, v in variables.items()):
        return
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], {**os.environ, **variables})


def fingerprint(chunks: int | None = None) -> dict[str, Any]:
    """What decides this process's floating-point results: BLAS, its kernel and threads per call, the
    network's ``chunks``, numpy and its SIMD.

    Not the CPU's model name, core count or compute threads: two machines that compute alike write the
    same fingerprint.
    """
    import numpy as np

    blas = blas_pool()
    libc, libc_version = platform.libc_ver()
    return {
        "blas": blas.get("internal_api", "unknown"),
        "blas_version": blas.get("version"),
        "blas_kernel": blas.get("architecture"),
        "blas_threads": blas.get("num_threads"),
        **({"chunks": chunks} if chunks is not None else {}),
        "numpy": np.__version__,
        "numpy_simd": simd_targets(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "libc": f"{libc} {libc_version}".strip() or "unknown",  # math.cos etc. in the schedules
    }


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, own: str | None = None) -> float | None:
    """The CPUs this process's cgroups may use per second, or None without a quota.

    The least ``quota / period`` over the process's own group and every group above it (a quota on a
    parent, as on a Kubernetes pod or a systemd slice, binds too): cgroup v2 ``cpu.max``, else v1
    ``cpu/cpu.cfs_quota_us``. ``own`` is ``/proc/self/cgroup``'s text (read when None).
    """
    if own is None:
        try:
            own = Path("/proc/self/cgroup").read_text()
        except OSError:
            own = ""
    v2, v1 = [], []
    for line in own.splitlines():
        _, controllers, group = (line.split(":", 2) + ["", ""])[:3]
        if not controllers:
            v2 += _ancestors(root, group)
        elif "cpu" in controllers.split(","):
            v1 += _ancestors(root / "cpu", group)
    limits = [q for q in map(_v2_quota, v2 or [root]) if q is not None]
    if not limits:
        limits = [q for q in map(_v1_quota, v1 or [root / "cpu"]) if q is not None]
    return min(limits, default=None)


def _ancestors(root: Path, group: str) -> list[Path]:
    """``root/a/b``, ``root/a`` and ``root`` for the group ``/a/b``."""
    parts = [p for p in group.split("/") if p]
    return [root.joinpath(*parts[:k]) for k in range(len(parts), -1, -1)]


def _v2_quota(folder: Path) -> float | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
        return None if quota == "max" or int(period) <= 0 else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _v1_quota(folder: Path) -> float | None:
    try:
        quota, period = (int((folder / f"cpu.cfs_{k}_us").read_text()) for k in ("quota", "period"))
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def threads(chunks: int, environ: Mapping[str, str] = os.environ) -> tuple[int, str]:
    """How many threads compute the ``chunks`` pieces here, and why (one phrase for the log line).

    ``$MNIST_PIPELINE_THREADS`` if set (experiments run side by side can share the CPUs out), else the
    CPUs this process may use: its affinity mask and its cgroup's CPU quota (rounded up); never more
    than ``chunks``, as a piece is never split further. The results do not depend on it.
    """
    given = environ.get(THREADS_VAR, "").strip()
    if given:
        if not (given.isascii() and given.isdigit()) or int(given) < 1:
            raise ConfigError(
                f"{THREADS_VAR}={given!r} must be a positive integer (the compute threads); set one or unset it"
            )
        limits = [(int(given), f"{THREADS_VAR}={given}")]
    else:
        limits = available_cpus()
    limits.append((chunks, f"compute.chunks={chunks}"))
    return min(n for n, _ in limits), ", ".join(why for _, why in limits)


def available_cpus() -> list[tuple[int, str]]:
    """The limits on the CPUs this process may use, each ``(CPUs, why)``: its affinity mask and its
    cgroup's CPU quota rounded up."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cgroup_cpu_limit()
    return [
        (affinity, f"{affinity} CPU{'s' * (affinity != 1)} in the affinity mask"),
        (max(1, math.ceil(quota)), f"a cgroup quota of {quota:g} CPUs") if quota else (affinity, "no CPU quota"),
    ]


def shared_by(jobs: int, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """``environ`` for ``jobs`` runs side by side: each gets its share of the CPUs (at least one) as
    ``$MNIST_PIPELINE_THREADS``, unless that is set already. Results do not depend on it."""
    if environ.get(THREADS_VAR, "").strip():
        return dict(environ)
    cpus = min(n for n, _ in available_cpus())
    return {**environ, THREADS_VAR: str(max(1, cpus // max(1, jobs)))}


def apply(kernels: str, chunks: int) -> tuple[dict[str, Any], int]:
    """One BLAS thread per call, log in one line what this process computes with; its fingerprint and
    the number of compute threads (:func:`threads`)."""
    import threadpoolctl

    threadpoolctl.threadpool_limits(limits=1, user_api="blas")
    variables, reason = plan(kernels, os.environ)
    if not reason and any(os.environ.get(k) != v for k, v in variables.items()):
        reason = "it was not started from the command line (only a stage's command restarts itself)"
    fp = fingerprint(chunks)
    n, why = threads(chunks)
    mode = f"native ({reason}; bit-identical only to runs with this fingerprint)" if reason else "portable"
    simd = " ".join(fp["numpy_simd"]) or "baseline only"
    log.info(
        "compute %s: %s %s kernel %s, numpy %s SIMD %s; %d chunks on %d thread%s (the least of: %s)",
        mode,
        fp["blas"],
        fp["blas_version"],
        fp["blas_kernel"],
        fp["numpy"],
        simd,
        chunks,
        n,
        "s" * (n != 1),
        why,
    )
    return fp, n


def differences(current: Mapping[str, Any], baseline: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``"key: current (baseline)"`` for every field that differs between two (nested) fingerprints."""
    out = []
    for key in sorted(current.keys() | baseline.keys()):
        new, old = current.get(key), baseline.get(key)
        if isinstance(new, Mapping) and isinstance(old, Mapping):
            out += differences(new, old, f"{prefix}{key}.")
        elif new != old:
            out.append(f"{prefix}{key}: {_show(new)} (was {_show(old)})")
    return out


def _show(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)
