"""The plots of dvc.yaml: what they show, that DVC renders them, and that a browser draws every one.

``dvc plots show`` (and VS Code, Studio) render the definitions under ``plots:`` over the committed
outputs: DVCLive's per-epoch TSVs in ``dvclive/`` and evaluate's ``reports/predictions.csv``. The
last test opens DVC's HTML in headless Chromium (Debian's ``chromium``, which ``.ci/run`` installs)
with every network request refused: the page template of ``.dvc/config`` carries Vega inline.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml
from PIL import Image

from helpers.dvc_sandbox import DVC, REPO, sandbox_env
from helpers.http_faults import ok
from helpers.services import unavailable
from mnist_pipeline import plots_template
from mnist_pipeline.epoch_log import files, metric_file
from mnist_pipeline.errors import DataError
from mnist_pipeline.paths import FIGURES_DIR, LIVE_DIR, PREDICTIONS_FILE

DVC_YAML = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))
PLOTS = {next(iter(p)): next(iter(p.values())) for p in DVC_YAML["plots"] if isinstance(p, dict)}  # title -> def
IMAGES = [p for p in DVC_YAML["plots"] if isinstance(p, str)]
EPOCH_PLOTS = {"Loss per epoch": ("train_loss", "val_loss"), "Accuracy per epoch": ("train_acc", "val_acc")}


def _y_files(plot: dict) -> set[str]:
    return set(plot["y"])


def test_epoch_plots_draw_dvclive_metrics_against_the_epoch() -> None:
    for title, keys in EPOCH_PLOTS.items():
        plot = PLOTS[title]
        assert _y_files(plot) == {metric_file(LIVE_DIR, k).as_posix() for k in keys}
        assert plot["x"] == "step" and plot["x_label"] == "epoch"  # DVCLive's step is the epoch number
    assert PLOTS["Learning rate"]["y"] == {metric_file(LIVE_DIR, "lr").as_posix(): "lr"}
    assert "learning rate" in PLOTS["Learning rate"]["y_label"]


def test_the_loss_label_says_train_is_the_objective_and_val_is_cross_entropy() -> None:
    label = PLOTS["Loss per epoch"]["y_label"]
    assert re.search(r"train - the training objective", label) and re.search(r"val - cross-entropy", label)


def test_confusion_matrix_in_counts_and_normalized() -> None:
    confusion = {p["template"]: p for p in PLOTS.values() if p.get("template", "").startswith("confusion")}
    assert set(confusion) == {"confusion", "confusion_normalized"}
    for plot in confusion.values():
        assert plot["x"] == "predicted" and plot["y"] == {PREDICTIONS_FILE.as_posix(): "actual"}


def test_every_plot_reads_an_output_of_a_stage() -> None:
    outs = {next(iter(o)) if isinstance(o, dict) else o for s in DVC_YAML["stages"].values() for o in s.get("outs", [])}
    outs |= {next(iter(o)) for s in DVC_YAML["stages"].values() for o in s.get("metrics", [])}
    read = {f for plot in PLOTS.values() for f in _y_files(plot)} | set(IMAGES)
    for path in read:
        assert any(path == out or path.startswith(out + "/") for out in outs), path
    assert set(IMAGES) == {f"{FIGURES_DIR.as_posix()}/{p.stem}.png" for p in (REPO / FIGURES_DIR).glob("*.png")}


def test_titles_are_safe_as_html_ids() -> None:
    """DVC's HTML uses each title as an element id inside a quoted selector: a quote or colon breaks it."""
    for title in PLOTS:
        assert not set(title) & set("'\"\\:#"), title


@pytest.fixture(scope="module")
def plots_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git + DVC repo holding dvc.yaml and the committed files the plots read, nothing else."""
    root = tmp_path_factory.mktemp("plots") / "repo"
    (root / ".dvc").mkdir(parents=True)
    shutil.copy2(REPO / ".dvc" / "config", root / ".dvc" / "config")
    shutil.copytree(REPO / ".dvc" / "plots", root / ".dvc" / "plots")  # the offline page template
    shutil.copy2(REPO / "dvc.yaml", root / "dvc.yaml")
    for rel in [*files(LIVE_DIR), PREDICTIONS_FILE, *map(Path, IMAGES)]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, root / rel)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True, timeout=60)
    return root


def _dvc(root: Path, *args: str) -> str:
    result = subprocess.run(
        [str(DVC), *args], cwd=root, env=sandbox_env(root, None), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_dvc_plots_show_json_renders_every_plot(plots_repo: Path) -> None:
    shown = json.loads(_dvc(plots_repo, "plots", "show", "--json"))
    assert "errors" not in shown, shown["errors"]
    assert set(shown["data"]) == set(PLOTS) | set(IMAGES)
    epochs = len((REPO / metric_file(LIVE_DIR, "lr")).read_text(encoding="utf-8").splitlines()) - 1
    for title in [*EPOCH_PLOTS, "Learning rate"]:
        (plot,) = shown["data"][title]
        assert plot["type"] == "vega" and len(plot["content"]["data"]["values"]) == epochs * len(PLOTS[title]["y"])
        assert plot["content"]["encoding"]["x"]["title"] == "epoch"


@pytest.mark.slow
def test_every_plot_is_drawn_in_headless_chromium(plots_repo: Path, tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        unavailable("needs Debian's chromium; apt-get install chromium")
    _dvc(plots_repo, "plots", "show", "-o", str(tmp_path / "html"))
    page = tmp_path / "html" / "index.html"
    assert not re.search(r"<script[^>]+src=", page.read_text(encoding="utf-8"))  # every script is inline
    browser = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    browser += ["--virtual-time-budget=20000", "--window-size=1400,2400"]
    browser += ["--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND"]  # no network at all
    dom = subprocess.run(
        [*browser, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    # vega-embed draws each Vega plot on a canvas; a plot it cannot parse or embed leaves none.
    assert dom.count("<canvas") == len(PLOTS), dom[:2000]
    assert len(re.findall(r"<img src=\"static/", dom)) == len(IMAGES)  # (vega-embed's own code holds an "<img")
    for title in PLOTS:
        assert f'id="{re.sub(r"[^A-Za-z0-9_-]", "_", title)}"' in dom, title
    shot = tmp_path / "plots.png"
    subprocess.run([*browser, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=True)
    with Image.open(shot) as image:
        assert image.size == (1400, 2400)
        colors = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colors is not None and len(colors) > 1000  # lines, heatmaps and figures, not a blank page


def _tarball(package: str, js: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tgz:
        for name, text in ((f"package/build/{package}.min.js", js), ("package/LICENSE", "BSD-3-Clause, the text")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tgz.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_the_template_generator_checks_each_tarball_and_keeps_scripts_closed(fault_server) -> None:
    js = 'var s = "</script><script>alert(1)</SCRIPT >";'
    tarball = _tarball("vega", js)
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()
    fault_server.route("/vega/-/vega-5.20.2.tgz", ok(tarball), ok(tarball))

    data = plots_template.fetch("vega", "5.20.2", integrity, fault_server.url(""))
    element = plots_template.script("vega", "5.20.2", data)
    with pytest.raises(DataError, match="not the pinned sha512-AAAA"):
        plots_template.fetch("vega", "5.20.2", "sha512-AAAA", fault_server.url(""))

    assert element.count("</script") == 1 and element.endswith("</script>")  # the payload cannot close it
    assert 'var s = "<\\/script><script>alert(1)<\\/SCRIPT >";' in element and "BSD-3-Clause, the text" in element


def test_the_configured_template_is_the_pinned_libraries_inline() -> None:
    config = (REPO / ".dvc" / "config").read_text(encoding="utf-8")
    assert re.search(r"^\[plots\]\n\s+html_template = plots/offline.html$", config, re.MULTILINE)
    page = (REPO / ".dvc" / "plots" / "offline.html").read_text(encoding="utf-8")
    assert page.count("{plot_divs}") == 1 and "{scripts}" not in page  # DVC's CDN scripts go nowhere
    banners = re.findall(r"/\*! ([\w-]+@[\d.]+) \(npm\)", page)
    assert banners == [f"{p}@{v}" for p, v, _ in plots_template.PACKAGES]
    assert page.count("Redistribution and use in source and binary forms") == 3  # each BSD licence
    assert not re.search(r"<script[^>]+src=", page)
