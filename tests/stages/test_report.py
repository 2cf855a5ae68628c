"""Stage report: report.md numbers equal the run's outputs; figures valid and byte-stable; DVC wiring."""

from __future__ import annotations

import html
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from helpers import hostile_text
from mnist_pipeline import config, figures, paths
from mnist_pipeline.errors import DataError
from mnist_pipeline.metrics import classification_report
from mnist_pipeline.stages import evaluate, featurize, prepare, report, train
from mnist_pipeline.text import terminal

NAMES = [str(i) for i in range(10)]


def md_table(text: str, heading: str) -> dict[str, list[str]]:
    """Rows of the first markdown table after ``## heading``: first cell -> the other cells, as rendered.

    Cells are split at unescaped pipes; backslash escapes and HTML entities are undone as a Markdown
    renderer does (the hostile-text tests render with a real one).
    """
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [re.split(r"(?<!\\)\|", line)[1:-1] for line in section.splitlines() if line.startswith("|")]
    shown = [[html.unescape(re.sub(r"\\(.)", r"\1", c.strip())) for c in cells] for cells in rows[2:]]
    return {cells[0]: cells[1:] for cells in shown}


FINGERPRINT = {"blas": "openblas", "blas_kernel": "Haswell", "blas_threads": 2, "numpy_simd": ["X86_V3"]}


def synthetic_run(timing: dict | None, names: list[str] = NAMES) -> report.RunOutputs:
    rng = np.random.default_rng(0)
    y_true = np.arange(200) % 10
    proba = rng.dirichlet(np.ones(10) * 0.3, 200).astype(np.float32)
    y_pred = proba.argmax(axis=1)
    epochs = np.arange(1, 4)
    return report.RunOutputs(
        train_log={
            "epoch": epochs,
            "train_loss": 1 / epochs,
            "val_loss": 1.1 / epochs,
            "train_acc": 1 - 0.1 / epochs,
            "val_acc": np.array([0.5, 0.7, 0.6]),
        },
        metrics={
            "test": {"accuracy": float(np.mean(y_pred == y_true)), "loss": 1.23456789, "macro_f1": 0.13579},
            "val": {"accuracy": 0.6, "loss": 0.98765},
        },
        class_report=classification_report(y_true, y_pred, names),
        y_true=y_true,
        proba=proba,
        images=rng.random((200, 28, 28)),
        first_weights=rng.normal(size=(784, 16)).astype(np.float32),
        hidden_layers=1,
        weights_epoch=3,
        timing=timing,
        compute={"train": FINGERPRINT, "evaluate": {**FINGERPRINT, "blas_threads": 1}},
    )


@pytest.mark.parametrize(
    ("timing", "cells"),
    [(None, ("n/a", "n/a")), ({"train_seconds": 12.5, "seconds_per_epoch": 4.167}, ("12.5", "4.167"))],
)
def test_markdown_shows_the_run_numbers(params_dict, timing, cells) -> None:
    cfg = config.from_dict(params_dict)
    run = synthetic_run(timing)
    text = report.render_markdown(cfg, run)
    head = md_table(text, "Headline metrics")
    assert float(head["test accuracy"][0]) == pytest.approx(run.metrics["test"]["accuracy"], abs=5e-5)
    assert head["test loss"] == ["1.2346"] and head["test macro F1"] == ["0.1358"]
    assert head["validation accuracy"] == ["0.6000"] and head["validation loss"] == ["0.9877"]
    assert head["weights from epoch"] == ["3 of 3 (the last)"]
    assert head["max validation accuracy"] == ["0.7000 at epoch 2"]
    assert (head["train seconds"][0], head["seconds per epoch"][0]) == cells
    per_class = md_table(text, "Per-class results (test set)")
    assert list(per_class) == [*NAMES, "macro avg", "weighted avg"]
    for name, cells_ in per_class.items():
        r = run.class_report[name]
        assert [float(c) for c in cells_] == pytest.approx(
            [r["precision"], r["recall"], r["f1-score"], r["support"]], abs=5e-5
        )
    assert md_table(text, "Compute fingerprint") == {
        "blas": ["openblas", "openblas"],
        "blas_kernel": ["Haswell", "Haswell"],
        "blas_threads": ["2", "1"],
        "numpy_simd": ['["X86_V3"]', '["X86_V3"]'],
    }
    files = md_table(text, "Dataset")
    for spec in cfg.dataset.files.values():
        assert files[spec.name] == [str(spec.size), spec.sha256]
    for name in report.FIGURE_TITLES:
        assert f"](figures/{name}.png)" in text
    assert "make repro" in text and text.endswith("\n") and not text.endswith("\n\n")


DATASET_NAMES = ["mnist<img src=x onerror=alert(1)> | **b**", "# pwned", "1. listed", "    indented", "x ###"]


@pytest.mark.parametrize("dataset", DATASET_NAMES)  # a file name: no "/"
def test_hostile_names_render_as_text_in_every_table_and_heading(params_dict, dataset) -> None:
    names = hostile_text.class_names()
    params_dict["dataset"].update(name=dataset, class_names=names)
    params_dict["preset"]["name"] = hostile_text.PAYLOADS["html"] + hostile_text.PAYLOADS["terminal"]
    cfg = config.from_dict(params_dict)
    text = report.render_markdown(cfg, synthetic_run(None, names))

    page = hostile_text.Rendered(text)
    assert page.active() == []
    assert page.headings[0] == f"Run report: {cfg.dataset.name}"
    assert any(p.startswith(f"Dataset {cfg.dataset.name}: 28x28 images") for p in page.paragraphs)
    blocks = [tag for tag, _ in page.tags if tag in ("h1", "ol", "ul", "pre", "blockquote")]
    assert blocks == ["h1", "pre"]  # the title and the `make repro` code block, nothing a name opened
    width = {len(row) for row in page.cells}
    assert width == {2, 3, 5}  # every row of each table keeps its columns: no pipe broke out
    shown = {row[0]: row[1:] for row in page.cells}
    assert [terminal(n) for n in names] == [row[0] for row in page.cells if row[0] in map(terminal, names)]
    assert f"name={terminal(cfg.preset.name)}" in shown["preset"][0]
    assert not any(c in text for c in hostile_text.CONTROLS)


@pytest.mark.filterwarnings("ignore:constrained_layout not applied")  # names this long do not fit; drawn all the same
def test_class_names_with_a_dollar_sign_draw_as_text(params_dict) -> None:
    names = hostile_text.class_names()  # "$\\frac{$" made matplotlib's mathtext parser raise
    params_dict["dataset"]["class_names"] = names
    params_dict["report"].update(dpi=30, misclassified=4, max_units=9)
    pngs = report.render_figures(config.from_dict(params_dict), synthetic_run(None, names))
    assert set(pngs) == set(report.FIGURE_TITLES)


def test_render_figures_makes_every_figure(params_dict) -> None:
    params_dict["report"].update(dpi=30, misclassified=4, max_units=9)
    pngs = report.render_figures(config.from_dict(params_dict), synthetic_run(None))
    assert set(pngs) == set(report.FIGURE_TITLES) == set(figures.SIZES)
    for name, png in pngs.items():
        w, h = figures.SIZES[name]
        assert Image.open(io.BytesIO(png)).size == (round(w * 30), round(h * 30))


def _run_pipeline(ws, stages=(prepare, featurize, train, evaluate, report)) -> None:
    ws.write_params(**{"report.dpi": 40})
    for stage in stages:
        stage.main()


def test_main_writes_deterministic_report_matching_metrics(tiny_workspace) -> None:
    _run_pipeline(tiny_workspace)
    outputs = [paths.REPORT_FILE, *(paths.FIGURES_DIR / f"{n}.png" for n in report.FIGURE_TITLES)]
    first = {p: p.read_bytes() for p in outputs}
    for name in report.FIGURE_TITLES:
        image = Image.open(paths.FIGURES_DIR / f"{name}.png")
        image.load()
        w, h = figures.SIZES[name]
        assert image.format == "PNG" and image.size == (round(w * 40), round(h * 40))
    metrics = json.loads(paths.METRICS_FILE.read_text())
    head = md_table(paths.REPORT_FILE.read_text(), "Headline metrics")
    for row, value in [
        ("test accuracy", metrics["test"]["accuracy"]),
        ("test loss", metrics["test"]["loss"]),
        ("test macro F1", metrics["test"]["macro_f1"]),
        ("validation accuracy", metrics["val"]["accuracy"]),
        ("validation loss", metrics["val"]["loss"]),
    ]:
        assert float(head[row][0]) == pytest.approx(value, abs=5e-5), row
    timing = json.loads(paths.TIMING_FILE.read_text())
    assert float(head["train seconds"][0]) == timing["train_seconds"]
    report.main()
    assert {p: p.read_bytes() for p in outputs} == first  # byte-identical second render


CORRUPTIONS = {
    # file: text written over it, and what the one-line error says
    "metrics-string": (paths.METRICS_FILE, '{"test": {"accuracy": "high", "loss": 1, "macro_f1": 1}}', "test.accuracy"),
    "metrics-list": (paths.METRICS_FILE, "[]", "must hold a JSON object"),
    "metrics-empty-sections": (paths.METRICS_FILE, '{"test": {}, "val": {}}', "test.accuracy is None"),
    "class-report-support": (paths.CLASSIFICATION_REPORT_FILE, '{"0": {"support": "many"}}', "0.precision is None"),
    "timing-list": (paths.TIMING_FILE, "[1, 2]", "must hold a JSON object"),
    "predictions-header": (paths.PREDICTIONS_FILE, "a,b\n1,2\n", "KeyError: 'actual'"),
    "predictions-text": (paths.PREDICTIONS_FILE, "actual,predicted\nabc,1\n", "ValueError: invalid literal"),
    "predictions-more-rows": (paths.PREDICTIONS_FILE, "actual,predicted\n" + "1,1\n" * 100_000, "more rows than the"),
    "predictions-huge-field": (paths.PREDICTIONS_FILE, "actual,predicted\n" + "1" * 200_000 + ",1\n", "field larger"),
    "live-log-huge-field": (
        paths.LIVE_DIR / "plots" / "metrics" / "lr.tsv",
        "step\tlr\n1\t" + "9" * 200_000 + "\n",
        "field",
    ),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_main_refuses_malformed_outputs_in_one_line_leaving_the_report(tiny_workspace, case) -> None:
    _run_pipeline(tiny_workspace)
    before = paths.REPORT_FILE.read_bytes()
    path, text, needle = CORRUPTIONS[case]
    path.write_text(text, encoding="utf-8")

    with pytest.raises(DataError) as err:
        report.main()

    assert str(path) in str(err.value) and needle in str(err.value)
    assert "\n" not in str(err.value)
    assert paths.REPORT_FILE.read_bytes() == before


def test_main_refuses_predictions_from_another_model(tiny_workspace) -> None:
    _run_pipeline(tiny_workspace, (prepare, featurize, train, evaluate))
    lines = paths.PREDICTIONS_FILE.read_text().splitlines()
    actual, predicted = lines[1].split(",")
    lines[1] = f"{actual},{(int(predicted) + 1) % 10}"
    paths.PREDICTIONS_FILE.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="predictions.csv does not match"):
        report.main()


def test_dvc_yaml_declares_the_report_stage(repo_root: Path) -> None:
    dvc = yaml.safe_load((repo_root / "dvc.yaml").read_text())
    stage = dvc["stages"]["report"]
    pngs = [f"{paths.FIGURES_DIR.as_posix()}/{n}.png" for n in report.FIGURE_TITLES]
    outs = {next(iter(o)): o[next(iter(o))] for o in stage["outs"]}
    assert set(outs) == {paths.REPORT_FILE.as_posix(), *pngs}
    assert all(o == {"cache": False, "persist": True} for o in outs.values())  # git-tracked, kept on failure
    assert set(pngs) <= {p for p in dvc["plots"] if isinstance(p, str)}  # image plots
    read = [paths.MODEL_FILE, paths.FEATURES_DIR / "test.npz", paths.LIVE_DIR, paths.METRICS_FILE]
    read += [paths.CLASSIFICATION_REPORT_FILE, paths.PREDICTIONS_FILE]
    assert {p.as_posix() for p in read} <= set(stage["deps"])
    assert "report" in stage["params"] and "evaluate.batch_size" in stage["params"]
    assert not {"reports/report.md", *pngs} & {d for s in dvc["stages"].values() for d in s.get("deps", [])}


@pytest.mark.slow
def test_dvc_reruns_only_report_for_a_report_option_and_plots_show(tiny_workspace, repo_root: Path) -> None:
    """Real `dvc repro` in a scratch repo on the tiny MNIST: caching and `dvc plots show`."""
    ws = tiny_workspace
    for name in ("dvc.yaml", "pyproject.toml"):
        shutil.copy2(repo_root / name, ws.root / name)
    shutil.copytree(repo_root / "src", ws.root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.rmtree(ws.root / "data")
    ws.write_params(**{"report.dpi": 30})
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "DATA_MIRROR": str(ws.mnist.dir), "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(ws.root / "src")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"

    def sh(*args: str) -> str:
        done = subprocess.run(args, cwd=ws.root, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + done.stderr

    sh(str(bin_dir / "dvc"), "init", "--no-scm", "-q")
    assert "Running stage 'report'" in sh(str(bin_dir / "dvc"), "repro")
    ws.write_params(**{"report.dpi": 20})
    out = sh(str(bin_dir / "dvc"), "repro")
    assert [line for line in out.splitlines() if line.startswith("Running stage")] == ["Running stage 'report':"]
    assert Image.open(ws.root / "reports/figures/weights.png").size == (200, 180)
    sh(str(bin_dir / "dvc"), "plots", "show", "-o", "plots_html")
    html = (ws.root / "plots_html" / "index.html").read_text()
    assert all(f"reports_figures_{n}.png" in html for n in report.FIGURE_TITLES)
    assert html.count("<img") == len(report.FIGURE_TITLES) and "vega" in html
