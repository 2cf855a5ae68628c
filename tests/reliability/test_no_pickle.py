"""Nothing the pipeline reads can run code: no pickle on load, no eval, no unsafe YAML.

A planted ``.npz`` whose object array unpickles into a side effect (it creates a
marker file) is refused by :func:`mnist_pipeline.io.load_npz` with a DataError,
and the marker never appears. An AST scan of ``src/`` forbids every construct that
could deserialize or evaluate untrusted data: pickle-like modules, eval/exec,
``yaml.load`` without a SafeLoader (subclasses are resolved by importing the
module), ``np.load`` without ``allow_pickle=False``.
"""

from __future__ import annotations

import ast
import importlib
import pathlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import yaml

from mnist_pipeline.errors import DataError
from mnist_pipeline.io import load_npz

pytestmark = pytest.mark.timeout(30)

SRC = Path(__file__).resolve().parents[2] / "src"


class Payload:
    """Unpickling this calls ``Path.touch(marker)``: a harmless stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def plant_pickle_npz(path: Path, marker: Path) -> None:
    """An ``.npz`` (as ``np.savez`` writes it) with a normal array and a pickled object array."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=np.zeros((2, 3), np.float32), evil=np.array([Payload(marker)], dtype=object))


def test_payload_really_runs_when_unpickled(tmp_path):
    # Proves the planted file is dangerous, so the refusal below is meaningful.
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npz"
    plant_pickle_npz(path, marker)

    with np.load(path, allow_pickle=True) as data:
        data["evil"]

    assert marker.exists()


def test_pickle_bearing_npz_in_data_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "data" / "features" / "train.npz"
    plant_pickle_npz(path, marker)

    with pytest.raises(DataError, match="holds pickled objects, refusing to load it") as err:
        load_npz(path, ["x"])

    assert str(path) in str(err.value)
    assert not marker.exists()


def test_raw_pickle_named_npz_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.npz"
    path.write_bytes(pickle.dumps(Payload(marker)))

    with pytest.raises(DataError, match=r"is not an \.npz archive \(starts with b'\\x80"):  # pickle's opcode
        load_npz(path)

    assert not marker.exists()


# --- source scan ------------------------------------------------------------------------------

PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "shelve", "marshal", "joblib"}
UNSAFE_YAML = {"unsafe_load", "unsafe_load_all", "full_load", "full_load_all", "Loader", "FullLoader", "UnsafeLoader"}


def _dotted(node: ast.AST) -> str:
    """``np.lib.load`` for an attribute chain, ``eval`` for a name, "" otherwise."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def _is_safe_loader(node: ast.AST, namespace: dict) -> bool:
    """Whether ``node`` (the Loader argument) names yaml.SafeLoader or a subclass of it."""
    name = _dotted(node)
    if name in ("yaml.SafeLoader", "yaml.CSafeLoader"):  # CSafeLoader exists only with libyaml
        return True
    obj = namespace.get(name)
    return isinstance(obj, type) and issubclass(obj, yaml.SafeLoader)


def _call_violation(call: ast.Call, namespace: dict) -> str | None:
    name = _dotted(call.func)
    keywords = {k.arg: k.value for k in call.keywords}
    if name in ("eval", "exec", "builtins.eval", "builtins.exec"):
        return "eval/exec"
    if name.split(".")[-1] in ("load", "loads") and name.split(".")[0] in PICKLE_MODULES:
        return "pickle.load"
    if name in ("yaml.load", "yaml.load_all"):
        loader = keywords.get("Loader", call.args[1] if len(call.args) > 1 else None)
        if loader is None or not _is_safe_loader(loader, namespace):
            return "yaml.load without a SafeLoader"
    if name in ("np.load", "numpy.load"):
        flag = keywords.get("allow_pickle")
        if not (isinstance(flag, ast.Constant) and flag.value is False):
            return "np.load without allow_pickle=False"
    if name == "torch.load":
        return "torch.load"
    return None


def violations(text: str, namespace: dict | None = None) -> list[str]:
    """``"<line>: <rule>"`` for every construct in ``text`` that could run or unpickle untrusted data.

    ``namespace`` resolves names used as a yaml ``Loader`` (the module's globals).
    """
    namespace = namespace or {}
    found = []
    for node in ast.walk(ast.parse(text)):
        rule = None
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if any(m.split(".")[0] in PICKLE_MODULES for m in modules):
                rule = "pickle-like module"
        elif isinstance(node, ast.Call):
            rule = _call_violation(node, namespace)
        elif isinstance(node, ast.Attribute) and _dotted(node.value) == "yaml" and node.attr in UNSAFE_YAML:
            rule = f"yaml.{node.attr}"
        elif isinstance(node, ast.keyword) and node.arg == "allow_pickle":
            if not (isinstance(node.value, ast.Constant) and node.value.value is False):
                rule = "allow_pickle not False"
        if rule:
            found.append(f"{node.lineno if hasattr(node, 'lineno') else '?'}: {rule}")
    return found


class _SafeSub(yaml.SafeLoader):
    pass


class _UnsafeSub(yaml.Loader):
    pass


LOADERS = {"SafeSub": _SafeSub, "UnsafeSub": _UnsafeSub}


@pytest.mark.parametrize(
    "line",
    [
        "import pickle",
        "from pickle import loads",
        "import marshal",
        "import dill as d",
        "obj = pickle.load(f)",
        "value = eval(text)",
        "exec(code)",
        "yaml.load(text)",
        "yaml.load(text, Loader=yaml.Loader)",
        "yaml.load(text, yaml.FullLoader)",
        "yaml.load(text, Loader=UnsafeSub)",
        "yaml.load(text, Loader=Unknown)",
        "yaml.unsafe_load(text)",
        "np.load(path)",
        "np.load(path, allow_pickle=True)",
        "np.load(path, allow_pickle=flag)",
        "f(allow_pickle=True)",
    ],
)
def test_scanner_catches_each_forbidden_construct(line):
    assert violations(line, LOADERS), line


@pytest.mark.parametrize(
    "line",
    [
        "data = yaml.safe_load(text)",
        "yaml.load(text, Loader=yaml.SafeLoader)",
        "yaml.load(text, Loader=yaml.CSafeLoader)",
        "yaml.load(text, Loader=SafeSub)",
        "np.load(path, allow_pickle=False)",
        "ast.literal_eval(node)",
        "model.evaluate(x)",
        "text = 'never call pickle.load or eval(x) here'  # nor exec()",
    ],
)
def test_scanner_allows_safe_constructs(line):
    assert violations(line, LOADERS) == []


def test_no_unsafe_deserialization_or_eval_in_src():
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 10  # the scan really looked at the package
    found = []
    for path in files:
        module = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        namespace = vars(importlib.import_module(module))
        found += [f"{path.relative_to(SRC)}:{v}" for v in violations(path.read_text(encoding="utf-8"), namespace)]
    assert found == []
