"""Gate ``reports/metrics.json``: minimums from ``conf/gates.yaml`` and a diff against a baseline.

Prints a ``dvc metrics diff``-style table (baseline, workspace, change, gate) and exits 1 with
one ``FAIL`` line per missed gate. The gate is chosen by ``dataset.name`` in params.yaml and by
the experiment preset whose composition params.yaml matches (``default`` when it matches
conf/config.yaml alone); ``--preset`` names it instead.

The baseline is ``git show HEAD:reports/metrics.json`` (``--rev`` picks another revision,
``--baseline FILE`` a file). ``--reproduce`` also requires the metrics to reproduce the
baseline. It first compares the compute fingerprints (``reports/compute.json``, see
:mod:`mnist_pipeline.compute`): equal fingerprints must give accuracies exactly and every other
metric within ``--rel-tol`` (relative); different ones name the fields that differ in one line,
then require test and validation accuracy within ``--drift-tol`` of the baseline, a bound set from
the measured spread over training seeds (README, Reproducibility): rounding drift passes, a real
regression does not.

Run: ``python -m mnist_pipeline.check_metrics [--rev REV | --baseline FILE] [--preset NAME]
[--reproduce]`` (or ``make check-metrics``).
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from mnist_pipeline import cli, compose, compute, config, params, paths
from mnist_pipeline.errors import ConfigError, DataError
from mnist_pipeline.io import json_object
from mnist_pipeline.params import YamlLoader
from mnist_pipeline.text import terminal

METRICS_FILE = paths.METRICS_FILE.as_posix()  # as DVC and git name it
COMPUTE_FILE = paths.COMPUTE_FILE.as_posix()
# How far each accuracy may move from the baseline when the compute fingerprints differ. Another
# kernel's rounding sends training down another path, as another seed does: the bound is 4 * sqrt(2)
# standard deviations of the default run's accuracy over five training seeds (README,
# Reproducibility: test 0.00048, validation 0.00113), rounded up, so drift between two runs passes
# and a real regression does not.
DRIFT_TOL = {"test.accuracy": 0.003, "val.accuracy": 0.0065}
GATES_FILE = "conf/gates.yaml"
DEFAULT_PRESET = "default"
# params.yaml sections that decide a run's results; the others (download, evaluate, report) do not.
RESULT_SECTIONS = ("model", "optimizer", "schedule", "prepare", "featurize", "train")
PRECISION = 5  # decimals shown, as `dvc metrics diff`
PREFIX = "check-metrics"


def flatten(data: Any, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of nested JSON as ``{"test.accuracy": 0.98, ...}`` (dotted keys, as DVC shows them),
    in document order. A loop, not recursion: it takes any nesting that the JSON parser took."""
    out: dict[str, float] = {}
    todo: list[tuple[str, Any]] = [(prefix, data)]
    while todo:
        name, node = todo.pop()
        if isinstance(node, dict):
            todo += reversed([(f"{name}.{key}" if name else str(key), value) for key, value in node.items()])
        elif isinstance(node, int | float) and not isinstance(node, bool):
            out[name] = node
    return out


def parse_metrics(text: str, source: str) -> dict[str, float]:
    """Flattened metrics from JSON ``text``; DataError naming ``source`` if it is not a JSON object."""
    metrics = flatten(json_object(text, source))
    for metric, value in metrics.items():
        if not params.is_finite_number(value):
            raise DataError(
                f"{source}: {metric} is {params.shown(value)}, not a finite number; rerun `dvc repro evaluate`"
            )
    return metrics


def read_text(path: str | Path) -> str:
    """The text of ``path``, a regular file of at most ``paths.TEXT_CAP`` bytes (checked before reading)."""
    return paths.read_capped_text(path, "is it the right file?")


def read_metrics(path: str | Path) -> dict[str, float]:
    try:
        text = read_text(path)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}; run `dvc repro` first") from exc
    return parse_metrics(text, str(path))


def git_metrics(rev: str, path: str = METRICS_FILE) -> tuple[dict[str, float] | None, str]:
    """``path`` as committed at ``rev`` (relative to the current directory), or ``(None, why not)``."""
    text, why = git_show(rev, path)
    return (None, why) if text is None else (parse_metrics(text, f"{rev}:{path}"), "")


def git_show(rev: str, path: str, cwd: Path | None = None) -> tuple[str | None, str]:
    """The text of ``path`` at ``rev`` (relative to ``cwd``, default the current directory), or ``(None, why not)``.

    Its size is asked first (``git cat-file -s``): over ``paths.TEXT_CAP`` bytes it is a DataError, unread.
    """
    size, why = _git(["cat-file", "-s", f"{rev}:./{path}"], cwd)
    if size is None:
        return None, f"git show {rev}:{path} failed: {why}"
    if int(size) > paths.TEXT_CAP:
        raise DataError(
            f"{rev}:{path} is {int(size):,} bytes, over the {paths.TEXT_CAP:,}-byte cap on files read whole; "
            "is it the right file?"
        )
    try:
        text, why = _git(["show", f"{rev}:./{path}"], cwd)
    except UnicodeDecodeError as exc:
        raise DataError(f"{rev}:{path} is not UTF-8 text (byte {exc.start}); is it the right file?") from exc
    return (text, "") if text is not None else (None, f"git show {rev}:{path} failed: {why}")


def _git(args: list[str], cwd: Path | None) -> tuple[str | None, str]:
    """The output of ``git args`` run in ``cwd``, or ``(None, its last error line)``."""
    try:
        result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, encoding="utf-8", timeout=60, check=False)
    except OSError as exc:
        return None, f"git unavailable ({exc.strerror})"
    if result.returncode != 0:
        return None, (result.stderr.strip().splitlines() or ["unknown error"])[-1]
    return result.stdout, ""


def parse_fingerprints(text: str | None, source: str) -> dict[str, Any] | None:
    """The fingerprints of a ``compute.json`` text (None if there is no text); DataError if malformed."""
    return None if text is None else json_object(text, source)


def read_text_if_present(path: Path) -> str | None:
    try:
        return read_text(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from exc


def load_gates(path: str | Path) -> dict[str, dict[str, dict[str, float]]]:
    """``{dataset: {preset: {metric: minimum}}}`` from the gate file, validated."""
    try:
        data = yaml.load(read_text(path), Loader=YamlLoader)  # noqa: S506 - safe, no aliases
    except OSError as exc:
        raise ConfigError(f"cannot read gate file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{path} must map dataset names to presets to {{metric: minimum}}")
    for dataset, presets in data.items():
        if not isinstance(presets, dict) or not presets:
            raise ConfigError(f"{path}: {dataset} must map preset names to {{metric: minimum}}")
        for preset, gate in presets.items():
            where = f"{path}: {dataset}.{preset}"
            if not isinstance(gate, dict) or not gate:
                raise ConfigError(f"{where} must map metric names to minimums, e.g. {{test.accuracy: 0.98}}")
            for metric, minimum in gate.items():
                if not params.is_finite_number(minimum):
                    raise ConfigError(f"{where}.{metric}={params.shown(minimum)} is invalid: must be a finite number")
            names = [dataset, preset, *gate]
            if not all(isinstance(name, str) for name in names):  # YAML reads `1:` or `true:` as a number
                odd = next(name for name in names if not isinstance(name, str))
                raise ConfigError(f"{where}: the name {odd!r} must be text; quote it in {path}")
    return data


def _results(cfg: config.Config) -> dict[str, Any]:
    return {section: params.as_dict(getattr(cfg, section)) for section in RESULT_SECTIONS}


def detect_preset(cfg: config.Config, conf_dir: str | Path) -> str | None:
    """The preset (``default`` or a conf/experiment/ name) whose composition matches ``cfg``; None if none does."""
    wanted = _results(cfg)
    presets = [DEFAULT_PRESET, *sorted(p.stem for p in (Path(conf_dir) / "experiment").glob("*.yaml"))]
    for preset in presets:
        overrides = [] if preset == DEFAULT_PRESET else [f"experiment={preset}"]
        composed = config.from_dict(yaml.safe_load(compose.compose(overrides, conf_dir=conf_dir)))
        if _results(composed) == wanted:
            return preset
    return None


def select_gate(
    gates: dict[str, dict[str, dict[str, float]]], dataset: str, preset: str, gates_file: str | Path
) -> dict[str, float]:
    if dataset not in gates:
        raise ConfigError(
            f"{gates_file} has no gate for dataset {dataset!r} (it has: {', '.join(gates)}); add one under {dataset}:"
        )
    if preset not in gates[dataset]:
        raise ConfigError(
            f"{gates_file} has no gate for preset {preset!r} of {dataset} "
            f"(it has: {', '.join(gates[dataset])}); add one or pass --preset"
        )
    return gates[dataset][preset]


def gate_failures(
    current: dict[str, float], gate: dict[str, float], label: str, source: str = METRICS_FILE
) -> list[str]:
    """One message per metric of ``gate`` that ``current`` (read from ``source``) lacks or falls below."""
    failures = []
    for metric, minimum in gate.items():
        if metric not in current:
            failures.append(f"{metric} is missing from {source}; {label} requires >= {minimum}")
        elif current[metric] < minimum:
            failures.append(f"{metric} {current[metric]} < {minimum}, the minimum for {label}")
    return failures


def reproduce_failures(
    current: dict[str, float], baseline: dict[str, float], label: str, rel_tol: float, source: str = METRICS_FILE
) -> list[str]:
    """Differences from ``baseline`` (named ``label``): accuracies must be equal, others within ``rel_tol``."""
    failures = []
    for metric in sorted(current.keys() | baseline.keys()):
        new, old = current.get(metric), baseline.get(metric)
        if new is None or old is None:
            where = source if new is None else label
            failures.append(f"{metric} is missing from {where}; a reproduction must have the same metrics")
        elif metric.rsplit(".", 1)[-1].endswith("accuracy"):
            if new != old:
                failures.append(f"{metric} {new} != {old} in {label}; accuracies must reproduce exactly")
        elif not math.isclose(new, old, rel_tol=rel_tol, abs_tol=0.0):
            rel = abs(new - old) / max(abs(old), abs(new))
            failures.append(f"{metric} {new} differs from {old} in {label} by {rel:.2g} relative (> {rel_tol:g})")
    return failures


def drift_failures(
    current: dict[str, float],
    baseline: dict[str, float],
    label: str,
    tol: dict[str, float],
    source: str = METRICS_FILE,
) -> list[str]:
    """Accuracies of :data:`DRIFT_TOL` that moved more than their ``tol`` from ``baseline`` (named ``label``)."""
    failures = []
    for metric, bound in tol.items():
        new, old = current.get(metric), baseline.get(metric)
        if new is None or old is None:
            where = source if new is None else label
            failures.append(f"{metric} is missing from {where}; a reproduction must have the same metrics")
        elif round(abs(new - old), 12) > bound:  # accuracies are multiples of 1/N: the bound itself passes
            failures.append(
                f"{metric} {new} is {abs(new - old):.4f} from {old} in {label} (> {bound:g}): more than another "
                "compute fingerprint explains (the seed spread); look for a real regression"
            )
    return failures


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return str(round(value, PRECISION)) if isinstance(value, float) else str(value)


def align(rows: list[list[str]]) -> str:
    """Rows of cells as left-aligned columns two spaces apart (the layout of ``dvc metrics diff``).

    Every cell is shown as :func:`~mnist_pipeline.text.terminal` shows it: a metric, experiment or
    param name cannot add a line to the table or send the terminal an escape sequence.
    """
    rows = [[terminal(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def format_table(
    current: dict[str, float],
    baseline: dict[str, float] | None,
    old_label: str,
    gate: dict[str, float],
    path: str = METRICS_FILE,
) -> str:
    """``dvc metrics diff``-style table (Path, Metric, old, workspace, Change) with a Gate column."""
    base = baseline or {}
    rows = [["Path", "Metric", old_label, "workspace", "Change", "Gate"]]
    for metric in sorted(current.keys() | base.keys() | gate.keys()):
        new, old = current.get(metric), base.get(metric)
        change = None if new is None or old is None else new - old
        status = ""
        if metric in gate:
            status = f">= {gate[metric]} " + ("ok" if new is not None and new >= gate[metric] else "FAIL")
        rows.append([path, metric, _fmt(old), _fmt(new), _fmt(change), status])
    return align(rows)


def baseline_fingerprints(args: argparse.Namespace) -> tuple[dict[str, Any] | None, str]:
    """The baseline's fingerprints and where they come from (None if it has none)."""
    if args.baseline is not None:
        if args.baseline_compute is None:
            return None, "the baseline (pass --baseline-compute)"
        path = args.baseline_compute
        return parse_fingerprints(read_text_if_present(path), str(path)), str(path)
    path = args.compute.as_posix()
    text, _ = git_show(args.rev, path)
    return parse_fingerprints(text, f"{args.rev}:{path}"), f"{args.rev}:{path}"


def reproduction(
    args: argparse.Namespace, current: dict[str, float], baseline: dict[str, float], label: str, source: str
) -> list[str]:
    """Failures of ``--reproduce``: exact when the compute fingerprints agree, within the drift bound otherwise."""
    now = parse_fingerprints(read_text_if_present(args.compute), str(args.compute))
    then, then_source = baseline_fingerprints(args)
    if now is None or then is None:
        missing = args.compute if now is None else then_source
        print(terminal(f"{PREFIX}: no compute fingerprint in {missing}; the reproduction must be exact"))
        return reproduce_failures(current, baseline, label, args.rel_tol, source)
    diffs = compute.differences(now, then)
    if not diffs:
        print(terminal(f"{PREFIX}: compute fingerprint equals {then_source}; the reproduction must be exact"))
        return reproduce_failures(current, baseline, label, args.rel_tol, source)
    tol = DRIFT_TOL if args.drift_tol is None else dict.fromkeys(DRIFT_TOL, args.drift_tol)
    bounds = " and ".join(f"{metric} within {bound:g}" for metric, bound in tol.items())
    print(
        terminal(
            f"{PREFIX}: compute fingerprint differs from {then_source} in {'; '.join(diffs)}: rounding differs, "
            f"so {bounds} of the baseline are required (losses are not compared)"
        )
    )
    return drift_failures(current, baseline, label, tol, source)


def tolerance(text: str) -> float:
    """A tolerance argument: a finite number >= 0 (NaN would pass every comparison, so every check)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0  # refused below, with the same words
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a tolerance: give a finite number >= 0")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = cli.ArgumentParser(prog=PREFIX, description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--rev", default="HEAD", help="git revision holding the baseline metrics (default HEAD)")
    source.add_argument("--baseline", type=Path, help="a metrics.json file to use as the baseline instead of git")
    parser.add_argument("--metrics", type=Path, default=Path(METRICS_FILE), help="metrics to check")
    parser.add_argument("--gates", type=Path, default=Path(GATES_FILE), help="gate file")
    parser.add_argument("--params", type=Path, default=Path(params.PARAMS_FILE), help="params.yaml of the run")
    parser.add_argument("--conf", type=Path, default=Path(compose.CONF_DIR), help="Hydra config directory")
    parser.add_argument("--preset", help="gate by this preset instead of detecting it from params.yaml")
    parser.add_argument("--reproduce", action="store_true", help="also require the baseline's metrics back")
    parser.add_argument(
        "--rel-tol", type=tolerance, default=1e-6, help="relative tolerance of --reproduce (non-accuracy)"
    )
    parser.add_argument("--compute", type=Path, default=Path(COMPUTE_FILE), help="compute fingerprints of the run")
    parser.add_argument(
        "--baseline-compute", type=Path, help="the baseline's compute.json (with --baseline; default: from --rev)"
    )
    parser.add_argument(
        "--drift-tol",
        type=tolerance,
        help=f"--reproduce across fingerprints: largest accuracy change accepted (default {DRIFT_TOL})",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Print the table; exit 1 after one ``FAIL`` line per missed gate (or reproduction mismatch)."""
    args = parse_args(argv)
    current = read_metrics(args.metrics)
    gates = load_gates(args.gates)
    cfg = config.load(args.params)
    preset, note = args.preset, ""
    if preset is None:
        preset = detect_preset(cfg, args.conf)
        if preset is None:
            preset, note = DEFAULT_PRESET, f"{args.params} matches no preset; gating as {DEFAULT_PRESET} (see --preset)"
    label = f"{cfg.dataset.name}/{preset} in {args.gates}"
    source = args.metrics.as_posix()
    gate = select_gate(gates, cfg.dataset.name, preset, args.gates)
    baseline: dict[str, float] | None
    if args.baseline is not None:
        baseline, old_label, why = read_metrics(args.baseline), str(args.baseline), ""
    else:
        # HEAD's metrics if any, else the gates alone (a new repository, or none); but another revision the
        # user names must exist: a typo would pass as "no baseline"
        if args.rev != "HEAD" and _git(["rev-parse", "--verify", "--quiet", f"{args.rev}^{{commit}}"], None)[0] is None:
            raise DataError(f"--rev {args.rev!r} names no commit of this repository; check it with `git log`")
        (baseline, why), old_label = git_metrics(args.rev, source), args.rev
    print(format_table(current, baseline, old_label, gate, source))
    for line in filter(None, (note, why and f"no baseline: {why}")):
        print(f"{PREFIX}: {cli.error_text(line)}")
    failures = gate_failures(current, gate, label, source)
    if args.reproduce:
        if baseline is None:
            raise DataError(f"--reproduce needs a baseline, and there is none: {why}")
        failures += reproduction(args, current, baseline, f"{old_label}:{source}", source)
    for failure in failures:
        print(f"{PREFIX}: FAIL: {terminal(failure)}", file=sys.stderr)
    if failures:
        sys.exit(1)
    checks = ", ".join(f"{m} {current[m]} >= {v}" for m, v in gate.items())
    print(terminal(f"{PREFIX}: OK: {checks} ({label})" + (f"; reproduces {old_label}" if args.reproduce else "")))


if __name__ == "__main__":
    from mnist_pipeline.cli import run

    run(main, PREFIX)
