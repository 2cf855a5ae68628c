"""Worker process: one measured run, its result as one JSON line on stdout.

``python -m mnist_pipeline.bench.worker '{"impl": "ours", "config": {...}, "features": "...", "threads": 2}'``.
Each run gets a fresh process, so no thread pool, allocator state or warm cache of one implementation
touches another; the thread count is fixed by environment (set by the parent) and by threadpoolctl.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from threadpoolctl import threadpool_info, threadpool_limits

from mnist_pipeline.bench.configs import BenchConfig
from mnist_pipeline.bench.runs import load_splits, run_floor, run_ours

IMPLS = ("ours", "torch", "floor")


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``spec["impl"]`` on ``spec["config"]`` with ``spec["threads"]`` BLAS threads."""
    impl, cfg, threads = spec["impl"], BenchConfig.from_dict(spec["config"]), int(spec["threads"])
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}; valid: {', '.join(IMPLS)}")
    splits = load_splits(Path(spec["features"]), cfg)
    with threadpool_limits(limits=threads):
        if impl == "ours":
            result = run_ours(cfg, splits)
        elif impl == "floor":
            result = run_floor(cfg, len(splits["train"].y))
        else:
            from mnist_pipeline.bench.torch_run import run_torch

            result = run_torch(cfg, splits, threads)
        pools = threadpool_info()
    result["n_train"] = len(splits["train"].y)
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
