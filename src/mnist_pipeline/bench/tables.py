"""The issue's targets checked against a benchmark result, and the markdown table of that result."""

from __future__ import annotations

from typing import Any

from mnist_pipeline.bench import shared
from mnist_pipeline.bench.flops import FORMULA

MIB_PER_GIB = 1024
# PyTorch s/epoch over ours (issue 17): at least 1.3x on the headline and classic nets, even on the wide one.
LEAD_TARGETS = {"headline": 1.3, "classic": 1.3, "wide": 1.0}
CHUNKS_TARGET = 1.1  # the headline's chunked epoch over the unchunked one on OpenBLAS's threads, alone
OVERHEAD_TARGET = "default's augmentation + L2 overhead (default epoch ÷ all off epoch, median over rounds)"
DEFORMATION_TARGET = "elastic + affine deformation on the wide net (deformed epoch ÷ undeformed, median over rounds)"


def _get(data: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _target(name: str, measured: float | None, limit: float, unit: str, at_most: bool = True) -> dict[str, Any]:
    met = None if measured is None else (measured <= limit if at_most else measured >= limit)
    target = f"{name} {'≤' if at_most else '≥'} {limit:g}{unit}"
    return {"target": target, "measured": measured, "unit": unit, "met": met}


def _sum(pipe: dict[str, Any], *steps: str) -> float | None:
    """Total seconds of ``steps`` of the pipeline timings, or None if one was not measured."""
    seconds = [_get(pipe, step, "seconds") for step in steps]
    return None if None in seconds else sum(seconds)


def _without_best(result: dict[str, Any]) -> float | None:
    """The benchmark's seconds less the optional ``--best`` training run (about 7 minutes of its own) and
    the shared-machine table (a few minutes of runs that wait for each other by design)."""
    total = result.get("bench_seconds")
    best = _get(result, "best_preset", "dvc_exp_run", "seconds") or 0.0
    shared_seconds = sum(_get(result, key, "seconds") or 0.0 for key in ("shared", "queue", "tune"))
    return None if total is None else total - best - shared_seconds


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of the issue with its measured value and ``met`` (``None`` when not measured)."""
    cfgs, pipe = result.get("configs", {}), result.get("pipeline") or {}
    classic = cfgs.get("classic")
    classic_9 = None
    if classic and classic["config"]["epochs"] == 9:
        classic_9 = classic["ours"]["train_seconds"]["median"]
    stages = pipe.get("stages", {})
    prep_feat = None
    if "prepare" in stages and "featurize" in stages:
        prep_feat = stages["prepare"]["seconds"] + stages["featurize"]["seconds"]
    rss = _get(stages, "train", "max_rss_mib")
    rows = [
        _target("784-256-128-10 ours / GEMM floor", _get(cfgs, "headline", "ratios", "ours_over_floor"), 1.5, "×"),
        _target("784-64-10 sigmoid, 9 epochs, ours", classic_9, 2, " s"),
        _target("peak RSS of train", None if rss is None else rss / MIB_PER_GIB, 1, " GiB"),
        _target("prepare + featurize", prep_feat, 5, " s"),
        _target("cold dvc repro (local mirror)", _get(pipe, "cold_dvc_repro", "seconds"), 45, " s"),
        _target("cold make repro: make install + cold dvc repro", _sum(pipe, "install", "cold_dvc_repro"), 60, " s"),
        _target("make test's first install: install + install-dev", _sum(pipe, "install", "install_dev"), 60, " s"),
        _target("no-op dvc repro", _get(pipe, "noop_dvc_repro", "seconds"), 2, " s"),
        _target("whole benchmark, without --best's run and the shared machine", _without_best(result), 600, " s"),
        _target(OVERHEAD_TARGET, _get(result, "overhead", "variants", "default", "over_all_off"), 1.15, "×"),
        _target(DEFORMATION_TARGET, _get(result, "deformation", "variants", "deformed", "over_all_off"), 1.25, "×"),
    ]
    for name, limit in LEAD_TARGETS.items():
        for impl, kernels in (("ours", "native"), ("portable", "portable")):
            lead = _get(cfgs, name, "lead", impl, "median")
            if name in cfgs and (impl == "ours" or lead is not None):
                label = f"{cfgs[name]['label'].split()[0]} PyTorch ÷ ours, {kernels} kernels (median of paired reps)"
                rows.append(_target(label, lead, limit, "×", at_most=False))
    chunks_price = _get(cfgs, "headline", "ratios", "chunks_over_blas_threads", "median")
    if chunks_price is not None:
        label = "784-256-128-10 alone, portable: fixed chunks ÷ OpenBLAS's own threads (median of paired reps)"
        rows.append(_target(label, chunks_price, CHUNKS_TARGET, "×"))
    for name, cfg in cfgs.items():
        diff = cfg["checks"]["accuracy_diff_points"]
        row = _target(f"{name}: test-accuracy gap ours vs PyTorch", abs(diff), 0.3, " points")
        row["met"] = cfg["checks"]["valid"]  # also requires identical init, data order and float32
        rows.append(row)
    return rows + shared.targets(result)


def _s(stat: dict[str, float], digits: int = 3) -> str:
    return f"{stat['median']:.{digits}f} ({stat['min']:.{digits}f}–{stat['max']:.{digits}f})"


def _blas_line(result: dict[str, Any]) -> str:
    env = result["environment"]
    pools = [p for p in env["blas_benchmark_env"] if p.get("internal_api") not in (None, "openmp")]
    blas = ", ".join(f"{p['internal_api']} {p.get('version')} kernel {p.get('architecture')}" for p in pools) or "?"
    inherited = [p.get("architecture") for p in env["blas_inherited_env"] if p.get("internal_api") == "openblas"]
    torch = result.get("torch") or {}
    return (
        f"numpy {result['machine']['numpy']} with {blas} (kernel with the inherited environment: "
        f"{', '.join(map(str, inherited)) or '?'}); "
        f"PyTorch {torch.get('version', '—')} (BLAS {torch.get('blas', '—')}); "
        f"{env['threads']} threads for both. {env['note']}."
    )


def _portable_lines(result: dict[str, Any]) -> list[str]:
    """Our trainer on portable against native kernels, one row per config, or why portable was not measured."""
    cfgs = [cfg for cfg in result["configs"].values() if "portable" in cfg]
    if not cfgs:
        return ["", f"Portable kernels not measured: {result['environment']['portable']['skipped']}."]
    lines = [
        "",
        "Our trainer on portable kernels (the pipeline's default `compute.kernels: portable`) against the CPU's "
        "native kernels (`ours` above), in the same interleaved repetitions; kernels are OpenBLAS kernel / "
        "numpy SIMD targets as each worker reported them:",
        "",
        "| net | native kernels | portable kernels | native s/epoch | portable s/epoch | portable/native "
        "(paired min–max) | steady epoch native · portable | test acc native · portable |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for cfg in cfgs:
        native, portable = cfg["ours"], cfg["portable"]
        ratio, pairs = cfg["ratios"]["portable_over_native"], cfg["ratios"]["portable_over_native_paired"]
        lines.append(
            f"| {cfg['label']} | {', '.join(native['kernels'])} | {', '.join(portable['kernels'])} | "
            f"{_s(native['seconds_per_epoch'])} | {_s(portable['seconds_per_epoch'])} | "
            f"{ratio:.2f} ({pairs['min']:.2f}–{pairs['max']:.2f}) | "
            f"{native['steady_epoch_seconds']['median']:.3f} · {portable['steady_epoch_seconds']['median']:.3f} | "
            f"{100 * native['test_acc']['median']:.2f}% · {100 * portable['test_acc']['median']:.2f}% |"
        )
    return lines


def _deformation_lines(result: dict[str, Any]) -> list[str]:
    """The wide net with the deformations against itself without them (issue 25)."""
    dfm = result.get("deformation")
    if not dfm:
        return []
    on = dfm["default_on"]
    lines = [
        "",
        f"Elastic + affine deformation on the wide net ({dfm['label']}, the best preset, whose deformations are "
        + ", ".join(f"{k}={on[k]:g}" for k in dfm["variants"]["deformed"]["on"])
        + f"), {dfm['kernels']} kernels, {dfm['threads']} threads; interleaved as the table above "
        f"({dfm['reps']} worker(s) × {dfm['rounds']} rounds, the first {dfm['warmup_rounds']} not counted). "
        "The deformations are drawn per batch in the training thread and applied per row block on the compute "
        "threads (one field and one bilinear resample per image).",
        "",
        "| variant | s/epoch | ÷ deformations off (min–max) |",
        "|---|---|---|",
    ]
    for name, v in dfm["variants"].items():
        pairs = v["over_all_off_paired"]
        ratio = f"{v['over_all_off']:.2f} ({pairs['min']:.2f}–{pairs['max']:.2f})"
        lines.append(f"| {name} | {_s(v['seconds_per_epoch'])} | {ratio} |")
    return lines


def _overhead_lines(result: dict[str, Any]) -> list[str]:
    """The default config against itself with its augmentation and regularizers switched off (issue 17)."""
    ovh = result.get("overhead")
    if not ovh:
        return []
    labels = sorted({label for v in ovh["variants"].values() for label in v["kernels"]})
    kernels = f"{ovh['kernels']} kernels ({', '.join(labels)})"
    if ovh["kernels"] != ovh["kernels_asked"]:
        kernels += f", not {ovh['kernels_asked']}: {result['environment']['portable']['skipped']}"
    lines = [
        "",
        f"Augmentation and regularization overhead of the default config ({ovh['label']}, params.yaml's "
        f"optimizer and schedule), on {kernels}; {ovh['threads']} threads. Interleaved epoch by epoch: "
        f"{ovh['reps']} fresh worker process(es), each training one network per variant in "
        f"{ovh['rounds']} rounds of one epoch per variant; the first {ovh['warmup_rounds']} not counted, the "
        "others in every rotation of the variants' order and every rotation reversed (each variant runs before "
        "each other one as often as after it). s/epoch: fit's epochs (shuffle, gather, augmentation, batch steps; "
        "no validation), median over counted rounds, min–max. ÷ all off: median over counted rounds of the "
        "variant's epoch over all off's epoch in the same round (min–max): what the variant leaves on costs. "
        "Each round is a fresh one-epoch fit (schedule and momentum restart), so the validation accuracy after "
        "the last round is no measure of the default run's. Without shifts the trainer leaves the batch's blank "
        "input columns out of the first layer (docs/performance.md), so what the shifts cost includes that saving.",
        "",
        "| variant | left on | s/epoch | ÷ all off (min–max) | val acc after the last round |",
        "|---|---|---|---|---|",
    ]
    for name, v in ovh["variants"].items():
        on = ", ".join(f"{k}={ovh['default_on'][k]:g}" for k in v["on"]) or "—"
        pairs = v["over_all_off_paired"]
        lines.append(
            f"| {name} | {on} | {_s(v['seconds_per_epoch'])} | "
            f"{v['over_all_off']:.2f} ({pairs['min']:.2f}–{pairs['max']:.2f}) | {100 * v['val_acc']['median']:.2f}% |"
        )
    return lines


def _config_lines(result: dict[str, Any]) -> list[str]:
    """Ours against PyTorch and the GEMM floor, one row per config, then portable against native kernels."""
    if not result["configs"]:
        return []
    lines = [
        "",
        "Seconds per epoch (shuffle + gather + all batch steps; median over interleaved repetitions, min–max):",
        "",
        "| net | epochs × reps | ours s/epoch | PyTorch s/epoch | GEMM floor s/epoch | ours/PyTorch | "
        "ours/floor | GFLOP/s ours · PyTorch · floor | steady epoch ours · PyTorch | test acc ours · PyTorch | valid |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cfg in result["configs"].values():
        c, r, chk = cfg["config"], cfg["ratios"], cfg["checks"]
        steady = {impl: cfg[impl]["steady_epoch_seconds"]["median"] for impl in ("ours", "torch")}
        valid = "yes" if chk["valid"] else "VOID: " + "; ".join(chk["void_reasons"])
        lines.append(
            f"| {cfg['label']} | {c['epochs']} × {c['reps']} | {_s(cfg['ours']['seconds_per_epoch'])} | "
            f"{_s(cfg['torch']['seconds_per_epoch'])} | {_s(cfg['floor']['seconds_per_epoch'])} | "
            f"{r['ours_over_torch']:.2f} | {r['ours_over_floor']:.2f} | "
            f"{cfg['ours']['gflops']:.0f} · {cfg['torch']['gflops']:.0f} · {cfg['floor']['gflops']:.0f} | "
            f"{steady['ours']:.3f} · {steady['torch']:.3f} | "
            f"{100 * cfg['ours']['test_acc']['median']:.2f}% · {100 * cfg['torch']['test_acc']['median']:.2f}% | "
            f"{valid} |"
        )
    return lines + _lead_lines(result) + _portable_lines(result) + _blas_threads_lines(result)


def _lead_lines(result: dict[str, Any]) -> list[str]:
    """PyTorch's lead over our trainer on each kernel mode, repetition by repetition."""
    lines = [
        "",
        "PyTorch's lead: per repetition, PyTorch's steady epoch ÷ ours (steady epoch: the median of a run's epochs "
        "after the first; the two runs of a repetition have at most one other run between them, so a slow phase "
        "of the machine largely cancels); median over repetitions, min–max. Above 1 our trainer is faster:",
        "",
        "| net | reps | PyTorch ÷ ours, native kernels | PyTorch ÷ ours, portable kernels | target |",
        "|---|---|---|---|---|",
    ]
    for name, cfg in result["configs"].items():
        lead = cfg["lead"]
        cells = [_s(lead[impl], 2) if impl in lead else "not measured" for impl in ("ours", "portable")]
        limit = LEAD_TARGETS.get(name)
        lines.append(
            f"| {cfg['label']} | {cfg['config']['reps']} | {' | '.join(cells)} | "
            f"{'—' if limit is None else f'≥ {limit:g}×'} |"
        )
    return lines


def _blas_threads_lines(result: dict[str, Any]) -> list[str]:
    """The price of thread-independent bits: chunked epochs over the same trainer on OpenBLAS's own threads."""
    cfgs = [cfg for cfg in result["configs"].values() if "chunks_over_blas_threads" in cfg["ratios"]]
    if not cfgs:
        return []
    lines = [
        "",
        "The price of bits that do not depend on the thread count, alone on a quiet machine: our trainer as the "
        "pipeline runs it (portable kernels, fixed chunks on free threads, one BLAS thread per call) against the "
        "same trainer unchunked with every BLAS call on OpenBLAS's own threads (the design before `compute.chunks`, "
        "whose bits follow the thread count and whose threads spin). Per repetition, steady epoch ÷ steady epoch; "
        "median over repetitions, min–max. Below 1 the chunked trainer is faster:",
        "",
        "| net | reps | chunked steady epoch s | OpenBLAS threads steady epoch s | chunked ÷ OpenBLAS threads "
        "| target |",
        "|---|---|---|---|---|---|",
    ]
    for cfg in cfgs:
        target = f"≤ {CHUNKS_TARGET:g}×" if cfg["config"]["name"] == "headline" else "—"
        lines.append(
            f"| {cfg['label']} | {cfg['config']['reps']} | {_s(cfg['portable']['steady_epoch_seconds'])} | "
            f"{_s(cfg['blas_threads']['steady_epoch_seconds'])} | {_s(cfg['ratios']['chunks_over_blas_threads'], 2)} | "
            f"{target} |"
        )
    return lines


def _time_to_accuracy_lines(result: dict[str, Any]) -> list[str]:
    """The frontier: training seconds of the default run, ``experiment=fast`` and ``experiment=best`` (each if
    timed) to each validation accuracy, and their test accuracy."""
    runs = [("default (`dvc repro`)", _get(result, "pipeline", "time_to_accuracy"))]
    runs.append(("`experiment=fast`", result.get("fast_preset")))
    runs.append(("`experiment=best`", result.get("best_preset")))
    runs = [(name, run) for name, run in runs if run]
    if not runs:
        return []
    thresholds = list(runs[0][1]["first_reached"])
    head = " | ".join(f"first val acc ≥ {100 * float(t):g}%" for t in thresholds)
    lines = ["", "Time to accuracy (training seconds: fit's epochs, validation passes excluded):", ""]
    lines += [f"| run | {head} | epochs | train s | val acc | test acc |", "|---" * (len(thresholds) + 5) + "|"]
    for name, run in runs:
        reached = [run["first_reached"][t] for t in thresholds]
        cells = ["never" if r is None else f"{r['seconds']:.1f} s (epoch {r['epoch']})" for r in reached]
        lines.append(
            f"| {name} | {' | '.join(cells)} | {run['epochs']} | {run['train_seconds']:.1f} | "
            f"{run['val_accuracy']:.4f} | {run['test_accuracy']:.4f} |"
        )
    return lines


def render_markdown(result: dict[str, Any]) -> str:
    """``reports/benchmark.md``: header (date, machine, BLAS), speed tables, pipeline table, targets."""
    m, load = result["machine"], result["load_average"]
    lines = [
        "# Benchmark: NumPy MLP vs PyTorch CPU vs the GEMM floor",
        "",
        f"Measured {result['date']} on {m['cpu_model']}, {m['logical_cpus']} logical CPUs "
        f"({m['usable_cpus']} usable), Python {m['python']}. 1-min load average {load['start'][0]:.2f} at start, "
        f"{load['end'][0]:.2f} at end (the benchmark's own threads count in it). {_blas_line(result)}",
    ]
    lines += _config_lines(result) + _overhead_lines(result) + _deformation_lines(result)
    pipe = result.get("pipeline")
    if pipe:
        lines += ["", "Pipeline (fresh clone, local mirror):", "", "| step | wall s | peak RSS MiB |", "|---|---|---|"]
        steps = [(f"`make {k.replace('_', '-')}`", pipe[k]) for k in ("install", "install_dev") if k in pipe]
        steps += [("cold `dvc repro`", pipe["cold_dvc_repro"]), ("no-op `dvc repro`", pipe["noop_dvc_repro"])]
        steps += [(f"stage `{name}`", run) for name, run in pipe["stages"].items()]
        lines += [f"| {name} | {run['seconds']:.2f} | {run['max_rss_mib']:.0f} |" for name, run in steps]
        lines += _time_to_accuracy_lines(result)
    lines += ["", *shared.lines(result)]
    lines += ["Targets (issues 8, 17 and 24):", "", "| target | measured | met |", "|---|---|---|"]
    for t in targets(result):
        measured = "not measured" if t["measured"] is None else f"{t['measured']:.2f}{t['unit']}"
        met = {True: "yes", False: "**no**", None: "—"}[t["met"]]
        lines.append(f"| {t['target']} | {measured} | {met} |")
    lines += [
        "",
        f"GEMM FLOPs per epoch: `{FORMULA}`, N = training examples. Both trainers start from the same "
        "initial weights and see the same per-epoch permutations (checked by hash); momentum SGD with constant "
        "lr, float32, each run in a fresh process. The floor is bare `numpy.matmul(..., out=)` on the same GEMM "
        "shapes and batches. Our trainer leaves the input columns that are zero in a whole batch out of its first "
        "layer's products when training without augmentation (MNIST: about a third of the pixels; "
        "docs/performance.md); the GFLOP/s count the full products for every column. "
        "Regenerate with `make bench` (writes reports/benchmark.json).",
        "",
    ]
    return "\n".join(lines)
