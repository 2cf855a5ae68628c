"""Typed, validated view of ``params.yaml``, and its composition from ``conf/``.

``conf/`` is the source of truth; ``params.yaml`` is its Hydra composition
(``make params``, or DVC itself on ``dvc exp run``). Stages call
:func:`load` and get frozen dataclasses; any unknown key, unknown name or
impossible value raises :class:`~mnist_pipeline.errors.ConfigError` naming
the key and what would be valid. The model's own settings (``optimizer``,
``schedule``, ``train``) are :mod:`mnist_pipeline.mlp`'s dataclasses, built and
validated here like the rest; the valid names are those its registries hold.

Run ``python -m mnist_pipeline.config [overrides...]`` to rewrite params.yaml.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import sys
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mnist_pipeline.compute import KERNELS
from mnist_pipeline.errors import ConfigError
from mnist_pipeline.mlp.errors import MLPError, check, check_choice
from mnist_pipeline.mlp.initializers import INITIALIZERS
from mnist_pipeline.mlp.layers import ACTIVATIONS
from mnist_pipeline.mlp.optimizers import OptimizerConfig
from mnist_pipeline.mlp.schedules import ScheduleConfig
from mnist_pipeline.mlp.trainer import TrainConfig
from mnist_pipeline.normalization import NORMALIZATIONS

PARAMS_FILE = "params.yaml"
CONF_DIR = "conf"
FILE_ROLES = ("train_images", "train_labels", "test_images", "test_labels")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.2, as DVC and OmegaConf do)."""


_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


@contextlib.contextmanager
def _as_config_error() -> Iterator[None]:
    """Turn the MLPError of a failed :func:`check` (shared with mlp's config types) into a ConfigError."""
    try:
        yield
    except MLPError as exc:
        raise ConfigError(str(exc)) from exc


def plain_file_name(key: str, name: str) -> None:
    """Reject names that could escape the data directory (``../x``, ``/x``, ``a/b``)."""
    bad = not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name
    with _as_config_error():
        check(key, not bad, "a plain file name without path separators", name)


@dataclass(frozen=True)
class FileSpec:
    name: str
    size: int
    sha256: str

    def validate(self, key: str) -> None:
        plain_file_name(f"{key}.name", self.name)
        check(f"{key}.size", self.size > 0, "a positive byte count", self.size)
        check(f"{key}.sha256", bool(_SHA256.match(self.sha256)), "64 lowercase hex digits", self.sha256)


@dataclass(frozen=True)
class DatasetConfig:
    name: str
    mirrors: tuple[str, ...]
    files: dict[str, FileSpec]
    image_shape: tuple[int, ...]
    class_names: tuple[str, ...]

    def validate(self, key: str) -> None:
        plain_file_name(f"{key}.name", self.name)
        for i, url in enumerate(self.mirrors):
            ok = url.startswith(("http://", "https://")) and url.endswith("/")
            check(f"{key}.mirrors[{i}]", ok, "an http(s) URL ending in '/'", url)
        if sorted(self.files) != sorted(FILE_ROLES):
            raise ConfigError(
                f"{key}.files must have exactly the keys {', '.join(FILE_ROLES)}; got {', '.join(self.files)}"
            )
        for role, spec in self.files.items():
            spec.validate(f"{key}.files.{role}")
        ok = len(self.image_shape) == 2 and all(d > 0 for d in self.image_shape)
        check(f"{key}.image_shape", ok, "two positive ints [rows, cols]", list(self.image_shape))
        ok = len(self.class_names) >= 2 and len(set(self.class_names)) == len(self.class_names)
        check(f"{key}.class_names", ok, "at least two distinct names", list(self.class_names))

    @property
    def num_features(self) -> int:
        return self.image_shape[0] * self.image_shape[1]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass(frozen=True)
class DownloadConfig:
    connect_timeout: float
    read_timeout: float
    retries: int
    backoff: float
    max_seconds: float = 600.0  # total time one file may take from one source (stops slow-drip mirrors)

    def validate(self, key: str) -> None:
        check(f"{key}.connect_timeout", self.connect_timeout > 0, "> 0 seconds", self.connect_timeout)
        check(f"{key}.read_timeout", self.read_timeout > 0, "> 0 seconds", self.read_timeout)
        check(f"{key}.retries", 0 <= self.retries <= 10, "between 0 and 10", self.retries)
        check(f"{key}.backoff", 0 <= self.backoff <= 60, "between 0 and 60 seconds", self.backoff)
        check(f"{key}.max_seconds", self.max_seconds > 0, "> 0 seconds", self.max_seconds)


@dataclass(frozen=True)
class PrepareConfig:
    normalize: str

    def validate(self, key: str) -> None:
        check_choice(f"{key}.normalize", self.normalize, NORMALIZATIONS)


@dataclass(frozen=True)
class FeaturizeConfig:
    val_size: int
    stratify: bool
    seed: int

    def validate(self, key: str) -> None:
        check(f"{key}.val_size", self.val_size > 0, "a positive number of examples", self.val_size)
        check(f"{key}.seed", self.seed >= 0, ">= 0", self.seed)


@dataclass(frozen=True)
class ModelConfig:
    hidden: tuple[int, ...]
    activation: str
    init: str
    dropout: float = 0.0  # probability of dropping a hidden unit (inverted dropout)

    def validate(self, key: str) -> None:
        for i, width in enumerate(self.hidden):
            check(f"{key}.hidden[{i}]", width > 0, "a positive layer width", width)
        check_choice(f"{key}.activation", self.activation, ACTIVATIONS.names())
        check_choice(f"{key}.init", self.init, INITIALIZERS.names())
        check(f"{key}.dropout", 0 <= self.dropout < 1, "in [0, 1)", self.dropout)


@dataclass(frozen=True)
class ComputeConfig:
    kernels: str  # portable: the same bits on every x86-64 CPU with AVX2 + FMA; native: this CPU's kernels
    blas_threads: int  # BLAS threads of the stages that compute; results depend on it

    def validate(self, key: str) -> None:
        check_choice(f"{key}.kernels", self.kernels, KERNELS)
        check(f"{key}.blas_threads", 1 <= self.blas_threads <= 64, "between 1 and 64", self.blas_threads)


@dataclass(frozen=True)
class EvaluateConfig:
    batch_size: int

    def validate(self, key: str) -> None:
        check(f"{key}.batch_size", self.batch_size > 0, "a positive batch size", self.batch_size)


@dataclass(frozen=True)
class ReportConfig:
    dpi: int
    misclassified: int
    max_units: int

    def validate(self, key: str) -> None:
        check(f"{key}.dpi", 10 <= self.dpi <= 600, "between 10 and 600", self.dpi)
        check(f"{key}.misclassified", 1 <= self.misclassified <= 100, "between 1 and 100 images", self.misclassified)
        check(f"{key}.max_units", 1 <= self.max_units <= 256, "between 1 and 256 units", self.max_units)


@dataclass(frozen=True)
class Config:
    """The whole of params.yaml; each field is one top-level key."""

    dataset: DatasetConfig
    compute: ComputeConfig
    model: ModelConfig
    optimizer: OptimizerConfig
    schedule: ScheduleConfig
    download: DownloadConfig
    prepare: PrepareConfig
    featurize: FeaturizeConfig
    train: TrainConfig
    evaluate: EvaluateConfig
    report: ReportConfig


def _convert(tp: Any, value: Any, key: str) -> Any:
    """Convert a YAML value to the annotated type ``tp``, naming ``key`` on mismatch."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{key}={value!r} is invalid: must be a list")
        (item_tp, _) = typing.get_args(tp)
        return tuple(_convert(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}={value!r} is invalid: must be a mapping")
        (_, item_tp) = typing.get_args(tp)
        return {k: _convert(item_tp, v, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} is invalid: must be true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}={value!r} is invalid: must be an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ConfigError(f"{key}={value!r} is invalid: must be a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}={value!r} is invalid: must be a string")
        return value
    raise TypeError(f"unsupported config type {tp!r} for {key}")  # a bug, not user error


def _build(cls: type, data: Any, key: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{key} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
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
        with _as_config_error():
            obj.validate(key)
    return obj


def from_dict(data: dict[str, Any]) -> Config:
    """Build and validate a :class:`Config` from a params mapping."""
    if not isinstance(data, dict):
        raise ConfigError(f"{PARAMS_FILE} must be a mapping at top level")
    keys = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(data) - keys)
    if unknown:
        raise ConfigError(f"unknown top-level key {unknown[0]!r}; valid keys: {', '.join(sorted(keys))}")
    missing = sorted(keys - set(data))
    if missing:
        raise ConfigError(f"missing top-level key {missing[0]!r} in {PARAMS_FILE}; run `make params`")
    hints = typing.get_type_hints(Config)
    return Config(**{k: _convert(hints[k], data[k], k) for k in sorted(keys)})


def load(path: str | Path = PARAMS_FILE) -> Config:
    """Read and validate ``params.yaml``; ConfigError on any problem."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}; run `make params`") from exc
    try:
        data = yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    return from_dict(data)


def compose(overrides: list[str] | None = None, conf_dir: str | Path = CONF_DIR) -> str:
    """Compose ``conf/`` with Hydra overrides into params.yaml text (as DVC does)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(str(Path(conf_dir).resolve()), version_base=None):
        cfg = hydra_compose(config_name="config", overrides=list(overrides or []))
    OmegaConf.resolve(cfg)
    return OmegaConf.to_yaml(cfg)


def as_dict(obj: Any) -> Any:
    """A dataclass config as plain JSON-able data (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: as_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: as_dict(v) for k, v in obj.items()}
    if isinstance(obj, tuple | list):
        return [as_dict(v) for v in obj]
    return obj


def main() -> None:
    """Write params.yaml from conf/ with optional Hydra overrides; validate it."""
    text = compose(sys.argv[1:])
    from_dict(yaml.safe_load(text))
    from mnist_pipeline.io import write_text  # lazy: io imports numpy, config stays light

    write_text(PARAMS_FILE, text)
    print(f"wrote {PARAMS_FILE}")


if __name__ == "__main__":
    from mnist_pipeline.cli import run

    run(main, "config")
