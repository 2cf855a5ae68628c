"""The search space of a tuning study: ``conf/tune/<name>.yaml``, read, validated and sampled.

A space file names the params to search (``params:``, in order; each a dotted key of
params.yaml or a conf group such as ``model``), the overrides every trial shares (``fixed:``), the
budget (``trials``, ``minutes``) and the sampler's ``seed``. :func:`load_space` checks it like
every other config: an unknown key, an empty range or an unknown type is a one-line
:class:`~mnist_pipeline.errors.ConfigError` naming it, and every range end and choice is read as
Hydra reads it and validated as a whole params.yaml, so no trial is spent on a value the train
stage would refuse. :func:`suggest` turns one Optuna trial into ``dvc exp run -S`` overrides.
"""

from __future__ import annotations

import copy
import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mnist_pipeline import compose, config
from mnist_pipeline.errors import ConfigError
from mnist_pipeline.params import YamlLoader, is_finite_number, shown
from mnist_pipeline.paths import read_capped_text

if TYPE_CHECKING:
    from hydra.core.override_parser.types import Override

SPACE_DIR = "tune"  # conf/tune/<name>.yaml
MAX_VALUES = 1000  # choices and range ends of a whole space: each is validated, and TPE gains nothing from more
MAX_COMPOSED = 32  # of those, values that need a whole Hydra composition each (about 0.1 s)
# Optuna's samplers take seeds below 2**32, and trial k of a study samples with seed + k: a 31-bit seed
# leaves room for 2**31 trials.
MAX_SEED = 2**31 - 1
TOP_KEYS = {"params", "fixed", "trials", "minutes", "seed", "startup_trials"}
# Per type, the keys a param may have (besides `type` and `when`) and the ones it must have.
TYPES = {
    "float": ({"low", "high", "log", "step"}, {"low", "high"}),
    "int": ({"low", "high", "log", "step"}, {"low", "high"}),
    "categorical": ({"choices"}, {"choices"}),
}
Scalar = bool | int | float | str


@dataclass(frozen=True)
class Param:
    """One searched key: a range (``float``/``int``) or a list of ``choices`` (``categorical``).

    ``when`` makes it conditional: ``{"optimizer": ["momentum", "nesterov"]}`` samples it only in
    trials whose earlier param ``optimizer`` took one of those values.
    """

    name: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Scalar, ...] = ()
    when: dict[str, tuple[Scalar, ...]] = field(default_factory=dict)

    def values(self) -> tuple[Scalar, ...]:
        """The values to validate: both ends of a range, or every choice."""
        if self.type == "categorical":
            return self.choices
        assert self.low is not None and self.high is not None  # a range has both ends (checked when parsed)
        return (self.low, self.high)


@dataclass(frozen=True)
class Space:
    """A validated search space (see the module docstring)."""

    name: str
    params: tuple[Param, ...]
    fixed: dict[str, Scalar]
    trials: int | None = None
    minutes: float | None = None
    seed: int = 0
    startup_trials: int = 10


def override(name: str, value: Scalar) -> str:
    """``name=value`` as ``dvc exp run -S`` (Hydra) reads it back: ``train.lr=0.05``, ``model=mlp_64_sigmoid``."""
    if isinstance(value, bool):
        return f"{name}={str(value).lower()}"
    return f"{name}={value!r}" if isinstance(value, float) else f"{name}={value}"


def suggest(trial: Any, space: Space) -> list[str]:
    """Sample ``trial`` (an ``optuna.Trial``) over ``space``; its overrides, fixed ones first."""
    chosen: dict[str, Scalar] = {}
    for p in space.params:
        if any(chosen.get(key) not in allowed for key, allowed in p.when.items()):
            continue
        if p.type == "categorical":
            chosen[p.name] = trial.suggest_categorical(p.name, list(p.choices))
        elif p.type == "int":
            chosen[p.name] = trial.suggest_int(p.name, p.low, p.high, step=p.step or 1, log=p.log)
        else:
            chosen[p.name] = trial.suggest_float(p.name, p.low, p.high, step=p.step, log=p.log)
    return [override(k, v) for k, v in {**space.fixed, **chosen}.items()]


def space_file(name: str, conf_dir: str | Path = compose.CONF_DIR) -> Path:
    """``conf/tune/<name>.yaml``, or ``name`` itself if it is a path to a YAML file."""
    path = Path(name)
    return path if path.suffix in (".yaml", ".yml") else Path(conf_dir) / SPACE_DIR / f"{name}.yaml"


def load_space(name: str, conf_dir: str | Path = compose.CONF_DIR) -> Space:
    """Read and validate a search space (see the module docstring); ConfigError names what is wrong."""
    path = space_file(name, conf_dir)
    try:
        text = read_capped_text(path, "a search space is a few lines")
        data = yaml.load(text, Loader=YamlLoader)  # noqa: S506 - safe, reads 1e-6 as a float, no aliases
    except OSError as exc:
        raise ConfigError(f"cannot read search space {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"search space {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    space = parse_space(path.stem, data, str(path))
    check_against_conf(space, conf_dir, str(path))
    return space


def parse_space(name: str, data: Any, source: str) -> Space:
    """Check the structure of a space mapping (no conf/ needed) and build a :class:`Space`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a search space is a mapping with `params:`")
    _no_unknown(source, data, TOP_KEYS, "key")
    if not isinstance(data.get("params"), dict) or not data["params"]:
        raise ConfigError(f"{source}: `params` must map at least one key to its range or choices")
    if len(data["params"]) > MAX_VALUES:  # each has a value at least: refused before any is parsed
        raise ConfigError(f"{source}: {len(data['params'])} params, more than the {MAX_VALUES} values a space may hold")
    params: list[Param] = []
    for key, spec in data["params"].items():
        params.append(_parse_param(f"{source}: params.{key}", str(key), spec, params))
    if (count := sum(len(p.values()) for p in params)) > MAX_VALUES:
        raise ConfigError(
            f"{source}: {count} choices and range ends in all, more than the {MAX_VALUES} a space may hold; "
            "search fewer values"
        )
    fixed = data.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise ConfigError(f"{source}: `fixed` must map keys to values")
    trials, minutes = data.get("trials"), data.get("minutes")
    _check(f"{source}: trials", trials is None or (_is_int(trials) and trials > 0), "a positive whole number", trials)
    _check(f"{source}: minutes", minutes is None or (_is_num(minutes) and minutes > 0), "a positive number", minutes)
    seed, startup = data.get("seed", 0), data.get("startup_trials", 10)
    _check(f"{source}: seed", _is_int(seed) and 0 <= seed <= MAX_SEED, f"a whole number from 0 to {MAX_SEED}", seed)
    _check(f"{source}: startup_trials", _is_int(startup) and startup >= 1, "a whole number >= 1", startup)
    return Space(name, tuple(params), {str(k): v for k, v in fixed.items()}, trials, minutes, seed, startup)


def _parse_param(where: str, name: str, spec: Any, earlier: list[Param]) -> Param:
    if not isinstance(spec, dict) or spec.get("type") not in TYPES:
        given = spec.get("type") if isinstance(spec, dict) else spec
        raise ConfigError(f"{where}: unknown type {given!r}; valid: {', '.join(TYPES)}")
    allowed, required = TYPES[spec["type"]]
    _no_unknown(where, spec, allowed | {"type", "when"}, "key")
    if missing := sorted(required - set(spec)):
        raise ConfigError(f"{where}: missing {', '.join(missing)}")
    when = _parse_when(where, spec.get("when") or {}, earlier)
    if spec["type"] == "categorical":
        choices = spec["choices"]
        _check(f"{where}.choices", isinstance(choices, list) and bool(choices), "a non-empty list", choices)
        if len(choices) > MAX_VALUES:
            raise ConfigError(
                f"{where}.choices has {len(choices)} choices, more than the {MAX_VALUES} a space may hold"
            )
        scalars = all(isinstance(c, bool | int | float | str) for c in choices)
        _check(f"{where}.choices", scalars and len(set(choices)) == len(choices), "distinct scalars", choices)
        return Param(name, "categorical", choices=tuple(choices), when=when)
    low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    _check(f"{where}.log", isinstance(log, bool), "true or false", log)  # bool("false") would be True
    number = _is_int if spec["type"] == "int" else _is_num
    _check(f"{where}.low", number(low), f"a {spec['type']}", low)
    _check(f"{where}.high", number(high), f"a {spec['type']}", high)
    if not low < high:
        raise ConfigError(f"{where}: empty range [{low}, {high}]; low must be below high")
    _check(f"{where}.low", not log or low > 0, "positive with log: true", low)
    _check(f"{where}.step", step is None or (number(step) and step > 0 and not log), "positive, without log", step)
    return Param(name, spec["type"], low, high, log, step, when=when)


def _parse_when(where: str, when: Any, earlier: list[Param]) -> dict[str, tuple[Scalar, ...]]:
    if not isinstance(when, dict):
        raise ConfigError(f"{where}.when must map an earlier categorical param to the values that enable this one")
    by_name = {p.name: p for p in earlier if p.type == "categorical"}
    parsed = {}
    for key, values in when.items():
        if key not in by_name:
            raise ConfigError(f"{where}.when: {key} is not an earlier categorical param")
        values = tuple(values) if isinstance(values, list) else (values,)
        if bad := [v for v in values if v not in by_name[key].choices]:
            raise ConfigError(f"{where}.when: {bad[0]!r} is not one of the choices of {key}")
        parsed[str(key)] = values
    return parsed


def check_against_conf(space: Space, conf_dir: str | Path, source: str) -> None:
    """Every key exists (a params.yaml key or a conf group) and every range end and choice composes and validates.

    A value of a params.yaml key is parsed by Hydra's override grammar, as ``dvc exp run -S``
    parses it, put into the composed params and validated: a thousand choices take well under a
    second. A conf group's option, an interpolation or a sweep, the context of a conditional param,
    and every value when the config holds a ``${...}`` (which may read the key) need a whole Hydra
    composition (about 0.1 s): a space may hold :data:`MAX_COMPOSED` of those.
    """
    groups = [override(k, v) for k, v in space.fixed.items() if _is_group(k, conf_dir)]
    with_groups = _validated(groups, conf_dir, f"{source}: fixed")
    for key in space.fixed:
        if not _is_group(key, conf_dir) and not _has_key(with_groups, key):
            raise ConfigError(f"{source}: fixed.{key} is an unknown key (neither a params.yaml key nor a conf group)")
    fixed = [override(k, v) for k, v in space.fixed.items()]
    base = _validated(fixed, conf_dir, f"{source}: fixed")
    # A value set in place is right only if nothing in the config interpolates it: with any ${...}, compose each.
    interpolating = "${" in compose.compose(fixed, conf_dir, resolve=False)
    composed = sum(
        _is_group(p.name, conf_dir) or interpolating or _plain(override(p.name, v)) is None
        for p in space.params
        for v in p.values()
    ) + sum(bool(p.when) for p in space.params)  # each conditional param composes its condition's context
    if composed > MAX_COMPOSED:
        raise ConfigError(
            f"{source}: {composed} values need a Hydra composition each (conf group options, ${{...}} interpolations, "
            f"sweeps), more than the {MAX_COMPOSED} a space may hold"
        )
    for p in space.params:
        condition = [override(k, values[0]) for k, values in p.when.items()]
        where = f"{source}: params.{p.name}"
        if _is_group(p.name, conf_dir):
            options = sorted(f.stem for f in (Path(conf_dir) / p.name).glob("*.yaml"))
            for value in p.values():
                if str(value) not in options:
                    raise ConfigError(f"{where}={value}: not a conf/{p.name} option (have: {', '.join(options)})")
                _validated(fixed + condition + [override(p.name, value)], conf_dir, f"{where}={value}")
            continue
        context = _validated(fixed + condition, conf_dir, where) if condition else base
        if not _has_key(context, p.name):
            raise ConfigError(f"{where} is an unknown key (neither a params.yaml key nor a conf group)")
        for value in p.values():
            overrides = fixed + condition + [override(p.name, value)]
            if interpolating:
                _validated(overrides, conf_dir, f"{where}={value}")
            else:
                _validated_value(context, overrides, conf_dir, f"{where}={value}")


def _validated_value(context: dict[str, Any], overrides: list[str], conf_dir: str | Path, where: str) -> None:
    """The params ``context`` with the last of ``overrides`` applied, validated (composed only if it must be).

    A plain scalar is set in place of a full Hydra composition (what takes the time); a sweep, an
    interpolation or anything else Hydra would treat specially is composed as ``dvc exp run`` would.
    """
    parsed = _plain(overrides[-1])
    if parsed is None:
        _validated(overrides, conf_dir, where)
        return
    value = parsed.value()
    data = copy.deepcopy(context)
    *parents, last = parsed.key_or_group.split(".")
    node = data
    for key in parents:
        node = node[key]
    node[last] = value
    try:
        config.from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _plain(text: str) -> Override | None:
    """Hydra's parse of the override ``text`` if it sets a key to a scalar Hydra takes as it is (no sweep,
    interpolation, add or delete), else None; an override it cannot parse is not plain (composing it says why)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_override(text)
    except HydraException:
        return None
    value = parsed.value()
    scalar = isinstance(value, bool | int | float) or (isinstance(value, str) and "${" not in value)
    return parsed if scalar and not (parsed.is_sweep_override() or parsed.is_add() or parsed.is_delete()) else None


def _validated(overrides: list[str], conf_dir: str | Path, where: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(compose.compose(overrides, conf_dir))
        config.from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    return data


def _is_group(name: str, conf_dir: str | Path) -> bool:
    return "." not in name and name != SPACE_DIR and (Path(conf_dir) / name).is_dir()


def _has_key(data: Any, dotted: str) -> bool:
    for key in dotted.split("."):
        if not isinstance(data, dict) or key not in data:
            return False
        data = data[key]
    return True


def _no_unknown(where: str, data: dict[Any, Any], allowed: set[str], what: str) -> None:
    if unknown := sorted(str(k) for k in set(data) - allowed):
        raise ConfigError(f"{where}: unknown {what} {unknown[0]!r}; valid: {', '.join(sorted(allowed))}")


_SHORT = reprlib.Repr()  # a value in a message: its first items, not all of a thousand
_SHORT.maxlist = _SHORT.maxdict = 6
_SHORT.maxstring = _SHORT.maxother = 60


def _check(where: str, ok: bool, expected: str, value: Any) -> None:
    if not ok:
        try:
            text = _SHORT.repr(value)
        except ValueError:  # an int too long to write out (YAML reads long hexadecimal numbers)
            text = shown(value)
        raise ConfigError(f"{where} must be {expected}, not {text}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_num(value: Any) -> bool:
    return is_finite_number(value)
