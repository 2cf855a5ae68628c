"""Typed, validated view of the whole of ``params.yaml``.

``conf/`` is the source of truth; ``params.yaml`` is its Hydra composition (``make params``, see
:mod:`mnist_pipeline.compose`, or DVC itself on ``dvc exp run``). :func:`load` returns frozen
dataclasses; any unknown key, unknown name or impossible value raises
:class:`~mnist_pipeline.errors.ConfigError` naming the key and what would be valid. The data
sections come from :mod:`mnist_pipeline.data_config`; the model's own settings (``optimizer``,
``schedule``, ``train``) are :mod:`mnist_pipeline.mlp`'s dataclasses, validated against its
registries.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnist_pipeline import compute, params
from mnist_pipeline.compute import KERNELS, MAX_CHUNKS
from mnist_pipeline.data_config import DatasetConfig, DownloadConfig, FeaturizeConfig, PrepareConfig
from mnist_pipeline.mlp.errors import MLPError, check, check_choice
from mnist_pipeline.mlp.initializers import INITIALIZERS
from mnist_pipeline.mlp.layers import ACTIVATIONS
from mnist_pipeline.mlp.optimizers import OptimizerConfig
from mnist_pipeline.mlp.schedules import ScheduleConfig
from mnist_pipeline.mlp.trainer import MAX_BATCH_SIZE, TrainConfig

# Upper bounds on the network, checked with the dataset's input and output sizes (Config.validate).
MAX_HIDDEN_LAYERS = 16
MAX_UNITS = 65536  # per hidden layer
MAX_WEIGHTS = 1 << 26  # 67M: 268 MB as float32, and training holds several copies (gradients, optimizer state)
MAX_ACTIVATIONS = 1 << 26  # batch size x units, the values one batch's forward pass holds (backward: ~3x)


@dataclass(frozen=True)
class ModelConfig:
    hidden: tuple[int, ...]
    activation: str
    init: str
    dropout: float  # probability of dropping a hidden unit (inverted dropout)

    def validate(self, key: str) -> None:
        if len(self.hidden) > MAX_HIDDEN_LAYERS:
            raise MLPError(
                f"{key}.hidden has {len(self.hidden)} layers, more than the {MAX_HIDDEN_LAYERS} allowed "
                "(each is a matrix product forward and two backward, per batch)"
            )
        for i, width in enumerate(self.hidden):
            check(f"{key}.hidden[{i}]", width > 0, "a positive layer width", width)
        check_choice(f"{key}.activation", self.activation, ACTIVATIONS.names())
        check_choice(f"{key}.init", self.init, INITIALIZERS.names())
        check(f"{key}.dropout", 0 <= self.dropout < 1, "in [0, 1)", self.dropout)


@dataclass(frozen=True)
class PresetConfig:
    name: str  # the conf/experiment preset composed in ("none": the defaults); each preset file sets its own

    def validate(self, key: str) -> None:
        check(f"{key}.name", bool(self.name.strip()), "a preset name, or none", self.name)


@dataclass(frozen=True)
class ComputeConfig:
    kernels: str  # portable: the same bits on every x86-64 CPU with AVX2 + FMA; native: this CPU's kernels
    chunks: int  # the fixed pieces a batch and a weight matrix are cut into; results depend on it, not on threads

    def validate(self, key: str) -> None:
        check_choice(f"{key}.kernels", self.kernels, KERNELS)
        check(f"{key}.chunks", 1 <= self.chunks <= MAX_CHUNKS, f"between 1 and {MAX_CHUNKS}", self.chunks)


@dataclass(frozen=True)
class EvaluateConfig:
    batch_size: int

    def validate(self, key: str) -> None:
        check(f"{key}.batch_size", self.batch_size > 0, "a positive batch size", self.batch_size)
        check(
            f"{key}.batch_size",
            self.batch_size <= MAX_BATCH_SIZE,
            f"at most {MAX_BATCH_SIZE} examples (more than a whole test set; a batch and its activations are "
            "held in memory at once)",
            self.batch_size,
        )


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
    preset: PresetConfig

    @property
    def layer_sizes(self) -> list[int]:
        """The network's widths: the dataset's features, the hidden layers, the dataset's classes."""
        return [self.dataset.num_features, *self.model.hidden, self.dataset.num_classes]

    def validate(self) -> None:
        """Checks across sections: the network's size and a batch's activations, in memory they would take."""
        dtype = self.train.dtype
        itemsize = 8 if dtype == "float64" else 4
        sizes = self.layer_sizes
        for i, (fan_in, width) in enumerate(zip(sizes[:-2], self.model.hidden, strict=True)):
            need = f"a {fan_in}x{width} {dtype} layer needs {_gigabytes(fan_in * width * itemsize)}"
            check(f"model.hidden[{i}]", width <= MAX_UNITS, f"at most {MAX_UNITS} units ({need})", width)
        weights = sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        net = "-".join(map(str, sizes))
        need = f"{net} has {weights}: {_gigabytes(weights * itemsize)} as {dtype}, several times that to train"
        check(
            "model.hidden", weights <= MAX_WEIGHTS, f"at most {MAX_WEIGHTS} weights ({need})", list(self.model.hidden)
        )
        units = sum(sizes[1:])
        for key, batch in (
            ("train.batch_size", self.train.batch_size),
            ("evaluate.batch_size", self.evaluate.batch_size),
        ):
            need = f"{batch} x {units} units of {net} are {_gigabytes(batch * units * itemsize)} of {dtype} activations"
            check(
                key,
                batch * units <= MAX_ACTIVATIONS,
                f"at most {MAX_ACTIVATIONS // units} for this network ({need})",
                batch,
            )


def _gigabytes(nbytes: int) -> str:
    return f"{nbytes / 1e9:.1f} GB"


def from_dict(data: dict[str, Any]) -> Config:
    """Build and validate a :class:`Config` from a params mapping."""
    return params.build_sections(Config, data)


def load(path: str | Path = params.PARAMS_FILE) -> Config:
    """Read and validate ``params.yaml``; ConfigError on any problem."""
    return from_dict(params.read(path))


def enter_compute_environment(path: str | Path = params.PARAMS_FILE) -> None:
    """Restart this command, if needed, in the environment ``compute.kernels`` asks for (see :mod:`.compute`)."""
    compute.restart_if_needed(load(path).compute.kernels)
