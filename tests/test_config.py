"""Config: conf/ composes to params.yaml; validation names the key and the valid choices."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mnist_pipeline import compose, config, data_config, params
from mnist_pipeline.errors import ConfigError
from mnist_pipeline.mlp.initializers import INITIALIZERS
from mnist_pipeline.mlp.layers import ACTIVATIONS
from mnist_pipeline.mlp.losses import LOSSES
from mnist_pipeline.mlp.optimizers import OPTIMIZERS
from mnist_pipeline.mlp.schedules import SCHEDULES
from mnist_pipeline.mlp.trainer import EARLY_STOP

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"


def _set(data: dict, dotted: str, value) -> dict:
    *parents, leaf = dotted.split(".")
    for key in parents:
        data = data[key]
    data[leaf] = value
    return data


def _group_options() -> list[tuple[str, str]]:
    """Every ``(group, option)`` of the groups conf/config.yaml composes, found at run time (so new
    options and experiments are covered). Other directories of conf/ (tune/) are not params.yaml's."""
    defaults = yaml.safe_load((CONF / "config.yaml").read_text(encoding="utf-8"))["defaults"]
    groups = [next(iter(d)) for d in defaults if isinstance(d, dict)]
    return sorted((group, option.stem) for group in groups for option in (CONF / group).glob("*.yaml"))


def _leaves(data, prefix=""):
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _leaves(v, f"{prefix}.{k}" if prefix else k)
    else:
        yield prefix, data


# --- composition -------------------------------------------------------------------------------


def test_compose_equals_params_yaml_text() -> None:
    assert compose.compose(conf_dir=CONF) == (REPO / "params.yaml").read_text(encoding="utf-8")


def test_compose_equals_params_yaml_parsed() -> None:
    composed = yaml.safe_load(compose.compose(conf_dir=CONF))
    assert composed == yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))


def test_params_yaml_loads_and_keeps_every_value() -> None:
    cfg = config.load(REPO / "params.yaml")
    typed = params.as_dict(cfg)
    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    for dotted, value in _leaves(raw):
        node = typed
        for part in dotted.split("."):
            node = node[part]
        assert node == value, dotted
    assert cfg.dataset.num_features == 28 * 28 and cfg.dataset.num_classes == 10


def test_config_is_frozen(params_dict: dict) -> None:
    cfg = config.from_dict(params_dict)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.lr = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(("group", "option"), _group_options())
def test_every_group_option_composes_and_validates(group: str, option: str) -> None:
    text = compose.compose([f"{group}={option}"], conf_dir=CONF)
    cfg = config.from_dict(yaml.safe_load(text))
    if group in {f.name for f in dataclasses.fields(config.Config)}:
        option_yaml = yaml.safe_load((CONF / group / f"{option}.yaml").read_text(encoding="utf-8")) or {}
        if "name" in option_yaml:
            assert getattr(cfg, group).name == option_yaml["name"]
    # The preset's name is a param (dvc exp show, report.md); the defaults alone say "none".
    assert cfg.preset.name == (option if group == "experiment" else "none")


def test_there_are_groups_to_check() -> None:
    groups = {g for g, _ in _group_options()}
    assert {"dataset", "model", "optimizer"} <= groups


def test_hydra_overrides_compose() -> None:
    text = compose.compose(["model.hidden=[128]", "optimizer=adam", "train.epochs=2"], conf_dir=CONF)
    data = yaml.safe_load(text)
    cfg = config.from_dict(data)
    assert cfg.model.hidden == (128,)
    assert cfg.optimizer.name == "adam"
    assert cfg.train.epochs == 2
    assert "momentum" not in data["optimizer"]  # switching the group replaces it, no stale keys
    default = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    assert data["dataset"] == default["dataset"] and data["featurize"] == default["featurize"]


# --- the names config accepts are exactly the ones the model code registers ---------------------


@pytest.mark.parametrize(
    ("dotted", "registry"),
    [
        ("model.activation", ACTIVATIONS),
        ("model.init", INITIALIZERS),
        ("optimizer.name", OPTIMIZERS),
        ("schedule.name", SCHEDULES),
        ("train.loss", LOSSES),
    ],
    ids=["activation", "init", "optimizer", "schedule", "loss"],
)
def test_config_choices_match_registries(params_dict: dict, dotted: str, registry) -> None:
    section, field = dotted.split(".")
    for name in registry:  # every registered name is accepted...
        _set(params_dict, dotted, name)
        assert getattr(getattr(config.from_dict(params_dict), section), field) == name
    _set(params_dict, dotted, "unregistered")
    with pytest.raises(ConfigError) as info:
        config.from_dict(params_dict)
    # ... and nothing else: the error lists exactly the registry's names, sorted
    assert str(info.value) == f"{dotted}='unregistered' is not one of: {', '.join(sorted(registry))}"


# --- load(): file-level errors -------------------------------------------------------------------


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read .*nope.yaml"):
        config.load(tmp_path / "nope.yaml")


def test_load_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("train: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        config.load(path)


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just a string\n"])
def test_load_non_mapping(tmp_path: Path, text: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="must be a mapping at top level"):
        config.load(path)


def test_load_reads_exponent_floats_like_dvc(tmp_path: Path, params_dict: dict) -> None:
    # YAML 1.2 (DVC, OmegaConf) reads 1e-3 as a float; a hand-edited params.yaml must too.
    text, count = re.subn(r"(?m)^  lr: .*$", "  lr: 1e-3", yaml.safe_dump(params_dict, sort_keys=False))
    assert count == 1
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    assert config.load(path).train.lr == pytest.approx(1e-3)


# --- unknown keys --------------------------------------------------------------------------------


def test_unknown_top_level_key(params_dict: dict) -> None:
    params_dict["trian"] = {"lr": 0.1}
    with pytest.raises(ConfigError) as info:
        config.from_dict(params_dict)
    message = str(info.value)
    assert "unknown top-level key 'trian'" in message
    for field in dataclasses.fields(config.Config):
        assert field.name in message


@pytest.mark.parametrize(
    ("section", "cls"),
    [
        ("train", config.TrainConfig),
        ("model", config.ModelConfig),
        ("optimizer", config.OptimizerConfig),
        ("featurize", data_config.FeaturizeConfig),
        ("dataset.files.train_images", data_config.FileSpec),
    ],
)
def test_unknown_nested_key(params_dict: dict, section: str, cls) -> None:
    _set(params_dict, f"{section}.foo", 1)
    with pytest.raises(ConfigError) as info:
        config.from_dict(params_dict)
    message = str(info.value)
    assert f"unknown key {section}.foo" in message
    valid = message.split("valid keys under", 1)[1]
    for field in dataclasses.fields(cls):
        assert re.search(rf"\b{field.name}\b", valid), field.name


def test_missing_key_is_named(params_dict: dict) -> None:
    del params_dict["train"]["lr"]
    with pytest.raises(ConfigError, match=r"missing key train\.lr"):
        config.from_dict(params_dict)


def test_missing_top_level_key_is_named(params_dict: dict) -> None:
    del params_dict["featurize"]
    with pytest.raises(ConfigError, match="missing top-level key 'featurize'"):
        config.from_dict(params_dict)


def test_dataset_files_need_exactly_the_four_roles(params_dict: dict) -> None:
    params_dict["dataset"]["files"]["extra"] = params_dict["dataset"]["files"]["train_images"]
    with pytest.raises(ConfigError, match=r"dataset\.files must have exactly the keys train_images"):
        config.from_dict(params_dict)


# --- unknown names list the valid choices --------------------------------------------------------


@pytest.mark.parametrize(
    ("dotted", "choices"),
    [
        ("model.activation", ACTIVATIONS),
        ("model.init", INITIALIZERS),
        ("optimizer.name", OPTIMIZERS),
        ("schedule.name", SCHEDULES),
        ("train.loss", LOSSES),
        ("train.early_stop", EARLY_STOP),
        ("train.dtype", ("float32", "float64")),
        ("prepare.normalize", ("scale", "standardize")),
    ],
)
def test_unknown_name_lists_valid_choices(params_dict: dict, dotted: str, choices) -> None:
    _set(params_dict, dotted, "bogus")
    with pytest.raises(ConfigError) as info:
        config.from_dict(params_dict)
    message = str(info.value)
    assert f"{dotted}='bogus'" in message
    for choice in choices:
        assert choice in message


# --- impossible values name the key --------------------------------------------------------------

IMPOSSIBLE = [
    ("train.lr", 0),
    ("train.lr", -0.1),
    ("train.lr", math.nan),
    ("train.lr", math.inf),
    ("train.lr", "fast"),
    ("train.batch_size", 0),
    ("train.batch_size", 12.5),
    ("train.epochs", 0),
    ("train.epochs", True),
    ("train.seed", -1),
    ("train.l2", -1e-4),
    ("train.dtype", "float16"),
    ("train.augment_elastic_alpha", -1.0),
    ("train.augment_elastic_alpha", 500.0),
    ("train.augment_elastic_sigma", 0.0),
    ("train.augment_elastic_sigma", math.nan),
    ("train.augment_rotate", -5.0),
    ("train.augment_rotate", 90.0),
    ("train.augment_scale", 0.8),
    ("train.augment_shear", -0.1),
    ("train.augment_translate", 9.0),
    ("train.augment_translate", math.inf),
    ("model.hidden", 128),
    ("model.hidden", [128, 0]),
    ("model.dropout", 1.0),
    ("optimizer.momentum", 1.0),
    ("featurize.val_size", 0),
    ("featurize.stratify", "yes"),
    ("download.retries", -1),
    ("download.connect_timeout", 0),
    ("dataset.mirrors", ["ftp://example.com/mnist/"]),
    ("dataset.mirrors", ["https://example.com/mnist"]),
    ("dataset.image_shape", [28]),
    ("dataset.class_names", ["0", "0"]),
    ("dataset.files.train_images.sha256", "abc"),
    ("dataset.files.train_images.sha256", "g" * 64),
    ("dataset.files.train_images.size", 0),
    ("dataset.files.train_images.name", "../train-images-idx3-ubyte.gz"),
    ("dataset.files.train_images.name", "sub/train.gz"),
    ("dataset.files.train_images.name", "/etc/passwd"),
    ("dataset.files.train_images.name", "..\\evil.gz"),
    ("dataset.files.train_images.name", ".."),
    ("dataset.files.train_images.name", ""),
    ("dataset.name", "../mnist"),
]


@pytest.mark.parametrize(("dotted", "value"), IMPOSSIBLE, ids=[f"{k}={v!r}" for k, v in IMPOSSIBLE])
def test_impossible_value_names_the_key(params_dict: dict, dotted: str, value) -> None:
    _set(params_dict, dotted, value)
    with pytest.raises(ConfigError) as info:
        config.from_dict(params_dict)
    message = str(info.value)
    # The key itself, or an element of it (model.hidden[1], dataset.mirrors[0]).
    assert re.search(rf"{re.escape(dotted)}(\[\d+\])?=", message), message
    assert "invalid" in message or "not one of" in message


@pytest.mark.parametrize(
    "dotted", ["train.lr", "optimizer.momentum", "train.epochs", "featurize.val_size", "model.hidden"]
)
def test_a_number_beyond_float_is_refused_in_a_short_line(params_dict: dict, dotted: str) -> None:
    # validation compares counts with budgets in floats: 10**400 would be an OverflowError traceback there
    _set(params_dict, dotted, [10**400] if dotted == "model.hidden" else 10**400)
    with pytest.raises(ConfigError) as info:
        config.from_dict(params_dict)
    message = str(info.value)
    assert re.fullmatch(
        rf"{re.escape(dotted)}(\[0\])?=1(0{{39}})\.\.\.\(321 characters left out\)\.\.\.(0{{40}}) is invalid: "
        r"must be (a finite number|an integer of at most 308 digits)",
        message,
    ), message


def test_a_128_bit_seed_is_an_integer_as_numpy_takes_it(params_dict: dict) -> None:
    _set(params_dict, "train.seed", 2**127 + 5)  # numpy's own advice: secrets.randbits(128)
    assert config.from_dict(params_dict).train.seed == 2**127 + 5


def test_a_hexadecimal_integer_too_long_to_print_is_refused_by_its_size(tmp_path: Path, params_dict: dict) -> None:
    # YAML reads 0x... of any length (Python's 4300-digit limit is for decimal): the message cannot print it
    text = yaml.safe_dump(params_dict, sort_keys=False).replace("epochs: 10", "epochs: 0x" + "f" * 5000)
    (tmp_path / "params.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^train\.epochs=<an integer of 20000 bits> is invalid: must be an integer"):
        config.load(tmp_path / "params.yaml")


def test_a_decimal_integer_too_long_to_read_is_a_yaml_error(tmp_path: Path, params_dict: dict) -> None:
    text = yaml.safe_dump(params_dict, sort_keys=False).replace("epochs: 10", "epochs: 1" + "0" * 5000)
    (tmp_path / "params.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"params\.yaml is not valid YAML: an integer of over 4300 digits$"):
        config.load(tmp_path / "params.yaml")


def test_a_pasted_value_is_cut_in_the_error_line(tmp_path: Path, params_dict: dict) -> None:
    _set(params_dict, "optimizer.name", "a" * 120_000)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params_dict, sort_keys=False), encoding="utf-8")
    result = _run_stage("train", tmp_path)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr[:300]
    line = result.stderr.rstrip("\n")
    assert line.startswith("error: train: optimizer.name='aaaa") and len(line) < 1100
    assert re.search(r"a\.\.\.\(119\d{3} characters left out\)\.\.\.a", line), line
    assert line.endswith("' is not one of: adam, adamw, ema_momentum, momentum, nesterov, rmsprop, sgd")


def test_valid_edge_values_pass(params_dict: dict) -> None:
    _set(params_dict, "model.hidden", [])
    _set(params_dict, "train.lr", 1)  # an int where a float is expected is fine
    _set(params_dict, "train.l2", 0)
    cfg = config.from_dict(params_dict)
    assert cfg.model.hidden == () and cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)


# --- the CLI turns a ConfigError into one line on stderr -----------------------------------------


def _run_stage(stage: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "LOGLEVEL"}
    return subprocess.run(
        [sys.executable, "-m", f"mnist_pipeline.stages.{stage}"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(("dotted", "needle"), [("train.foo", "train.foo"), ("bogus", "'bogus'")])
def test_stage_cli_unknown_key_is_one_clean_line(tmp_path: Path, params_dict: dict, dotted: str, needle: str) -> None:
    _set(params_dict, dotted, 1)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params_dict, sort_keys=False), encoding="utf-8")
    result = _run_stage("train", tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: train:")
    assert needle in lines[0]
    assert "valid keys" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()  # failed before touching any output


# The model's own config types (mlp.trainer.TrainConfig, mlp.optimizers.OptimizerConfig,
# mlp.schedules.ScheduleConfig) validate with MLPError; the user sees the same ConfigError line.
MODEL_SETTING_ERRORS = [
    ("train.lr", 0, "train.lr=0.0 is invalid: must be > 0"),
    ("train.early_stop", "val_f1", "train.early_stop='val_f1' is not one of: none, val_loss, val_acc"),
    (
        "optimizer.name",
        "adagrad",
        "optimizer.name='adagrad' is not one of: adam, adamw, ema_momentum, momentum, nesterov, rmsprop, sgd",
    ),
    ("schedule.gamma", 2, "schedule.gamma=2.0 is invalid: must be in (0, 1]"),
]


@pytest.mark.parametrize(("dotted", "value", "message"), MODEL_SETTING_ERRORS, ids=[e[0] for e in MODEL_SETTING_ERRORS])
def test_invalid_model_setting_is_a_config_error_and_one_cli_line(
    tmp_path: Path, params_dict: dict, dotted: str, value, message: str
) -> None:
    _set(params_dict, dotted, value)
    with pytest.raises(ConfigError) as info:
        config.from_dict(params_dict)
    assert str(info.value) == message
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params_dict, sort_keys=False), encoding="utf-8")
    result = _run_stage("train", tmp_path)
    assert result.returncode == 1
    assert result.stderr == f"error: train: {message}\n"
    assert not (tmp_path / "data").exists()


def test_stage_cli_missing_params_file(tmp_path: Path) -> None:
    result = _run_stage("prepare", tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "params.yaml" in result.stderr


@pytest.mark.parametrize("loss", ["mse_softmax", "mse_sigmoid"])
def test_label_smoothing_with_an_mse_loss_is_rejected_not_ignored(params_dict: dict, loss: str) -> None:
    _set(params_dict, "train.loss", loss)
    assert config.from_dict(params_dict).train.loss == loss  # no smoothing: fine
    _set(params_dict, "train.label_smoothing", 0.1)
    with pytest.raises(ConfigError, match=rf"train\.label_smoothing=0\.1 is invalid: must be 0 with loss {loss}"):
        config.from_dict(params_dict)
