"""A throw-away copy of the repo as its own git + DVC repository, for tests that run ``dvc``.

:func:`make_sandbox` copies what DVC needs (dvc.yaml, params.yaml, conf/, .dvc/config, src/; see
:func:`copy_repo`, which the end-to-end and kill tests use too) into a directory, optionally adds
an experiment preset that conf/config.yaml selects by default (so plain ``dvc exp run`` keeps it),
recomposes params.yaml, and commits. Every command runs with this venv's ``python``/``dvc`` first
on PATH and the copy's ``src/`` on PYTHONPATH, isolated from the user's DVC and git configuration.
Nothing here touches the real workspace.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import yaml

from helpers.tiny_mnist import write_tiny_mnist
from helpers.tune_space import TINY_SPACE

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DVC = BIN / "dvc"
PRESET = "sandbox"  # conf/experiment/sandbox.yaml, selected by the copy's conf/config.yaml
DEFAULT_MIRROR = REPO.parent / "shared" / "datasets" / "mnist"


def real_mirror() -> Path | None:
    """Directory with the real MNIST files: ``$DATA_MIRROR`` if it is a directory, else ../shared/datasets/mnist."""
    for candidate in (os.environ.get("DATA_MIRROR"), DEFAULT_MIRROR):
        if candidate and (Path(candidate) / "train-images-idx3-ubyte.gz").is_file():
            return Path(candidate)
    return None


def stages_run(output: str) -> list[str]:
    """The stages whose command ``dvc repro`` / ``dvc exp run`` printed in ``output``, in order."""
    return re.findall(r"Running stage '([^']+)'", output)


@dataclass
class Sandbox:
    root: Path
    env: dict[str, str]

    def run(self, *cmd: str | Path, check: bool = True, timeout: float = 300, cwd: Path | None = None) -> str:
        """Run ``cmd`` in the sandbox; return stdout + stderr; on ``check`` assert exit status 0."""
        result = subprocess.run(
            [str(c) for c in cmd],
            cwd=cwd or self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        output = result.stdout + result.stderr
        if check:
            assert result.returncode == 0, f"{' '.join(map(str, cmd))} exited {result.returncode}:\n{output}"
        return output

    def dvc(self, *args: str, **kwargs: Any) -> str:
        return self.run(DVC, *args, **kwargs)

    def git(self, *args: str, **kwargs: Any) -> str:
        return self.run("git", *args, **kwargs)

    def python(self, *args: str, **kwargs: Any) -> str:
        return self.run(sys.executable, *args, **kwargs)

    def commit(self, message: str) -> None:
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)

    def read_json(self, rel: str) -> Any:
        return json.loads((self.root / rel).read_text(encoding="utf-8"))

    def params(self) -> dict:
        return yaml.safe_load((self.root / "params.yaml").read_text(encoding="utf-8"))

    def lock_outs(self) -> list[str]:
        """Every output path that dvc.lock records."""
        lock = yaml.safe_load((self.root / "dvc.lock").read_text(encoding="utf-8"))
        return sorted(out["path"] for stage in lock["stages"].values() for out in stage.get("outs", []))

    def outputs(self) -> dict[str, bytes]:
        """Every file under every output path of dvc.lock, by relative path."""
        found = {}
        for out in self.lock_outs():
            path = self.root / out
            for file in [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()):
                found[file.relative_to(self.root).as_posix()] = file.read_bytes()
        return found

    def wait_for_workers(self, timeout: float = 60) -> None:
        """Wait for DVC queue workers started in this sandbox to exit (they linger a few seconds)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._workers():
            time.sleep(0.5)
        for proc in self._workers():  # still there: stop the ones this sandbox started
            proc.terminate()

    def _workers(self) -> list[psutil.Process]:
        found = []
        for proc in psutil.process_iter(["cwd", "cmdline"]):
            cwd, cmdline = proc.info.get("cwd") or "", proc.info.get("cmdline") or []
            if cwd.startswith(str(self.root)) and any("dvc" in part for part in cmdline):
                found.append(proc)
        return found


def sandbox_env(root: Path, data_mirror: Path | str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATA_MIRROR", "LOGLEVEL", "PYTHONPATH")}
    env.update(
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # `python` in dvc.yaml = this venv
        PYTHONPATH=str(root / "src"),  # import the copy, not the editable install
        DVC_NO_ANALYTICS="1",
        DVC_SITE_CACHE_DIR=str(root.parent / f"{root.name}-dvc-site"),
        DVC_GLOBAL_CONFIG_DIR=str(root.parent / f"{root.name}-dvc-global"),
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="test",
        GIT_AUTHOR_EMAIL="test@example.com",
        GIT_COMMITTER_NAME="test",
        GIT_COMMITTER_EMAIL="test@example.com",
    )
    if data_mirror is not None:
        env["DATA_MIRROR"] = str(data_mirror)
    return env


def copy_repo(dest: Path) -> None:
    """Copy what DVC needs to run the pipeline (dvc.yaml, params.yaml, conf/, .dvc/config, src/) into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"):
        shutil.copy2(REPO / name, dest / name)
    (dest / ".dvc").mkdir()
    for name in ("config", ".gitignore"):
        if (REPO / ".dvc" / name).exists():
            shutil.copy2(REPO / ".dvc" / name, dest / ".dvc" / name)
    shutil.copytree(REPO / ".dvc" / "plots", dest / ".dvc" / "plots")  # the page template .dvc/config names
    shutil.copytree(REPO / "conf", dest / "conf")
    shutil.copytree(REPO / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))


def tiny_dataset_yaml(files: dict[str, dict]) -> dict:
    """A conf/dataset option for the tiny synthetic MNIST (no mirrors: DATA_MIRROR supplies the files)."""
    return {
        "name": "tiny",
        "mirrors": [],
        "files": files,
        "image_shape": [28, 28],
        "class_names": [str(d) for d in range(10)],
    }


def make_sandbox(
    root: Path,
    preset: dict | None = None,
    datasets: dict[str, dict] | None = None,
    data_mirror: Path | str | None = None,
) -> Sandbox:
    """Copy the repo into ``root`` and commit it.

    ``preset`` (a ``# @package _global_`` mapping, ``defaults`` allowed) becomes
    conf/experiment/sandbox.yaml and conf/config.yaml's default experiment; ``datasets`` adds
    conf/dataset/<name>.yaml options; ``data_mirror`` sets DATA_MIRROR for every command.
    """
    copy_repo(root)
    for name, body in (datasets or {}).items():
        (root / "conf" / "dataset" / f"{name}.yaml").write_text(yaml.safe_dump(body, sort_keys=False), "utf-8")
    if preset is not None:
        preset = {**preset, "preset": {"name": PRESET}}  # as every preset of conf/experiment/ names itself
        text = "# @package _global_\n" + yaml.safe_dump(preset, sort_keys=False)
        (root / "conf" / "experiment" / f"{PRESET}.yaml").write_text(text, encoding="utf-8")
        config_yaml = root / "conf" / "config.yaml"
        original = config_yaml.read_text(encoding="utf-8")
        assert original.count("  - experiment: null\n") == 1, "conf/config.yaml's defaults list changed"
        config_yaml.write_text(original.replace("  - experiment: null\n", f"  - experiment: {PRESET}\n"), "utf-8")
    box = Sandbox(root, sandbox_env(root, data_mirror))
    box.python("-m", "mnist_pipeline.compose")  # params.yaml = composition of the copy's conf/
    box.git("init", "-q", "-b", "main")
    box.commit("sandbox copy")
    return box


TINY_TRAINING = {"defaults": [{"override /dataset": "tiny"}], "featurize": {"val_size": 100}, "train": {"epochs": 1}}


def tiny_tune_sandbox(root: Path, tiny_dir: Path) -> Sandbox:
    """A sandbox whose default preset trains 1 epoch on a tiny MNIST written to ``tiny_dir``, with the
    tune tests' search space as conf/tune/tiny.yaml (committed; nothing run yet)."""
    tiny = write_tiny_mnist(tiny_dir)
    box = make_sandbox(
        root, preset=TINY_TRAINING, datasets={"tiny": tiny_dataset_yaml(tiny.file_specs())}, data_mirror=tiny.dir
    )
    (root / "conf" / "tune" / "tiny.yaml").write_text(yaml.safe_dump(TINY_SPACE, sort_keys=False), "utf-8")
    box.commit("tiny search space")
    return box


def publish(box: Sandbox, bare: Path) -> Path:
    """A bare repository at ``bare`` as the sandbox's ``origin``, with ``main`` and every tag pushed."""
    box.run("git", "init", "-q", "--bare", "-b", "main", bare)
    box.git("remote", "add", "origin", str(bare))
    box.git("push", "-q", "--tags", "origin", "main")
    return bare
