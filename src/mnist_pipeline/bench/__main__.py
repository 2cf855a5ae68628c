"""``python -m mnist_pipeline.bench [--quick] [--configs NAME ...] [--skip-pipeline] [--overhead-only]``.

Order: pipeline timings first (a fresh clone; its ``data/features`` then feeds the training runs), the
shared-machine table in that clone (:mod:`.shared`; ``--skip-shared`` leaves it out), ``experiment=fast``
(and with ``--best`` ``experiment=best``) in it for the time-to-accuracy frontier, then each config's
interleaved repetitions, then the default config's augmentation and regularization overhead and the
deformations' cost on the wide net (:mod:`.overhead`; ``--skip-overhead`` leaves both out,
``--overhead-only`` runs nothing else after the pipeline). Writes ``reports/benchmark.json`` and
``reports/benchmark.md`` and prints the table. ``--quick`` (1 epoch, 1 repetition, no ``experiment=fast``)
is for trying the harness, not for numbers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mnist_pipeline import cli, compose, config, params
from mnist_pipeline.bench import configs, overhead, pipeline, shared, system
from mnist_pipeline.bench.compare import compare
from mnist_pipeline.bench.tables import render_markdown, targets
from mnist_pipeline.io import write_json, write_text

log = logging.getLogger("mnist_pipeline.bench")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(prog="python -m mnist_pipeline.bench", description=__doc__.split("\n\n")[1])
    p.add_argument("--configs", nargs="+", metavar="NAME", help=f"subset of {[c.name for c in configs.CONFIGS]}")
    p.add_argument("--quick", action="store_true", help="1 epoch, 1 repetition per config (harness check)")
    p.add_argument("--skip-pipeline", action="store_true", help="no dvc/stage timings; needs --features")
    p.add_argument("--skip-shared", action="store_true", help="no shared-machine table (train stage, experiments)")
    only = p.add_mutually_exclusive_group()
    only.add_argument("--overhead-only", action="store_true", help="no configs: only the default's overhead")
    only.add_argument("--skip-overhead", action="store_true", help="no augmentation/regularization overhead")
    p.add_argument("--features", type=Path, help="data/features directory to train on (default: the clone's)")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="BLAS/torch threads")
    p.add_argument("--out-dir", type=Path, default=Path("reports"))
    p.add_argument(
        "--best", action="store_true", help="also time `dvc exp run -S experiment=best` (about 7 minutes on 2 cores)"
    )
    args = p.parse_args(argv)
    if args.overhead_only and args.configs:
        p.error("--overhead-only runs no configs; drop --configs")
    if args.best and args.skip_pipeline:
        p.error("--best runs in the pipeline's fresh clone; drop --skip-pipeline")
    return args


def benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    start = time.perf_counter()
    envs, env_report = system.environment_report(args.threads)
    result: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": system.machine(),
        "load_average": {"start": list(os.getloadavg())},
        "environment": env_report,
        "quick": args.quick,
    }
    log.info("%s", env_report["note"])
    for label, pools in (("inherited env", "blas_inherited_env"), ("benchmark env", "blas_benchmark_env")):
        log.info("BLAS (%s): %s", label, env_report[pools])
    skipped, variables = env_report["portable"]["skipped"], env_report["portable"]["variables"]
    log.info("portable kernels: %s", f"skipped, {skipped}" if skipped else variables)
    features = args.features
    if not args.skip_pipeline:
        mirror = os.environ.get("DATA_MIRROR", "")
        if not mirror:
            raise SystemExit("DATA_MIRROR is not set: point it at a local MNIST mirror (make bench sets it)")
        pipe_env, _ = system.clean_env(dict(os.environ))
        result["pipeline"] = pipeline.measure(Path.cwd(), workdir, pipe_env, mirror)
        features = features or Path(result["pipeline"]["features_dir"])
        ws = Path(result["pipeline"]["workspace_dir"])
        if not args.skip_shared:
            stage_env = pipeline.stage_env(pipe_env, ws, mirror)
            result["shared"] = shared.measure(ws, workdir, stage_env, 1 if args.quick else shared.ROUNDS)
            result["queue"] = shared.measure_experiments(ws, stage_env, pipeline.DVC)
            result["tune"] = shared.measure_tune(ws, workdir, stage_env, pipeline.DVC)
        if not args.quick:  # the frontier: default (above), fast (under a minute), best (--best)
            result["fast_preset"] = pipeline.preset_run(ws, pipe_env, mirror, "fast")
        if args.best:
            result["best_preset"] = pipeline.preset_run(ws, pipe_env, mirror, "best")
    if features is None:
        raise SystemExit("--skip-pipeline needs --features DIR (e.g. data/features)")
    result["configs"] = {}
    for cfg in [] if args.overhead_only else configs.select(args.configs, args.quick):
        chunks = config.load(params.PARAMS_FILE).compute.chunks  # ours as the train stage computes
        result["configs"][cfg.name] = compare(cfg, features.resolve(), args.threads, envs, chunks)
        torch_run = result["configs"][cfg.name]["torch"]["runs"][0]
        result["torch"] = torch_run["torch"]
    if not args.skip_overhead:
        cycles, reps = (1, 1) if args.quick else (overhead.CYCLES, overhead.REPS)
        params_path = Path(params.PARAMS_FILE).resolve()
        result["overhead"] = overhead.measure(params_path, features.resolve(), args.threads, envs, cycles, reps)
        deformed = workdir / "deformed-wide.yaml"  # the wide net with the deformations, composed from conf/
        write_text(deformed, compose.compose(list(overhead.DEFORMED_WIDE)))
        result["deformation"] = overhead.measure(
            deformed, features.resolve(), args.threads, envs, cycles, reps, deformation=True
        )
    result["load_average"]["end"] = list(os.getloadavg())
    result["bench_seconds"] = time.perf_counter() - start
    result["targets"] = targets(result)
    return result


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="bench: %(message)s", stream=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="mnist-bench-") as tmp:
        result = benchmark(args, Path(tmp))
    if result.get("pipeline"):
        for key in ("features_dir", "workspace_dir"):  # deleted temp paths
            result["pipeline"].pop(key)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_json(args.out_dir / "benchmark.json", result)
    table = render_markdown(result)
    write_text(args.out_dir / "benchmark.md", table)
    print(table)


if __name__ == "__main__":
    main()
