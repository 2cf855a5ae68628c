"""tune: the search space, its validation, sampling, budget accounting, the table and bad input.

No DVC run here (the real studies run in test_tune_study.py): the space is sampled with in-memory
Optuna studies, and bad input is given to the real command, which must stop with one line.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from helpers.tune_space import TINY_SPACE as SPACE
from mnist_pipeline import compose, config
from mnist_pipeline.errors import ConfigError
from mnist_pipeline.tune import report, storage
from mnist_pipeline.tune.experiment import push_remote
from mnist_pipeline.tune.space import load_space, override, parse_space, suggest
from mnist_pipeline.tune.study import Budget, budget_spent, sampler

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, space: dict) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space), encoding="utf-8")
    return path


def _with_param(**param: dict) -> dict:
    return {**SPACE, "params": {**SPACE["params"], **param}}


def test_default_space_is_valid_and_keeps_the_epochs_fixed() -> None:
    space = load_space("default", REPO / "conf")
    assert space.fixed == {"train.epochs": 10} and space.trials and space.minutes
    assert {"train.lr", "train.l2", "optimizer"} <= {p.name for p in space.params}


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "conf" / "tune").glob("*.yaml")))
def test_every_committed_space_loads_with_every_range_end_a_valid_config(name: str) -> None:
    space = load_space(name, REPO / "conf")  # composes each range's ends with the fixed keys, and validates
    assert space.name == name and space.params and space.trials


def test_conditional_key_is_sampled_only_when_its_condition_holds() -> None:
    space = parse_space("t", SPACE, "t.yaml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        overrides = suggest(trial, space)
        assert overrides[0] == "train.epochs=1"
        assert ("optimizer.momentum" in trial.params) == (trial.params["optimizer"] == "momentum")
        assert trial.params["train.batch_size"] in (32, 64, 96, 128)
        seen.add(trial.params["optimizer"])
        study.tell(trial, 0.5)
    assert seen == {"momentum", "sgd"}


def test_same_seed_proposes_the_same_first_trial() -> None:
    space = parse_space("t", SPACE, "t.yaml")
    firsts = [suggest(optuna.create_study(sampler=sampler(7, 10)).ask(), space) for _ in range(2)]
    other = suggest(optuna.create_study(sampler=sampler(8, 10)).ask(), space)
    assert firsts[0] == firsts[1] != other


def test_overrides_read_back_as_the_same_values() -> None:
    assert override("train.lr", 1e-05) == "train.lr=1e-05"
    assert override("model", "mlp_64_sigmoid") == "model=mlp_64_sigmoid"
    assert override("featurize.stratify", False) == "featurize.stratify=false"
    text = compose.compose([override("train.lr", 0.123456789), override("train.l2", 1e-07)], REPO / "conf")
    assert yaml.safe_load(text)["train"]["lr"] == 0.123456789


@pytest.mark.parametrize(
    ("space", "message"),
    [
        (
            _with_param(**{"train.lrr": {"type": "float", "low": 0.1, "high": 0.2}}),
            "params.train.lrr is an unknown key",
        ),
        (_with_param(modle={"type": "categorical", "choices": ["a"]}), "params.modle is an unknown key"),
        (_with_param(**{"train.lr": {"type": "float", "low": 0.4, "high": 0.02}}), "params.train.lr: empty range"),
        (_with_param(**{"train.lr": {"type": "uniform", "low": 0, "high": 1}}), "unknown type 'uniform'"),
        (_with_param(**{"train.epochs": {"type": "int", "low": 1, "high": 100000}}), "train.epochs=100000"),
        (_with_param(model={"type": "categorical", "choices": ["mlp_huge"]}), "params.model=mlp_huge"),
        ({**SPACE, "fixed": {"train.epoch": 1}}, "unknown key"),
    ],
)
def test_bad_space_is_a_config_error_naming_the_key(tmp_path: Path, space: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("[", r"\[")):
        load_space(str(_write(tmp_path, space)), REPO / "conf")


def _count_compositions(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The overrides of every Hydra composition from now on (compose.compose still runs)."""
    calls: list[list[str]] = []
    real = compose.compose

    def counted(
        overrides: list[str] | None = None, conf_dir: str | Path = compose.CONF_DIR, resolve: bool = True
    ) -> str:
        calls.append(list(overrides or []))
        return real(overrides, conf_dir, resolve)

    monkeypatch.setattr(compose, "compose", counted)
    return calls


def test_a_space_with_too_many_choices_is_refused_before_any_composition(tmp_path, monkeypatch) -> None:
    calls = _count_compositions(monkeypatch)
    space = _with_param(**{"preset.name": {"type": "categorical", "choices": [f"c{i}" for i in range(5000)]}})
    with pytest.raises(ConfigError, match=r"params\.preset\.name\.choices has 5000 choices, more than the 1000"):
        load_space(str(_write(tmp_path, space)), REPO / "conf")
    many = _with_param(**{f"preset.c{i}": {"type": "float", "low": 0, "high": 1} for i in range(600)})
    with pytest.raises(ConfigError, match="1210 choices and range ends in all, more than the 1000"):
        load_space(str(_write(tmp_path, many)), REPO / "conf")
    assert calls == []


def test_a_space_of_interpolations_or_aliases_is_refused_before_composing_them(tmp_path, monkeypatch) -> None:
    calls = _count_compositions(monkeypatch)
    decoded = [f"${{oc.decode:'0.000{i}'}}" for i in range(100, 140)]  # each would need a whole composition
    space = _with_param(**{"train.label_smoothing": {"type": "categorical", "choices": decoded}})
    with pytest.raises(ConfigError, match="45 values need a Hydra composition each .* more than the 32"):
        load_space(str(_write(tmp_path, space)), REPO / "conf")
    assert len(calls) == 3  # the fixed overrides (with their groups, then all) and one look for ${...}: no value
    path = tmp_path / "aliases.yaml"
    path.write_text("params:\n  train.lr: &p {type: float, low: 0.01, high: 0.1}\n  train.l2: *p\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"not valid YAML: YAML aliases \(\*p\) are not accepted"):
        load_space(str(path), REPO / "conf")
    many = {"params": {f"preset.k{i}": {"type": "int", "low": 0, "high": 1} for i in range(1500)}}
    with pytest.raises(ConfigError, match="1500 params, more than the 1000 values a space may hold"):
        load_space(str(_write(tmp_path, many)), REPO / "conf")


def test_a_value_that_an_interpolation_reads_is_validated_as_composed(tmp_path) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)
    text = (conf / "config.yaml").read_text(encoding="utf-8")
    (conf / "config.yaml").write_text(text.replace("  dpi: 100 ", "  dpi: ${train.epochs} "), encoding="utf-8")
    space = {"params": {"train.epochs": {"type": "categorical", "choices": [10, 700]}}}
    with pytest.raises(ConfigError, match=r"params\.train\.epochs=700: .*report\.dpi=700 is invalid"):
        load_space(str(_write(tmp_path, space)), conf)


@pytest.mark.parametrize("last", [0.5, 1.5])
def test_a_thousand_choices_are_each_validated_without_a_composition_each(tmp_path, monkeypatch, last) -> None:
    calls = _count_compositions(monkeypatch)
    choices = [round(0.0001 * i, 4) for i in range(1, 985)] + [last]  # 985 + the other params' 10 values
    space = _with_param(**{"train.label_smoothing": {"type": "categorical", "choices": choices}})
    path = _write(tmp_path, space)
    if last > 1:  # the last of them is impossible: found all the same (not one composition each)
        with pytest.raises(ConfigError, match=r"params\.train\.label_smoothing=1\.5: train\.label_smoothing=1\.5"):
            load_space(str(path), REPO / "conf")
    else:
        loaded = load_space(str(path), REPO / "conf")
        assert next(p for p in loaded.params if p.name == "train.label_smoothing").choices == tuple(choices)
    assert 0 < len(calls) < 20, f"{len(calls)} compositions for {len(choices)} choices"


CHOICES = [
    ("train.lr", 0.05),
    ("train.lr", -1.0),
    ("train.lr", "fast"),
    ("train.lr", True),
    ("train.lr", 1),
    ("train.epochs", 2.5),
    ("train.epochs", "3"),
    ("train.loss", "mse_softmax"),
    ("train.loss", "hinge"),
    ("featurize.stratify", "false"),
    ("featurize.stratify", 0),
    ("preset.name", "${train.lr}"),
    ("preset.name", "${nowhere}"),
    ("preset.name", "a,b"),
    ("preset.name", "null"),
    ("preset.name", "[1]"),
    ("preset.name", "x y"),
    ("train.dtype", "float64"),
]


@pytest.mark.parametrize(("key", "value"), CHOICES)
def test_a_choice_is_accepted_exactly_when_composing_it_validates(tmp_path, key, value) -> None:
    try:
        text = compose.compose([override(key, value)], REPO / "conf")
        config.from_dict(yaml.safe_load(text))
        composes = True
    except ConfigError:
        composes = False
    space = {"params": {key: {"type": "categorical", "choices": [value]}}}
    try:
        load_space(str(_write(tmp_path, space)), REPO / "conf")
        accepted = True
    except ConfigError:
        accepted = False
    assert accepted == composes


def _tune(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mnist_pipeline.tune", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("space", "args", "named"),
    [
        (_with_param(**{"train.lrr": {"type": "float", "low": 0.1, "high": 0.2}}), [], "train.lrr"),
        (_with_param(**{"train.batch_size": {"type": "int", "low": 64, "high": 64}}), [], "empty range [64, 64]"),
        (SPACE, ["--storage", "postgresql://tuner@127.0.0.1:1/study"], "postgresql+psycopg://tuner@127.0.0.1:1/study"),
    ],
    ids=["unknown-key", "empty-range", "unreachable-database"],
)
def test_bad_input_stops_with_one_line_naming_it(tmp_path: Path, space: dict, args: list[str], named: str) -> None:
    result = _tune("--space", str(_write(tmp_path, space)), "--trials", "1", *args)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: tune: ") and named in lines[0], result.stderr
    assert not (REPO / storage.JOURNAL_DIR / "tune-space.log").exists()  # nothing written


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--minutes", "nan"], "--minutes must be a positive number, got nan"),  # NaN: a deadline never reached
        (["--minutes", "-1"], "--minutes must be a positive number, got -1.0"),
        (["--trials", "0"], "--trials must be a positive number, got 0"),
        (["--seed", str(2**32)], "--seed must be a whole number from 0 to 2147483647, got 4294967296"),
    ],
)
def test_a_bad_budget_or_seed_is_a_usage_error(tmp_path: Path, args: list[str], message: str) -> None:
    result = _tune("--space", str(_write(tmp_path, SPACE)), *args)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"error: tune: {message}; see --help\n"


@pytest.mark.parametrize(
    ("top", "message"),
    [
        (
            {"seed": 2**31},
            "seed must be a whole number from 0 to 2147483647, not 2147483648",
        ),  # optuna: < 2**32 - trials
        ({"minutes": 10**400}, "minutes must be a positive number, not 1000"),  # beyond float: no OverflowError
        (
            {"params": {"train.lr": {"type": "float", "low": 0.01, "high": 0.1, "log": "false"}}},
            "train.lr.log must be true or false, not 'false'",  # a string: bool("false") would switch log on
        ),
    ],
)
def test_a_space_seed_or_budget_out_of_range_names_it(tmp_path: Path, top: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_space(str(_write(tmp_path, {**SPACE, **top})), REPO / "conf")


@pytest.mark.parametrize("bad", [b"garbage{\n", b"\xff\xfe\n", b'{"x": 1}\n', b"[1]\n"])
def test_a_corrupt_study_journal_is_one_line_naming_it(tmp_path: Path, bad: bytes) -> None:
    journal = tmp_path / "study.log"
    study = optuna.create_study(study_name="s", storage=storage.open_storage(str(journal), "s"))
    study.set_user_attr("a", 1)
    study.set_user_attr("b", 2)
    first, _, *rest = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(first + bad + b"".join(rest))  # a line in the middle that Optuna did not write
    with pytest.raises(ConfigError, match=rf"^the study journal {re.escape(str(journal))} is corrupt \(\w+Error: "):
        storage.open_storage(str(journal), "s")


def _finished(study: optuna.Study, value: float | None, **attrs) -> None:
    trial = study.ask()
    for key, val in attrs.items():
        trial.set_user_attr(key, val)
    study.tell(trial, value, state=None if value is not None else optuna.trial.TrialState.FAIL)


def test_budget_leaves_out_requeued_and_skipped_trials() -> None:
    study = optuna.create_study(direction="maximize")
    _finished(study, 0.9)
    _finished(study, None, skipped="over budget")
    killed = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    assert storage.fail_and_requeue(study, study._storage.get_trial(killed._trial_id), "worker died")
    assert not storage.fail_and_requeue(study, study._storage.get_trial(killed._trial_id), "again")  # no 2nd copy
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "FAIL", "WAITING"]
    assert trials[3].params == killed.params and trials[3].system_attrs["failed_trial"] == killed.number
    assert [t.number for t in storage.counted(trials)] == [0, 3]
    assert not budget_spent(study, Budget(2, None), None)  # the waiting retry has yet to run
    assert budget_spent(study, Budget(1, None), None)


def test_ranking_by_validation_accuracy_and_a_preset_that_composes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = optuna.create_study(direction="maximize")
    space = parse_space("t", SPACE, "t.yaml")
    for value in (0.91, 0.95, None):
        trial = study.ask()
        suggest(trial, space)
        trial.set_user_attr("experiment", f"s-t{trial.number:03d}")
        if value is None:
            trial.set_user_attr("error", "dvc exp run exited 1: error: train: boom")
        study.tell(trial, value, state=None if value is not None else optuna.trial.TrialState.FAIL)
    rows = report.format_study(study).splitlines()
    assert rows[1].split()[:3] == ["1", "1", "s-t001"] and rows[2].split()[:3] == ["2", "0", "s-t000"]
    assert "fail: dvc exp run exited 1: error: train: boom" in rows[3]
    assert "dvc exp apply s-t001" in report.summary(study)
    conf = tmp_path / "conf"
    conf.mkdir()
    for item in (REPO / "conf").iterdir():
        (conf / item.name).symlink_to(item) if item.name != "experiment" else (conf / "experiment").mkdir()
    path = report.write_preset("tuned", study.best_trial, space, conf)
    params = yaml.safe_load(compose.compose(["experiment=tuned"], conf))
    assert path == conf / "experiment" / "tuned.yaml"
    assert params["train"]["lr"] == study.best_trial.params["train.lr"] and params["train"]["epochs"] == 1
    assert params["optimizer"]["name"] == study.best_trial.params["optimizer"]
    before = sorted(p.name for p in conf.iterdir()), (conf / "config.yaml").read_bytes()
    for name in ("../config", str(conf / "config"), "-x", "a.b"):  # a path, an option, a dotted name
        with pytest.raises(ConfigError, match=re.escape(f"--preset {name!r} is not a preset name")):
            report.write_preset(name, study.best_trial, space, conf)
    assert (sorted(p.name for p in conf.iterdir()), (conf / "config.yaml").read_bytes()) == before
    # a preset that does not compose is put back as it was
    (conf / "experiment" / "tuned.yaml").write_text("# mine\n", encoding="utf-8")
    monkeypatch.setattr(report, "preset_yaml", lambda *args: "train:\n  lr: [\n")  # YAML that cannot compose
    for name in ("tuned", "fresh"):
        with pytest.raises(ConfigError, match=f"cannot compose .* experiment={name}"):
            report.write_preset(name, study.best_trial, space, conf)
    assert (conf / "experiment" / "tuned.yaml").read_text(encoding="utf-8") == "# mine\n"
    assert not (conf / "experiment" / "fresh.yaml").exists()


def test_pushes_only_where_a_git_and_a_dvc_remote_are_both_set(tmp_path: Path) -> None:
    dvc = str(Path(sys.executable).parent / "dvc")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    for cmd in (["git", "init", "-q"], [dvc, "init", "-q"], ["git", "remote", "add", "upstream", "../x.git"]):
        subprocess.run(cmd, cwd=tmp_path, check=True, env=env, timeout=60)
    assert push_remote(dvc, tmp_path) is None  # one machine's clone: its experiments stay here
    subprocess.run([dvc, "remote", "add", "-d", "shared", str(tmp_path / "cache")], cwd=tmp_path, check=True, env=env)
    assert push_remote(dvc, tmp_path) == "upstream"


def test_without_the_tune_extra_it_says_how_to_install_it(tmp_path: Path) -> None:
    # An `optuna` that cannot be imported, first on the path: as if the extra were not installed.
    (tmp_path / "optuna").mkdir()
    (tmp_path / "optuna" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'optuna'\", name='optuna')\n", encoding="utf-8"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    for args in (["--help"], ["--trials", "1"]):
        out = subprocess.run(
            [sys.executable, "-m", "mnist_pipeline.tune", *args], capture_output=True, text=True, timeout=60, env=env
        )
        assert out.returncode == 1 and out.stdout == ""
        assert out.stderr.strip().splitlines() == [
            "error: tune: optuna is not installed; run `make tune`, or install the extra: "
            "pip install -c requirements.lock -e '.[tune]'"
        ]
    assert _tune("--help").returncode == 0  # with the extra, the command line as before
