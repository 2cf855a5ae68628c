"""Reading ``params.yaml`` into frozen, validated dataclasses: the machinery, not the schema.

:func:`read` parses the file (YAML 1.2 numbers, as DVC and OmegaConf read them); :func:`build_sections`
turns its top-level sections into the fields of a dataclass, each converted by type and checked by
its ``validate(key)``. Any unknown key, wrong type or impossible value raises
:class:`~mnist_pipeline.errors.ConfigError` naming the key. The schemas live in
:mod:`mnist_pipeline.data_config` (what the data stages read) and :mod:`mnist_pipeline.config`
(the whole file).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import re
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from mnist_pipeline.errors import ConfigError
from mnist_pipeline.mlp.errors import MLPError
from mnist_pipeline.paths import read_capped_text
from mnist_pipeline.text import clipped

PARAMS_FILE = "params.yaml"
SHOWN_CHARS = 80  # of a refused value, in its error line (a pasted file or a 400-digit number is cut)
# Every top-level section params.yaml has (mnist_pipeline.config.Config has one field each; tested).
SECTIONS = (
    "compute",
    "dataset",
    "download",
    "evaluate",
    "featurize",
    "model",
    "optimizer",
    "prepare",
    "preset",
    "report",
    "schedule",
    "train",
)


class YamlLoader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-3`` as a float (YAML 1.2, as DVC and OmegaConf do) and refuses aliases.

    An alias (``*name``) repeats an anchored node without copying it, so a file of a few hundred
    bytes can stand for a billion items that any later ``str`` or walk would expand; the configs
    here never need one (Hydra has ``${...}`` interpolation).
    """

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]  # PyYAML's stubs leave it unannotated
            raise yaml.composer.ComposerError(
                None, None, f"YAML aliases (*{event.anchor}) are not accepted; write the value out", event.start_mark
            )
        return super().compose_node(parent, index)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        """An int; a YAML error for one of over 4300 decimal digits, which Python refuses to read."""
        try:
            return super().construct_yaml_int(node)
        except ValueError as exc:
            raise yaml.constructor.ConstructorError(
                None, None, "an integer of over 4300 digits", node.start_mark
            ) from exc


YamlLoader.add_constructor("tag:yaml.org,2002:int", YamlLoader.construct_yaml_int)
YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


@contextlib.contextmanager
def as_config_error() -> Iterator[None]:
    """Turn the MLPError of a failed :func:`check` (shared with mlp's config types) into a ConfigError."""
    try:
        yield
    except MLPError as exc:
        raise ConfigError(str(exc)) from exc


def read(path: str | Path = PARAMS_FILE) -> Any:
    """The parsed YAML of ``path``; ConfigError if it cannot be read or parsed (DataError: no regular file, too big)."""
    try:
        text = read_capped_text(path, "run `make params` to rewrite it")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}; run `make params`") from exc
    try:
        return yaml.load(text, Loader=YamlLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    except RecursionError as exc:  # the YAML parser recurses once per level of nesting
        raise ConfigError(f"{path} is nested too deeply to read; run `make params` to rewrite it") from exc


def build_sections(cls: type, data: Any) -> Any:
    """``cls`` (a dataclass whose fields are top-level sections) built from the params mapping ``data``.

    Sections of params.yaml that ``cls`` does not hold are not built, but must be known ones. Each
    section is validated as it is built; then ``cls.validate()``, if it has one, checks across them.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{PARAMS_FILE} must be a mapping at top level")
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown top-level key {unknown[0]!r}; valid keys: {', '.join(SECTIONS)}")
    wanted = [f.name for f in dataclasses.fields(cls)]
    missing = [k for k in sorted(wanted) if k not in data]
    if missing:
        raise ConfigError(f"missing top-level key {missing[0]!r} in {PARAMS_FILE}; run `make params`")
    hints = _hints(cls)
    built = cls(**{k: _convert(hints[k], data[k], k) for k in sorted(wanted)})
    if hasattr(built, "validate"):  # checks across sections
        with as_config_error():
            built.validate()
    return built


def shown(value: Any) -> str:
    """``repr(value)`` for an error line, its middle left out beyond :data:`SHOWN_CHARS` characters (an int
    too long to write out, which a hexadecimal YAML number can be, is named by its size)."""
    try:
        text = repr(value)
    except ValueError:  # over 4300 decimal digits
        return f"<an integer of {value.bit_length()} bits>"
    return clipped(text, SHOWN_CHARS)


def is_finite_number(value: Any) -> bool:
    """Whether ``value`` is an int or a float (not a bool) and finite as a float: an int beyond float's
    range (a 400-digit number in YAML or JSON) is not."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _convert(tp: Any, value: Any, key: str) -> Any:
    """Convert a YAML value to the annotated type ``tp``, naming ``key`` on mismatch."""
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{key}={shown(value)} is invalid: must be a list")
        (item_tp, _) = typing.get_args(tp)
        return tuple(_convert(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}={shown(value)} is invalid: must be a mapping")
        (_, item_tp) = typing.get_args(tp)
        return {k: _convert(item_tp, v, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={shown(value)} is invalid: must be true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}={shown(value)} is invalid: must be an integer")
        if not is_finite_number(value):  # checks compare counts and sizes with budgets in floats
            raise ConfigError(f"{key}={shown(value)} is invalid: must be an integer of at most 308 digits")
        return value
    if tp is float:
        if not is_finite_number(value):
            raise ConfigError(f"{key}={shown(value)} is invalid: must be a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}={shown(value)} is invalid: must be a string")
        return value
    raise TypeError(f"unsupported config type {tp!r} for {key}")  # a bug, not user error


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """``typing.get_type_hints(cls)``, evaluated once per class (it compiles every annotation)."""
    return typing.get_type_hints(cls)


def _build(cls: type, data: Any, key: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{key} must be a mapping, got {shown(data)}")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key {key}.{unknown[0]}; valid keys under {key}: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], f"{key}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing key {key}.{name}")
    obj = cls(**kwargs)
    if hasattr(obj, "validate"):
        with as_config_error():
            obj.validate(key)
    return obj


def as_dict(obj: Any) -> Any:
    """A dataclass config as plain JSON-able data (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: as_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: as_dict(v) for k, v in obj.items()}
    if isinstance(obj, tuple | list):
        return [as_dict(v) for v in obj]
    return obj
