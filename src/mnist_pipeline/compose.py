"""Compose ``conf/`` into ``params.yaml`` with Hydra, as DVC does on ``dvc exp run``.

Run ``python -m mnist_pipeline.compose [overrides...]`` (``make params``) to rewrite params.yaml;
the result is validated before it is written.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml

from mnist_pipeline import config
from mnist_pipeline.errors import ConfigError
from mnist_pipeline.params import PARAMS_FILE, YamlLoader
from mnist_pipeline.paths import read_capped_text

CONF_DIR = "conf"


def compose(overrides: list[str] | None = None, conf_dir: str | Path = CONF_DIR, resolve: bool = True) -> str:
    """Compose ``conf/`` with Hydra overrides into params.yaml text (as DVC does; ``${...}`` left as written
    if not ``resolve``).

    Raises
    ------
    DataError
        If a file under ``conf_dir`` is over :data:`~mnist_pipeline.paths.TEXT_CAP` bytes or no regular file.
    ConfigError
        If an override sets ``hydra.*`` (its search path would read files outside ``conf_dir``), a
        config file holds a YAML alias, or Hydra or OmegaConf cannot compose it (an unknown group
        option, a bad override, a YAML error or tag, a missing interpolation, nesting too deep, an
        integer too long to read),
        with their message folded into one line.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    overrides = list(overrides or [])
    given = f" with overrides {' '.join(overrides)}" if overrides else ""
    for item in overrides:
        if item.lstrip("+~").split("=", 1)[0].split(".", 1)[0] == "hydra":
            raise ConfigError(
                f"cannot compose {conf_dir}/: {item!r} sets Hydra itself, which no params key needs; drop it"
            )
    for path in _conf_files(Path(conf_dir)):  # every file Hydra may read, checked before it reads it
        try:
            yaml.load(read_capped_text(path, "a config file is a few lines"), Loader=YamlLoader)  # noqa: S506 - safe
        except (yaml.YAMLError, RecursionError) as exc:
            raise ConfigError(f"cannot compose {conf_dir}/{given}: {path}: {reason(exc)}") from exc
    try:
        with initialize_config_dir(str(Path(conf_dir).resolve()), version_base=None):
            cfg = hydra_compose(config_name="config", overrides=overrides)
        if resolve:
            OmegaConf.resolve(cfg)
        return OmegaConf.to_yaml(cfg)
    except (HydraException, OmegaConfBaseException, yaml.YAMLError, RecursionError) as exc:
        raise ConfigError(f"cannot compose {conf_dir}/{given}: {reason(exc)}") from exc
    except ValueError as exc:
        if "integer string conversion" not in str(exc):  # Hydra's parser reading an override's number
            raise
        raise ConfigError(f"cannot compose {conf_dir}/{given}: an integer of over 4300 digits") from exc


NOT_HYDRAS = ("gates.yaml", "tune")  # under conf/ but read by their own commands (capped there), never composed


def _conf_files(conf_dir: Path) -> list[Path]:
    """The YAML files under ``conf_dir`` that Hydra may compose, through linked folders too (as Hydra follows
    them), each folder once."""
    files, seen = [], set()
    for root, dirs, names in os.walk(conf_dir, followlinks=True):
        if Path(root) == conf_dir:
            dirs[:] = [d for d in dirs if d not in NOT_HYDRAS]
            names = [n for n in names if n not in NOT_HYDRAS]
        real = os.path.realpath(root)
        if real in seen:  # a link back up the tree
            dirs.clear()
            continue
        seen.add(real)
        files += [Path(root, name) for name in sorted(names) if name.endswith((".yaml", ".yml"))]
    return files


def reason(exc: BaseException) -> str:
    """The useful part of a Hydra, OmegaConf or YAML error, in one line (no config search path)."""
    if isinstance(exc, RecursionError):
        return "a config file is nested too deeply"
    text = str(exc).split("Config search path:", 1)[0]
    return " ".join(text.split()) or type(exc).__name__


def main() -> None:
    """Write params.yaml from conf/ with optional Hydra overrides; validate it."""
    text = compose(sys.argv[1:])
    config.from_dict(yaml.safe_load(text))
    from mnist_pipeline.io import write_text

    write_text(PARAMS_FILE, text)
    print(f"wrote {PARAMS_FILE}")


if __name__ == "__main__":
    from mnist_pipeline.cli import run

    run(main, "compose")
