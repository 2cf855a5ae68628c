"""Hostile text through every renderer: Markdown, figures, text reports and terminal lines.

Names and values come from params, model files, metrics files and HTTP servers. Each payload of
:mod:`helpers.hostile_text` must come out as text: Markdown renders it as itself (checked with a
real renderer, HTML enabled), and no line printed or written for a terminal holds a control or
bidirectional character, a newline inside a record included. The report's own tables and figures
are checked in ``tests/stages/test_report.py``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import hostile_text
from helpers.capped import python_module, run_capped
from helpers.http_faults import status
from mnist_pipeline import text
from mnist_pipeline.metrics import classification_report, format_report
from mnist_pipeline.mlp.network import Network
from mnist_pipeline.model_file import save_network

pytestmark = pytest.mark.timeout(120)


def assert_terminal_safe(output: str) -> None:
    for char in hostile_text.CONTROLS:
        assert char not in output, f"{char!r} reached the terminal:\n{output!r}"


@pytest.mark.parametrize("payload", sorted(hostile_text.PAYLOADS))
def test_markdown_escaping_renders_each_payload_as_itself(payload) -> None:
    raw = hostile_text.PAYLOADS[payload]
    page = hostile_text.Rendered(f"# {text.markdown(raw)}\n\n| a | b |\n|---|---|\n| {text.markdown(raw)} | x |\n")

    assert page.active() == []
    assert [tag for tag, _ in page.tags] == ["h1", "table", "thead", "tr", "th", "th", "tbody", "tr", "td", "td"]
    assert page.headings == [text.terminal(raw)]
    assert page.cells[1] == [text.terminal(raw), "x"]


def test_terminal_escaping_shows_controls_and_keeps_the_rest() -> None:
    assert text.terminal("a\nb\x1b[31mc\x07\u202ed\x7f\x9b é 7 \\") == "a\\nb\\x1b[31mc\\x07\\u202ed\\x7f\\x9b é 7 \\"
    assert text.terminal_lines("one\x1b\ntwo") == "one\\x1b\ntwo"


def test_text_classification_report_keeps_one_line_per_class() -> None:
    names = hostile_text.class_names()
    y = np.arange(40) % 10
    report = format_report(classification_report(y, y, names), names)

    assert_terminal_safe(report)
    lines = report.splitlines()
    assert len(lines) == 1 + 1 + 10 + 1 + 3  # header, blank, classes, blank, accuracy and the two averages
    for name, line in zip(names, lines[2:12], strict=True):
        assert line.strip().startswith(text.terminal(name))


@pytest.fixture
def hostile_model(tmp_path: Path) -> Path:
    path = tmp_path / "model.npz"
    net = Network([784, 16, 10], "relu", "he_normal", np.random.default_rng(0))
    meta = {"class_names": hostile_text.class_names(), "image_shape": [28, 28]}
    save_network(path, net, {**meta, "dataset": "mnist", "normalize": "scale", "mean": 0.0, "std": 1.0})
    return path


def test_predict_prints_hostile_file_and_class_names_escaped(tmp_path, hostile_model) -> None:
    image = tmp_path / "digit\x1b]0;pwned\x07\n.png"
    Image.fromarray(np.eye(28, dtype=np.uint8) * 255).save(image, format="PNG")
    missing = tmp_path / "gone\x1b[2J.png"

    run = run_capped(python_module("mnist_pipeline.predict", "--model", hostile_model, image, missing), tmp_path)

    assert run.returncode == 1, run.stderr
    assert_terminal_safe(run.stdout + run.stderr)
    assert run.stdout.startswith(text.terminal(str(image)) + ": ")
    assert len(run.stdout.splitlines()) == 1  # one line per image
    assert text.terminal(str(missing)) in run.stderr
    assert set(
        json.loads(
            run_capped(
                python_module("mnist_pipeline.predict", "--model", hostile_model, "--json", image), tmp_path
            ).stdout
        )[0]["probabilities"]
    ) == set(hostile_text.class_names())  # JSON keeps the names exact


def test_download_shows_a_hostile_reason_phrase_escaped(tiny_workspace, fault_server) -> None:
    reason = "Busy\x1b]0;pwned\x07\x1b[31m"  # retitles the window and turns the terminal red if printed raw
    for spec in tiny_workspace.mnist.paths.values():
        fault_server.route(f"/{spec.name}", status(503, reason))
    shutil.rmtree(tiny_workspace.root / "data" / "raw")
    tiny_workspace.write_params(**{"dataset.mirrors": [fault_server.url("/")], "download.retries": 1})

    run = run_capped(python_module("mnist_pipeline.stages.download"), tiny_workspace.root)

    assert run.returncode == 1, run.stderr
    assert_terminal_safe(run.stderr)
    assert "HTTP 503 Busy\\x1b]0;pwned\\x07\\x1b[31m" in run.error_lines()[0]
    assert sum("attempt" in line and "\\x1b]0;pwned" in line for line in run.stderr.splitlines()) >= 1


def test_check_metrics_prints_hostile_metric_names_escaped(tmp_path, repo_root) -> None:
    shutil.copytree(repo_root / "conf", tmp_path / "conf")
    shutil.copy(repo_root / "params.yaml", tmp_path)
    metrics = {"test": {"accuracy": 0.99, "x\x1b]0;pwned\x07\nFAKE OK": 1.0}}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")

    run = run_capped(python_module("mnist_pipeline.check_metrics", "--metrics", "metrics.json"), tmp_path)

    assert_terminal_safe(run.stdout + run.stderr)
    assert "x\\x1b]0;pwned\\x07\\nFAKE OK" in run.stdout
    assert not any(line.startswith("FAKE OK") for line in run.stdout.splitlines())


def test_argument_errors_and_verbose_tracebacks_show_arguments_escaped(tmp_path, repo_root) -> None:
    shutil.copytree(repo_root / "conf", tmp_path / "conf")
    shutil.copy(repo_root / "params.yaml", tmp_path)
    (tmp_path / "metrics.json").write_text('{"test": {"accuracy": 0.99}}', encoding="utf-8")
    hostile = "x\x1b]0;pwned\x07\u202e"
    check = ("mnist_pipeline.check_metrics", "--metrics", "metrics.json")

    bad_option = run_capped(python_module(*check, f"--{hostile}"), tmp_path)
    reproduce = run_capped(
        python_module(*check, "--reproduce", "--baseline", "metrics.json", "--compute", hostile), tmp_path
    )
    verbose = run_capped(python_module("mnist_pipeline.predict", "--model", hostile, "x.png", "--verbose"), tmp_path)

    assert bad_option.returncode == 2 and bad_option.stdout == ""
    assert (
        bad_option.stderr == f"error: check-metrics: unrecognized arguments: --{text.terminal(hostile)}; see --help\n"
    )
    assert f"no compute fingerprint in {text.terminal(hostile)}" in reproduce.stdout
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr  # --verbose shows it, escaped
    for run in (bad_option, reproduce, verbose):
        assert_terminal_safe(run.stdout + run.stderr)
