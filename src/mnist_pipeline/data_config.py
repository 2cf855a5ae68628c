"""What the data stages read from ``params.yaml``: ``dataset``, ``download``, ``prepare``, ``featurize``.

Apart from :mod:`mnist_pipeline.config` (the whole file, with the model's settings), so that the data
stages depend on neither the model nor its code: editing the MLP never reruns them. Each section is
a frozen dataclass whose ``validate(key)`` names the key and what would be valid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mnist_pipeline import params
from mnist_pipeline.errors import ConfigError
from mnist_pipeline.mlp.errors import check, check_choice
from mnist_pipeline.normalization import NORMALIZATIONS

FILE_ROLES = ("train_images", "train_labels", "test_images", "test_labels")
MAX_VAL_SIZE = 1_000_000  # examples; more than any training set the readers accept (IDX files up to 1 GiB)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)([^/?#\s]*)@")  # scheme:// then user[:password]@


def mask_credentials(text: str) -> str:
    """``text`` with the credentials of every URL in it masked: ``user:***@`` (a password) or ``***@`` (a token)."""

    def masked(match: re.Match[str]) -> str:
        user, colon, _ = match[2].partition(":")
        return f"{match[1]}{user + ':' if colon else ''}***@"

    return _USERINFO.sub(masked, text)


def plain_file_name(key: str, name: str) -> None:
    """Reject names that could escape the data directory (``../x``, ``/x``, ``a/b``)."""
    bad = not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name
    with params.as_config_error():
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
    image_shape: tuple[int, int]  # [rows, cols], checked in validate
    class_names: tuple[str, ...]

    def validate(self, key: str) -> None:
        plain_file_name(f"{key}.name", self.name)
        for i, url in enumerate(self.mirrors):
            ok = url.startswith(("http://", "https://")) and url.endswith("/")
            check(f"{key}.mirrors[{i}]", ok, "an http(s) URL ending in '/'", mask_credentials(url))
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
    max_seconds: float  # total time one file may take from one source (stops slow-drip mirrors)

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
        check(
            f"{key}.val_size",
            self.val_size <= MAX_VAL_SIZE,
            f"at most {MAX_VAL_SIZE} examples (more than any training set the pipeline reads; the split is held "
            f"in memory and evaluated after every epoch: {self.val_size} 28x28 float32 examples take "
            f"{self.val_size * 784 * 4 / 1e9:.1f} GB)",
            self.val_size,
        )
        check(f"{key}.seed", self.seed >= 0, ">= 0", self.seed)


@dataclass(frozen=True)
class DataConfig:
    """The sections of params.yaml that the data stages read."""

    dataset: DatasetConfig
    download: DownloadConfig
    prepare: PrepareConfig
    featurize: FeaturizeConfig


def load(path: str | Path = params.PARAMS_FILE) -> DataConfig:
    """Read and validate the data sections of ``params.yaml``; ConfigError on any problem."""
    return params.build_sections(DataConfig, params.read(path))
