"""The real pipeline under DVC on the real MNIST files, in a throw-away copy of the repo.

A module fixture copies what DVC needs (dvc.yaml, params.yaml, conf/, .dvc/config, .dvcignore,
src/) into ``tmp_path``, makes it a git repo, cuts ``train.epochs`` to 2, points ``DATA_MIRROR``
at the local byte-exact mirror and runs ``dvc repro`` once. Each test then leaves the copy up to
date, so they do not depend on their order. Skipped when the mirror is absent.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers.dvc_sandbox import copy_repo, real_mirror, stages_run
from mnist_pipeline.epoch_log import files, read_history
from mnist_pipeline.paths import LIVE_DIR

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DVC = BIN / "dvc"
CORE_STAGES = ["download", "prepare", "featurize", "train", "evaluate"]  # later issues may add more
LIVE_FILES = [p.as_posix() for p in files(LIVE_DIR)]
OUTPUTS = [
    "data/raw/train-images-idx3-ubyte.gz",
    "data/raw/train-labels-idx1-ubyte.gz",
    "data/raw/t10k-images-idx3-ubyte.gz",
    "data/raw/t10k-labels-idx1-ubyte.gz",
    "data/prepared/train.npz",
    "data/prepared/test.npz",
    "data/features/train.npz",
    "data/features/val.npz",
    "data/features/test.npz",
    "data/model/model.npz",
    "data/model/model.onnx",
    *LIVE_FILES,
    "reports/metrics.json",
    "reports/classification_report.json",
    "reports/classification_report.txt",
    "reports/predictions.csv",
]
# Deterministic outputs of train and evaluate (reports/timing.json holds wall-clock times, by design not).
DETERMINISTIC = [
    "data/model/model.npz",
    *LIVE_FILES,
    "reports/metrics.json",
    "reports/classification_report.json",
    "reports/predictions.csv",
    "dvc.lock",
]


@dataclass
class Pipeline:
    root: Path
    env: dict[str, str]
    first_output: str
    stages: list[str]  # dvc.yaml's stages, in file order (= pipeline order here)
    dvc_yaml: dict

    def dvc(self, *args: str) -> str:
        result = subprocess.run(
            [str(DVC), *args], cwd=self.root, env=self.env, capture_output=True, text=True, timeout=300
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{output}"
        return output

    def set_params(self, **overrides) -> None:
        path = self.root / "params.yaml"
        params = yaml.safe_load(path.read_text(encoding="utf-8"))
        for dotted, value in overrides.items():
            section, key = dotted.split(".")
            params[section][key] = value
        path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")

    def param(self, dotted: str):
        section, key = dotted.split(".")
        return yaml.safe_load((self.root / "params.yaml").read_text(encoding="utf-8"))[section][key]


def _paths(entries) -> list[str]:
    """Paths of a dvc.yaml deps/outs/metrics/plots list (entries are strings or one-key dicts)."""
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries or []]


def _overlaps(a: str, b: str) -> bool:
    a, b = a.rstrip("/"), b.rstrip("/")
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def downstream_of(dvc_yaml: dict, start: str) -> set[str]:
    """``start`` and every stage that (transitively) depends on one of its outputs."""
    stages = dvc_yaml["stages"]
    outs = {
        name: [*_paths(s.get("outs")), *_paths(s.get("metrics")), *_paths(s.get("plots"))] for name, s in stages.items()
    }
    found, frontier = {start}, [start]
    while frontier:
        produced = outs[frontier.pop()]
        for name, stage in stages.items():
            deps = _paths(stage.get("deps"))
            if name not in found and any(_overlaps(d, o) for d in deps for o in produced):
                found.add(name)
                frontier.append(name)
    return found


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    mirror = real_mirror()
    if mirror is None:
        pytest.skip("real MNIST files not found (set DATA_MIRROR or provide ../shared/datasets/mnist)")
    if not DVC.is_file():
        pytest.skip(f"dvc not installed next to {sys.executable}")
    root = tmp_path_factory.mktemp("pipeline")
    copy_repo(root)
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # `python` in dvc.yaml = this venv
        "PYTHONPATH": str(root / "src"),  # import the copy, not the editable install
        "DATA_MIRROR": str(mirror),
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(root / ".dvc-site-cache"),
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
    }
    env.pop("LOGLEVEL", None)
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "pipeline copy"]):
        subprocess.run(["git", *args], cwd=root, env=env, check=True, capture_output=True, timeout=60)
    dvc_yaml = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))
    pipe = Pipeline(root, env, "", list(dvc_yaml["stages"]), dvc_yaml)
    pipe.set_params(**{"train.epochs": 2})
    pipe.first_output = pipe.dvc("repro")
    return pipe


def test_all_stages_ran_and_produced_outputs(pipeline: Pipeline) -> None:
    ran = stages_run(pipeline.first_output)
    assert ran == pipeline.stages, pipeline.first_output
    assert [s for s in ran if s in CORE_STAGES] == CORE_STAGES
    for rel in OUTPUTS:
        path = pipeline.root / rel
        assert path.is_file() and path.stat().st_size > 0, rel
    lock = yaml.safe_load((pipeline.root / "dvc.lock").read_text(encoding="utf-8"))
    assert sorted(lock["stages"]) == sorted(pipeline.stages)
    files = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))["dataset"]["files"]
    for spec in files.values():
        data = (pipeline.root / "data/raw" / spec["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == spec["sha256"]
    assert list(read_history(pipeline.root / LIVE_DIR)["epoch"]) == [1, 2]


def test_test_accuracy_after_two_epochs(pipeline: Pipeline) -> None:
    metrics = json.loads((pipeline.root / "reports/metrics.json").read_text(encoding="utf-8"))
    assert metrics["test"]["accuracy"] > 0.95
    assert metrics["val"]["accuracy"] > 0.95
    predictions = (pipeline.root / "reports/predictions.csv").read_text(encoding="utf-8").splitlines()
    assert predictions[0] == "actual,predicted" and len(predictions) == 1 + 10000


def test_onnx_export_predicts_the_test_set_exactly_as_evaluate_did(pipeline: Pipeline) -> None:
    import onnxruntime as ort

    from mnist_pipeline import idx
    from mnist_pipeline.model_file import load_network
    from mnist_pipeline.normalization import normalize

    pixels = idx.read_gz(pipeline.root / "data/raw/t10k-images-idx3-ubyte.gz")  # raw 0-255, as a server gets them
    model = (pipeline.root / "data/model/model.onnx").read_bytes()
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    proba, predicted = session.run(None, {"pixels": pixels.astype(np.float32)})

    rows = (pipeline.root / "reports/predictions.csv").read_text(encoding="utf-8").splitlines()[1:]
    np.testing.assert_array_equal(predicted, [int(row.split(",")[1]) for row in rows])  # all 10,000
    net, meta = load_network(pipeline.root / "data/model/model.npz")
    np.testing.assert_allclose(
        proba, net.predict_proba(normalize(pixels, meta["mean"], meta["std"])), atol=1e-5, rtol=0
    )
    pipeline.dvc("repro", "--force", "--single-item", "export")
    assert (pipeline.root / "data/model/model.onnx").read_bytes() == model  # same model, same bytes


def test_second_repro_runs_no_stage(pipeline: Pipeline) -> None:
    lock = (pipeline.root / "dvc.lock").read_bytes()
    output = pipeline.dvc("repro")
    assert stages_run(output) == [], output
    assert "didn't change" in output or "up to date" in output, output
    assert (pipeline.root / "dvc.lock").read_bytes() == lock


def test_changing_train_lr_reruns_only_train_and_evaluate(pipeline: Pipeline) -> None:
    before = {rel: (pipeline.root / rel).read_bytes() for rel in ("data/features/train.npz", "data/model/model.npz")}
    pipeline.set_params(**{"train.lr": pipeline.param("train.lr") * 0.5})
    output = pipeline.dvc("repro")
    expected = [s for s in pipeline.stages if s in downstream_of(pipeline.dvc_yaml, "train")]
    assert {"train", "evaluate"} <= set(expected) and not {"download", "prepare", "featurize"} & set(expected)
    assert stages_run(output) == expected, output
    assert (pipeline.root / "data/features/train.npz").read_bytes() == before["data/features/train.npz"]
    assert (pipeline.root / "data/model/model.npz").read_bytes() != before["data/model/model.npz"]


def test_forced_rerun_with_same_params_is_bit_identical(pipeline: Pipeline) -> None:
    before = {rel: (pipeline.root / rel).read_bytes() for rel in DETERMINISTIC}
    output = pipeline.dvc("repro", "--force", "--single-item", "train", "evaluate")
    assert stages_run(output) == ["train", "evaluate"], output
    for rel in DETERMINISTIC:
        assert (pipeline.root / rel).read_bytes() == before[rel], f"{rel} changed on an identical rerun"
