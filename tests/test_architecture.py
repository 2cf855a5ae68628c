"""The import graph: dvc.yaml's code deps are each stage's real import closure, and imports run one way.

Read with ``ast`` (every ``import`` in a module, function-level ones included), so nothing is
executed: stages -> core modules, tools -> core modules, ``mlp/`` -> numpy and the standard
library only.
"""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
PACKAGE = "mnist_pipeline"
STAGES = ("download", "prepare", "featurize", "train", "export", "evaluate", "report")
TOOLS = ("predict", "sweep", "check_metrics", "bench", "tune", "serve", "plots_template")


def module_file(module: str) -> Path | None:
    """The file that defines ``module`` (a package's ``__init__.py``), or None if it is not ours."""
    path = SRC.joinpath(*module.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _is_ours(module: str) -> bool:
    return module.split(".")[0] == PACKAGE


@cache
def direct_imports(file: Path) -> frozenset[str]:
    """Every module name ``file`` imports (ours and others), from any depth of its code."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{file}: relative import; the package uses absolute ones"
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names if module_file(f"{node.module}.{a.name}")}
    return frozenset(names)


def _has_code(file: Path) -> bool:
    """False for a module that holds nothing but a docstring: importing it cannot change a result."""
    body = ast.parse(file.read_text(encoding="utf-8")).body
    return any(not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant)) for s in body)


def import_closure(module: str) -> set[Path]:
    """Files of ours that running ``module`` executes: its imports, theirs, and their packages' ``__init__``."""
    files: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            file = module_file(".".join(parts[:i]))
            if file is not None and file not in files:
                files.add(file)
                todo += [m for m in direct_imports(file) if _is_ours(m)]
    return {f for f in files if _has_code(f)}


def declared_code_deps(stage: dict) -> set[Path]:
    """The ``.py`` files a stage's ``deps`` cover (a directory covers every module under it)."""
    files: set[Path] = set()
    for dep in stage.get("deps", []):
        path = REPO / dep
        if dep.startswith("src/"):
            files |= set(path.rglob("*.py")) if path.is_dir() else {path}
    return {f for f in files if _has_code(f)}


def closure_mismatch(stage_name: str, stage: dict) -> list[str]:
    """What a stage's deps miss (imported, not declared) and list needlessly (declared, never imported)."""
    needed = import_closure(f"{PACKAGE}.stages.{stage_name}")
    declared = declared_code_deps(stage)
    rel = lambda files: sorted(f.relative_to(REPO).as_posix() for f in files)  # noqa: E731
    return [f"missing {p}" for p in rel(needed - declared)] + [f"never imported {p}" for p in rel(declared - needed)]


@pytest.fixture(scope="module")
def dvc_stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def test_every_stage_is_one_module_named_after_it(dvc_stages) -> None:
    assert tuple(dvc_stages) == STAGES
    for name, stage in dvc_stages.items():
        assert stage["cmd"] == f"python -m {PACKAGE}.stages.{name}"


@pytest.mark.parametrize("stage_name", STAGES)
def test_dvc_yaml_code_deps_are_the_stage_import_closure(dvc_stages, stage_name: str) -> None:
    assert closure_mismatch(stage_name, dvc_stages[stage_name]) == []


def test_dropping_or_adding_a_dep_is_caught(dvc_stages) -> None:
    train = dict(dvc_stages["train"])
    deps = train["deps"]
    for dropped in [d for d in deps if d.startswith("src/")]:
        mutated = {**train, "deps": [d for d in deps if d != dropped]}
        assert any(m.startswith("missing ") for m in closure_mismatch("train", mutated)), dropped
    mutated = {**train, "deps": [*deps, "src/mnist_pipeline/figures.py"]}
    assert closure_mismatch("train", mutated) == ["never imported src/mnist_pipeline/figures.py"]


def _modules_under(package: str) -> list[str]:
    root = SRC.joinpath(*package.split("."))
    files = [root.with_suffix(".py")] if root.with_suffix(".py").is_file() else sorted(root.rglob("*.py"))
    return [".".join(f.relative_to(SRC).with_suffix("").parts) for f in files]


def _our_imports(module: str) -> set[str]:
    return {m for m in direct_imports(module_file(module)) if _is_ours(m)}


@pytest.mark.parametrize("stage_name", STAGES)
def test_no_stage_imports_another_stage(stage_name: str) -> None:
    module = f"{PACKAGE}.stages.{stage_name}"
    others = {m for m in _our_imports(module) if m.startswith(f"{PACKAGE}.stages.")}
    assert others == set()


@pytest.mark.parametrize("tool", TOOLS)
def test_tools_import_no_stage(tool: str) -> None:
    for module in _modules_under(f"{PACKAGE}.{tool}"):
        stages = {m for m in _our_imports(module) if m == f"{PACKAGE}.stages" or m.startswith(f"{PACKAGE}.stages.")}
        assert stages == set(), module


def test_mlp_imports_only_numpy_the_standard_library_and_itself() -> None:
    allowed_roots = set(sys.stdlib_module_names) | {"numpy", "__future__"}
    for module in _modules_under(f"{PACKAGE}.mlp"):
        for name in direct_imports(module_file(module)):
            ok = name.startswith(f"{PACKAGE}.mlp") or name.split(".")[0] in allowed_roots
            assert ok, f"{module} imports {name}"


def test_params_sections_are_the_fields_of_config() -> None:
    import dataclasses

    from mnist_pipeline import config, params

    assert sorted(f.name for f in dataclasses.fields(config.Config)) == sorted(params.SECTIONS)


def test_data_stages_do_not_depend_on_the_model() -> None:
    for stage in ("download", "prepare", "featurize"):
        mlp = {f.name for f in import_closure(f"{PACKAGE}.stages.{stage}") if f.parent.name == "mlp"}
        assert mlp <= {"errors.py"}, stage  # the shared validation helpers only
