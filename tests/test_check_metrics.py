"""check_metrics: gates from a YAML file, a `dvc metrics diff`-style table, reproduction checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mnist_pipeline import check_metrics as cm
from mnist_pipeline import compose, config
from mnist_pipeline.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
METRICS = {
    "test": {"accuracy": 0.9803, "loss": 0.06025323, "macro_f1": 0.9801881542827182},
    "val": {"accuracy": 0.9792, "loss": 0.07652983},
}


def _flat(**changes: float) -> dict[str, float]:
    flat = cm.flatten(METRICS)
    flat.update(changes)
    return flat


# --- reading ------------------------------------------------------------------------------------


def test_flatten_keeps_numeric_leaves_with_dotted_keys() -> None:
    data = {"test": {"accuracy": 0.5, "n": 3, "ok": True, "name": "x"}, "top": 1.5}
    assert cm.flatten(data) == {"test.accuracy": 0.5, "test.n": 3, "top": 1.5}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", r"not usable JSON \(nested too deeply\)"),
        ('{"test": {"accuracy": 1' + "0" * 5000 + "}}", r"not usable JSON \(an integer of over 4300 digits\)"),
        ('{"test": {"accuracy": 1' + "0" * 400 + "}}", r"test\.accuracy is 1000.*left out.*not a finite number"),
    ],
)
def test_parse_metrics_rejects_bad_json(text: str, needle: str) -> None:
    with pytest.raises(DataError, match=needle):
        cm.parse_metrics(text, "m.json")


def test_read_metrics_missing_file_says_run_repro(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"cannot read .*metrics.json.*dvc repro"):
        cm.read_metrics(tmp_path / "metrics.json")


# --- gates --------------------------------------------------------------------------------------


def test_gate_passes_at_and_above_the_minimum() -> None:
    assert cm.gate_failures(_flat(), {"test.accuracy": 0.9803}, "mnist/default") == []
    assert cm.gate_failures(_flat(), {"test.accuracy": 0.98, "val.accuracy": 0.97}, "mnist/default") == []


def test_gate_fails_below_the_minimum_with_one_line_per_metric() -> None:
    failures = cm.gate_failures(_flat(), {"test.accuracy": 0.99, "val.accuracy": 0.995}, "mnist/best in g.yaml")
    assert failures == [
        "test.accuracy 0.9803 < 0.99, the minimum for mnist/best in g.yaml",
        "val.accuracy 0.9792 < 0.995, the minimum for mnist/best in g.yaml",
    ]


def test_gate_on_a_metric_missing_from_metrics_json() -> None:
    failures = cm.gate_failures(_flat(), {"test.top5_accuracy": 0.9}, "mnist/default")
    assert failures == ["test.top5_accuracy is missing from reports/metrics.json; mnist/default requires >= 0.9"]


def _write(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data) if path.suffix == ".yaml" else json.dumps(data), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("gates", "needle"),
    [
        ([], "must map dataset names"),
        ({"mnist": []}, "mnist must map preset names"),
        ({"mnist": {"default": {}}}, r"mnist\.default must map metric names"),
        ({"mnist": {"default": {"test.accuracy": "high"}}}, r"test\.accuracy='high' is invalid"),
        ({"mnist": {"default": {"test.accuracy": True}}}, r"test\.accuracy=True is invalid"),
        ({"mnist": {"default": {"test.accuracy": 10**400}}}, r"test\.accuracy=1000.*left out.* must be a finite"),
        ({"mnist": {"default": {"test.accuracy": 0.98, 1: 0.5}}}, r"mnist\.default: the name 1 must be text"),
        ({5: {"default": {"test.accuracy": 0.98}}}, r"5\.default: the name 5 must be text; quote it"),
    ],
)
def test_load_gates_rejects_malformed_files(tmp_path: Path, gates, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        cm.load_gates(_write(tmp_path / "gates.yaml", gates))


def test_select_gate_names_what_is_missing() -> None:
    gates = {"mnist": {"default": {"test.accuracy": 0.98}, "best": {"test.accuracy": 0.988}}}
    assert cm.select_gate(gates, "mnist", "best", "g.yaml") == {"test.accuracy": 0.988}
    with pytest.raises(ConfigError, match=r"g.yaml has no gate for dataset 'fashion_mnist' \(it has: mnist\)"):
        cm.select_gate(gates, "fashion_mnist", "default", "g.yaml")
    with pytest.raises(ConfigError, match=r"no gate for preset 'relu_100' of mnist \(it has: default, best\)"):
        cm.select_gate(gates, "mnist", "relu_100", "g.yaml")


def test_committed_gates_cover_default_and_every_preset() -> None:
    gates = cm.load_gates(REPO / cm.GATES_FILE)
    presets = {p.stem for p in (CONF / "experiment").glob("*.yaml")}
    assert set(gates["mnist"]) == presets | {"default"}
    assert gates["mnist"]["default"] == {"test.accuracy": 0.982}  # issue 4: default >= 0.982
    assert gates["mnist"]["best"] == {"test.accuracy": 0.993}
    assert gates["mnist"]["softmax_regression"] == {"test.accuracy": 0.90}


def test_gate_file_is_not_a_hydra_group() -> None:
    # conf/gates.yaml sits beside config.yaml, not in a group directory, and nothing composes it.
    assert (CONF / "gates.yaml").is_file() and not (CONF / "gates").exists()
    composed = yaml.safe_load(compose.compose(conf_dir=CONF))
    assert "mnist" not in composed and "gates" not in composed


# --- presets ------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["best", "relu_100", "softmax_regression"])
def test_detect_preset_finds_the_composed_experiment(preset: str) -> None:
    cfg = config.from_dict(yaml.safe_load(compose.compose([f"experiment={preset}"], conf_dir=CONF)))
    assert cm.detect_preset(cfg, CONF) == preset


def test_detect_preset_default_ignores_dataset_and_report_settings() -> None:
    text = compose.compose(["dataset=fashion_mnist", "report.dpi=50", "download.retries=0"], conf_dir=CONF)
    assert cm.detect_preset(config.from_dict(yaml.safe_load(text)), CONF) == "default"


def test_detect_preset_none_for_custom_parameters() -> None:
    text = compose.compose(["train.lr=0.0123"], conf_dir=CONF)
    assert cm.detect_preset(config.from_dict(yaml.safe_load(text)), CONF) is None


# --- reproduction -------------------------------------------------------------------------------


def test_reproduction_accepts_identical_and_tiny_loss_differences() -> None:
    loss = METRICS["test"]["loss"]
    assert cm.reproduce_failures(_flat(), _flat(), "HEAD", 1e-6) == []
    assert cm.reproduce_failures(_flat(**{"test.loss": loss * (1 + 5e-7)}), _flat(), "HEAD", 1e-6) == []


def test_reproduction_requires_exact_accuracy_and_close_losses() -> None:
    loss = METRICS["test"]["loss"]
    current = _flat(**{"test.accuracy": 0.9804, "test.loss": loss * (1 + 1e-5)})
    failures = cm.reproduce_failures(current, _flat(), "HEAD:reports/metrics.json", 1e-6)
    assert len(failures) == 2
    assert (
        failures[0] == "test.accuracy 0.9804 != 0.9803 in HEAD:reports/metrics.json; accuracies must reproduce exactly"
    )
    assert failures[1].startswith("test.loss ") and "relative (> 1e-06)" in failures[1]


def test_reproduction_flags_metrics_present_on_one_side_only() -> None:
    baseline = _flat()
    current = {k: v for k, v in baseline.items() if k != "val.loss"}
    current["test.new_metric"] = 1.0
    failures = cm.reproduce_failures(current, baseline, "HEAD", 1e-6)
    assert failures == [
        "test.new_metric is missing from HEAD; a reproduction must have the same metrics",
        "val.loss is missing from reports/metrics.json; a reproduction must have the same metrics",
    ]


# --- table --------------------------------------------------------------------------------------


def test_table_matches_dvc_metrics_diff_layout() -> None:
    baseline = _flat(**{"test.accuracy": 0.9750, "val.loss": 0.08})
    table = cm.format_table(_flat(), baseline, "HEAD", {"test.accuracy": 0.98})
    lines = table.splitlines()
    assert lines[0].split() == ["Path", "Metric", "HEAD", "workspace", "Change", "Gate"]
    rows = {line.split()[1]: line.split() for line in lines[1:]}
    assert rows["test.accuracy"] == [
        "reports/metrics.json",
        "test.accuracy",
        "0.975",
        "0.9803",
        "0.0053",
        ">=",
        "0.98",
        "ok",
    ]
    assert rows["val.loss"] == ["reports/metrics.json", "val.loss", "0.08", "0.07653", "-0.00347"]  # 5 decimals
    assert [line.split()[1] for line in lines[1:]] == sorted(rows)
    col = lines[0].index("Metric")
    assert all(line[col:].startswith(("test.", "val.")) for line in lines[1:])  # columns are aligned


def test_table_marks_failures_and_missing_values() -> None:
    table = cm.format_table({"test.accuracy": 0.5}, None, "HEAD", {"test.accuracy": 0.98, "val.accuracy": 0.9})
    rows = {line.split()[1]: line.split() for line in table.splitlines()[1:]}
    assert rows["test.accuracy"][2:] == ["-", "0.5", "-", ">=", "0.98", "FAIL"]
    assert rows["val.accuracy"][2:] == ["-", "-", "-", ">=", "0.9", "FAIL"]


# --- the command --------------------------------------------------------------------------------


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run directory: params.yaml (the repo's), reports/metrics.json, a gate file and a baseline."""
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "reports").mkdir()
    _write(tmp_path / "reports" / "metrics.json", METRICS)
    _write(tmp_path / "gates.yaml", {"mnist": {"default": {"test.accuracy": 0.98}, "best": {"test.accuracy": 0.99}}})
    baseline = json.loads(json.dumps(METRICS))
    baseline["test"]["accuracy"] = 0.9790
    _write(tmp_path / "baseline.json", baseline)
    return tmp_path


def _check(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "LOGLEVEL"}
    env.update(GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1")
    return subprocess.run(
        [sys.executable, "-m", "mnist_pipeline.check_metrics", "--gates", "gates.yaml", "--conf", str(CONF), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_passes_and_prints_the_table(run_dir: Path) -> None:
    result = _check(run_dir, "--baseline", "baseline.json")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["Path", "Metric", "baseline.json", "workspace", "Change", "Gate"]
    assert ["reports/metrics.json", "test.accuracy", "0.979", "0.9803", "0.0013", ">=", "0.98", "ok"] in [
        line.split() for line in lines
    ]
    assert lines[-1] == "check-metrics: OK: test.accuracy 0.9803 >= 0.98 (mnist/default in gates.yaml)"
    assert result.stderr == ""


def test_cli_fails_with_one_line_per_missed_gate(run_dir: Path) -> None:
    result = _check(run_dir, "--baseline", "baseline.json", "--preset", "best")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "check-metrics: FAIL: test.accuracy 0.9803 < 0.99, the minimum for mnist/best in gates.yaml"
    ]
    assert ">= 0.99 FAIL" in result.stdout


def test_cli_missing_gate_is_one_clear_error(run_dir: Path) -> None:
    result = _check(run_dir, "--baseline", "baseline.json", "--preset", "capstone")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: check-metrics: gates.yaml has no gate for preset 'capstone' of mnist (it has: best, default); "
        "add one or pass --preset"
    ]
    assert "Traceback" not in result.stderr


def test_cli_reproduce_against_a_file(run_dir: Path) -> None:
    failed = _check(run_dir, "--baseline", "baseline.json", "--reproduce")
    assert failed.returncode == 1
    assert "test.accuracy 0.9803 != 0.979 in baseline.json:reports/metrics.json" in failed.stderr
    _write(run_dir / "baseline.json", METRICS)
    assert _check(run_dir, "--baseline", "baseline.json", "--reproduce").returncode == 0


def test_cli_baseline_from_git_head(run_dir: Path) -> None:
    git_env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    for args in (
        ["init", "-q"],
        ["add", "reports/metrics.json"],
        ["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "baseline"],
    ):
        subprocess.run(["git", *args], cwd=run_dir, env=git_env, check=True, capture_output=True, timeout=60)
    changed = json.loads(json.dumps(METRICS))
    changed["val"]["accuracy"] = 0.9800
    _write(run_dir / "reports" / "metrics.json", changed)
    result = _check(run_dir)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[1]: line.split() for line in result.stdout.splitlines()[1:] if line.startswith("reports/")}
    assert rows["val.accuracy"][2:5] == ["0.9792", "0.98", "0.0008"]
    assert result.stdout.splitlines()[0].split()[2] == "HEAD"
    reproduced = _check(run_dir, "--reproduce")
    assert (
        reproduced.returncode == 1 and "val.accuracy 0.98 != 0.9792 in HEAD:reports/metrics.json" in reproduced.stderr
    )


def test_cli_a_rev_that_names_no_commit_or_non_utf8_metrics_is_one_line(run_dir: Path) -> None:
    git_env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    (run_dir / "reports" / "metrics.json").write_bytes(b'{"test": {"accuracy": 0.98}} \xff\xfe')
    for args in (
        ["init", "-q"],
        ["add", "reports/metrics.json"],
        ["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "not utf-8"],
    ):
        subprocess.run(["git", *args], cwd=run_dir, env=git_env, check=True, capture_output=True, timeout=60)
    _write(run_dir / "reports" / "metrics.json", METRICS)
    typo = _check(run_dir, "--rev", "HAED")  # without the check: "no baseline", then OK and exit 0
    assert typo.returncode == 1 and typo.stdout == ""
    assert typo.stderr == (
        "error: check-metrics: --rev 'HAED' names no commit of this repository; check it with `git log`\n"
    )
    for args in ([], ["--rev", "HEAD"]):
        result = _check(run_dir, *args)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert result.stderr == (
            "error: check-metrics: HEAD:reports/metrics.json is not UTF-8 text (byte 29); is it the right file?\n"
        )


def test_cli_without_git_baseline_still_gates(run_dir: Path) -> None:
    result = _check(run_dir, "--rev", "HEAD")  # run_dir is no git repository
    assert result.returncode == 0, result.stderr
    assert "check-metrics: no baseline: git show HEAD:reports/metrics.json failed" in result.stdout
    reproduce = _check(run_dir, "--reproduce")
    assert reproduce.returncode == 1 and "--reproduce needs a baseline" in reproduce.stderr


def test_cli_custom_params_gate_as_default_with_a_note(run_dir: Path) -> None:
    params = yaml.safe_load((run_dir / "params.yaml").read_text(encoding="utf-8"))
    params["train"]["lr"] = 0.0123
    (run_dir / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    result = _check(run_dir, "--baseline", "baseline.json")
    assert result.returncode == 0, result.stderr
    assert "check-metrics: params.yaml matches no preset; gating as default (see --preset)" in result.stdout


# --- reproduction across compute fingerprints ---------------------------------------------------

FINGERPRINT = {"blas": "openblas", "blas_kernel": "Haswell", "blas_threads": 2, "numpy_simd": ["X86_V3"]}


def _fingerprints(**train_changes) -> dict:
    return {"train": {**FINGERPRINT, **train_changes}, "evaluate": FINGERPRINT}


def test_drift_failures_hold_accuracies_to_the_tolerance() -> None:
    tol = {"test.accuracy": 0.003, "val.accuracy": 0.004}
    assert cm.drift_failures(_flat(**{"test.accuracy": 0.9833, "test.loss": 9.0}), _flat(), "HEAD", tol) == []
    failures = cm.drift_failures(_flat(**{"val.accuracy": 0.9742}), _flat(), "HEAD:reports/metrics.json", tol)
    assert failures == [
        "val.accuracy 0.9742 is 0.0050 from 0.9792 in HEAD:reports/metrics.json (> 0.004): more than another "
        "compute fingerprint explains (the seed spread); look for a real regression"
    ]
    assert cm.drift_failures({}, _flat(), "HEAD", tol)[0].startswith("test.accuracy is missing from")


def test_cli_reproduce_with_equal_fingerprints_is_exact(run_dir: Path) -> None:
    _write(run_dir / "reports" / "compute.json", _fingerprints())
    _write(run_dir / "base_compute.json", _fingerprints())
    args = ("--baseline", "baseline.json", "--baseline-compute", "base_compute.json", "--reproduce")
    result = _check(run_dir, *args)
    assert result.returncode == 1
    exact = "check-metrics: compute fingerprint equals base_compute.json; the reproduction must be exact"
    assert exact in result.stdout
    assert "test.accuracy 0.9803 != 0.979 in baseline.json:reports/metrics.json" in result.stderr


def test_cli_reproduce_with_another_fingerprint_uses_the_tolerance(run_dir: Path) -> None:
    _write(run_dir / "reports" / "compute.json", _fingerprints(blas_kernel="SkylakeX", numpy_simd=["X86_V3", "X86_V4"]))
    _write(run_dir / "base_compute.json", _fingerprints())
    args = ("--baseline", "baseline.json", "--baseline-compute", "base_compute.json", "--reproduce")
    result = _check(run_dir, *args)  # test.accuracy 0.9803 against 0.9790: within 0.003
    assert result.returncode == 0, result.stderr
    assert (
        "check-metrics: compute fingerprint differs from base_compute.json in train.blas_kernel: SkylakeX (was "
        "Haswell); train.numpy_simd: X86_V3 X86_V4 (was X86_V3): rounding differs, so test.accuracy within "
        "0.003 and val.accuracy within 0.0065 of the baseline are required (losses are not compared)"
    ) in result.stdout
    missed = _check(run_dir, *args, "--drift-tol", "0.001")
    assert missed.returncode == 1
    assert missed.stderr.splitlines() == [
        "check-metrics: FAIL: test.accuracy 0.9803 is 0.0013 from 0.979 in baseline.json:reports/metrics.json "
        "(> 0.001): more than another compute fingerprint explains (the seed spread); look for a real regression"
    ]


def test_cli_reproduce_without_a_baseline_fingerprint_is_exact(run_dir: Path) -> None:
    _write(run_dir / "reports" / "compute.json", _fingerprints(blas_kernel="SkylakeX"))
    result = _check(run_dir, "--baseline", "baseline.json", "--reproduce")
    assert result.returncode == 1
    exact = "no compute fingerprint in the baseline (pass --baseline-compute); the reproduction must be exact"
    assert exact in result.stdout


def test_cli_reproduce_rejects_a_malformed_fingerprint_file(run_dir: Path) -> None:
    (run_dir / "reports" / "compute.json").write_text("[1, 2", encoding="utf-8")
    _write(run_dir / "base_compute.json", _fingerprints())
    result = _check(run_dir, "--baseline", "baseline.json", "--baseline-compute", "base_compute.json", "--reproduce")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: check-metrics: reports/compute.json is not valid JSON")


@pytest.mark.parametrize(
    ("flag", "value"), [("--drift-tol", "nan"), ("--drift-tol", "-0.5"), ("--rel-tol", "-1"), ("--rel-tol", "inf")]
)
def test_a_tolerance_that_is_not_a_finite_non_negative_number_is_refused(run_dir: Path, flag: str, value: str) -> None:
    # NaN would pass every comparison, and so a real regression; a negative one would fail every metric
    result = _check(run_dir, "--baseline", "baseline.json", "--reproduce", flag, value)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        f"error: check-metrics: argument {flag}: '{value}' is not a tolerance: give a finite number >= 0; see --help\n"
    )


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_a_non_finite_metric_is_refused(value: str) -> None:
    with pytest.raises(DataError, match=r"^m\.json: test\.loss is .*, not a finite number; rerun `dvc repro evaluate`"):
        cm.parse_metrics(f'{{"test": {{"accuracy": 0.98, "loss": {value}}}}}', "m.json")


def test_a_fifo_as_metrics_file_is_refused_not_waited_on(run_dir: Path) -> None:
    (run_dir / "reports" / "metrics.json").unlink()
    os.mkfifo(run_dir / "reports" / "metrics.json")
    result = _check(run_dir, "--baseline", "baseline.json")  # _check's timeout bounds a hang
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert (
        result.stderr.strip()
        == "error: check-metrics: reports/metrics.json is a FIFO, not a regular file; refusing to read it"
    )
