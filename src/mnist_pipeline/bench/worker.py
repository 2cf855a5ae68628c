"""Worker process: one measured run, its result as one JSON line on stdout.

``python -m mnist_pipeline.bench.worker '{"impl": "ours", "config": {...}, "features": "...", "threads": 2,
"chunks": 2}'``.
Each run gets a fresh process, so no thread pool, allocator state or warm cache of one implementation
touches another; the thread count is fixed by environment (set by the parent) and by threadpoolctl.
``portable`` is our trainer again, in a process the parent started on portable kernels (the variables
:func:`mnist_pipeline.compute.plan` gives are read when numpy loads, so only a fresh process can have
them); the worker records what it computes with (:func:`~mnist_pipeline.compute.fingerprint`) and refuses
to time a ``portable`` run that is not on portable kernels.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from threadpoolctl import threadpool_info, threadpool_limits

from mnist_pipeline import compute
from mnist_pipeline.bench.configs import BenchConfig
from mnist_pipeline.bench.runs import load_splits, run_floor, run_ours

# Our trainer on the CPU's native kernels, on portable ones, and on portable ones unchunked with OpenBLAS's
# own threads: the design before compute.chunks, fast alone but with bits that follow the thread count.
OURS = ("ours", "portable", "blas_threads")
IMPLS = (*OURS, "torch", "floor")  # ours, portable, blas_threads adjacent in every rotation: least drift in ratios
PROCESS_KERNELS = {"portable": "portable", "blas_threads": "portable"}  # compute.kernels of a process; else native


def portable_gap(fingerprint: dict[str, Any]) -> str:
    """What keeps a process with this compute ``fingerprint`` off portable kernels ('' when it is on them)."""
    gaps = []
    if str(fingerprint["blas_kernel"]).lower() != compute.PORTABLE_KERNEL.lower():
        gaps.append(f"OpenBLAS kernel {fingerprint['blas_kernel']}")
    above = compute.above_portable(fingerprint["numpy_simd"])
    if above:
        gaps.append(f"numpy SIMD {' '.join(above)}")
    return " and ".join(gaps)


def checked_fingerprint(portable: bool, who: str) -> dict[str, Any]:
    """This process's compute fingerprint; if it must be ``portable``, first check that it is.

    Raises ``RuntimeError`` naming ``who`` when a process meant for portable kernels is not on them:
    its native timings would be reported as the portable default's.
    """
    fingerprint = compute.fingerprint()
    gap = portable_gap(fingerprint) if portable else ""
    if gap:
        raise RuntimeError(f"the {who} is not on portable kernels: {gap}")
    return fingerprint


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``spec["impl"]`` on ``spec["config"]`` with ``spec["threads"]`` threads (``ours`` and ``portable``:
    ``spec["chunks"]`` on them; ``blas_threads``: one chunk, the threads inside each BLAS call)."""
    impl, cfg, threads = spec["impl"], BenchConfig.from_dict(spec["config"]), int(spec["threads"])
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}; valid: {', '.join(IMPLS)}")
    splits = load_splits(Path(spec["features"]), cfg)
    # Ours: one BLAS thread per call and the chunks on the threads, as the train stage runs (compute.apply);
    # blas_threads: one chunk, and every BLAS call on `threads` threads.
    chunked = impl in OURS and impl != "blas_threads"
    with threadpool_limits(limits=1 if chunked else threads):
        fingerprint = checked_fingerprint(PROCESS_KERNELS.get(impl) == "portable", f"{impl} worker")
        if chunked:
            result = run_ours(cfg, splits, int(spec["chunks"]), threads)
        elif impl == "blas_threads":
            result = run_ours(cfg, splits, 1, 1)
        elif impl == "floor":
            result = run_floor(cfg, len(splits["train"].y))
        else:
            from mnist_pipeline.bench.torch_run import run_torch

            result = run_torch(cfg, splits, threads)
        pools = threadpool_info()
    result["n_train"] = len(splits["train"].y)
    result["compute"] = fingerprint
    result["threadpools"] = [
        {k: p.get(k) for k in ("internal_api", "version", "architecture", "num_threads", "filepath")} for p in pools
    ]
    return result


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python -m mnist_pipeline.bench.worker '<json spec>'")
    print(json.dumps(run(json.loads(sys.argv[1]))))


if __name__ == "__main__":
    main()
