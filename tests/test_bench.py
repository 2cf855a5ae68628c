"""Benchmark harness: the exact FLOP count, statistics and checks, targets and the markdown table.

No timing is asserted here; ``make bench`` measures. Nothing in these tests imports torch.
"""

from __future__ import annotations

import copy

import pytest

from mnist_pipeline.bench import flops
from mnist_pipeline.bench.compare import rotation, spread, summarize
from mnist_pipeline.bench.configs import CONFIGS, BenchConfig, select
from mnist_pipeline.bench.report import render_markdown, targets
from mnist_pipeline.bench.system import clean_env, cpu_model

HEADLINE = (784, 256, 128, 10)


def test_step_gemms_order_and_shapes_skip_first_layer_input_grad():
    assert flops.step_gemms([784, 64, 10], 128) == [
        (128, 784, 64),  # Z0 = X W0
        (128, 64, 10),  # Z1 = A1 W1
        (64, 128, 10),  # dW1 = A1^T G1
        (128, 10, 64),  # dA1 = G1 W1^T
        (784, 128, 64),  # dW0 = X^T G0, and no dX for the pixels
    ]


def test_headline_epoch_flops_hand_worked():
    # sum in*out = 200704 + 32768 + 1280 = 234752; 3 * 234752 - 784 * 256 = 503552; * 2 * 55000
    assert flops.closed_form_flops(HEADLINE, 55_000) == 55_390_720_000
    assert flops.epoch_flops(HEADLINE, 55_000, 128) == 55_390_720_000


@pytest.mark.parametrize("sizes", [HEADLINE, (784, 64, 10), (784, 1024, 1024, 10), (5, 3)])
@pytest.mark.parametrize(("n", "batch"), [(55_000, 128), (1000, 7), (10, 64)])
def test_batchwise_count_equals_closed_form_with_partial_last_batch(sizes, n, batch):
    assert sum(flops.batch_sizes(n, batch)) == n
    assert flops.epoch_flops(sizes, n, batch) == flops.closed_form_flops(sizes, n)


def test_single_layer_has_no_input_gradient_gemm():
    assert flops.step_gemms([5, 3], 4) == [(4, 5, 3), (5, 4, 3)]
    assert flops.step_flops([5, 3], 4) == 2 * (2 * 4 * 5 * 3)


def test_layer_dims_rejects_a_single_size():
    with pytest.raises(ValueError, match="at least"):
        flops.layer_dims([784])


def test_configs_cover_the_issue_nets():
    by_name = {c.name: c for c in CONFIGS}
    assert by_name["headline"].sizes == HEADLINE and by_name["headline"].batch_size == 128
    assert by_name["classic"].sizes == (784, 64, 10) and by_name["classic"].epochs == 9
    assert by_name["classic"].activation == "sigmoid"
    assert max(by_name["wide"].sizes[1:-1]) >= 1024


def test_config_round_trips_through_json_dict_and_quick_cuts_work():
    cfg = CONFIGS[0]
    assert BenchConfig.from_dict(cfg.as_dict()) == cfg
    quick = select(["classic"], quick=True)
    assert [(c.name, c.epochs, c.reps) for c in quick] == [("classic", 1, 1)]
    with pytest.raises(ValueError, match="valid: headline"):
        select(["nope"])


def test_rotation_puts_each_impl_first_once_per_cycle():
    orders = [rotation(r) for r in range(3)]
    assert orders[0] == ["ours", "torch", "floor"]
    assert sorted(o[0] for o in orders) == ["floor", "ours", "torch"]
    assert all(sorted(o) == ["floor", "ours", "torch"] for o in orders)
    assert rotation(3) == orders[0]


def test_spread_is_median_min_max():
    assert spread([3.0, 1.0, 2.0, 10.0]) == {"median": 2.5, "min": 1.0, "max": 10.0, "n": 4}
    with pytest.raises(ValueError):
        spread([])


def _run(seconds, acc=None, init="a", order="b"):
    run = {"epoch_seconds": seconds, "n_train": 1000, "init_sha256": init, "order_sha256": order}
    if acc is not None:
        run.update(test_acc=acc, param_dtypes=["float32"])
    return run


def _summary(ours_acc=0.9700, torch_acc=0.9690, torch_init="a"):
    cfg = BenchConfig("headline", HEADLINE, "relu", "he_normal", 100, 2, 0.1, reps=2)
    runs = {
        "ours": [_run([1.0, 3.0], ours_acc), _run([2.0, 2.0], ours_acc)],  # 2.0 and 2.0 s/epoch
        "torch": [_run([4.0, 4.0], torch_acc, init=torch_init), _run([3.0, 3.0], torch_acc, init=torch_init)],
        "floor": [_run([1.0, 1.0]), _run([1.0, 1.0])],
    }
    return summarize(cfg, runs)


def test_summarize_ratios_gflops_and_validity():
    s = _summary()
    assert s["ours"]["seconds_per_epoch"]["median"] == 2.0
    assert s["torch"]["seconds_per_epoch"]["median"] == 3.5
    assert s["ratios"]["ours_over_torch"] == pytest.approx(2.0 / 3.5)
    assert s["ratios"]["ours_over_floor"] == pytest.approx(2.0)
    assert s["ratios"]["ours_over_torch_paired"]["min"] == pytest.approx(0.5)
    assert s["ours"]["gflops"] == pytest.approx(flops.closed_form_flops(HEADLINE, 1000) / 2.0 / 1e9)
    assert s["checks"]["valid"] and s["checks"]["accuracy_diff_points"] == pytest.approx(0.1)


def test_accuracy_gap_over_tolerance_voids_the_comparison():
    chk = _summary(ours_acc=0.9700, torch_acc=0.9660)["checks"]
    assert not chk["valid"] and "0.40 points" in chk["void_reasons"][0]


def test_different_initial_weights_void_the_comparison():
    chk = _summary(torch_init="other")["checks"]
    assert not chk["valid"] and chk["void_reasons"] == ["initial weights differ"]


def _result():
    stage = {"seconds": 1.0, "max_rss_mib": 100.0}
    return {
        "date": "2026-11-23 10:00 UTC",
        "machine": {"cpu_model": "Test CPU", "logical_cpus": 2, "usable_cpus": 2, "python": "3.11", "numpy": "2.4"},
        "load_average": {"start": [0.5, 0.4, 0.3], "end": [1.2, 0.6, 0.4]},
        "environment": {
            "threads": 2,
            "note": "OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are removed (neither was set here)",
            "blas_benchmark_env": [{"internal_api": "openblas", "version": "0.3", "architecture": "Haswell"}],
            "blas_inherited_env": [{"internal_api": "openblas", "version": "0.3", "architecture": "SkylakeX"}],
        },
        "torch": {"version": "2.13.0", "blas": "mkl", "threads": 2},
        "configs": {"headline": _summary()},
        "pipeline": {
            "cold_dvc_repro": {"seconds": 30.0, "max_rss_mib": 900.0},
            "noop_dvc_repro": {"seconds": 3.0, "max_rss_mib": 60.0},
            "stages": {
                "prepare": {"seconds": 2.0, "max_rss_mib": 500.0},
                "featurize": {"seconds": 2.5, "max_rss_mib": 600.0},
                "train": {**stage, "max_rss_mib": 1536.0},
            },
        },
        "bench_seconds": 400.0,
    }


def test_targets_compare_measurements_with_the_issue_limits():
    by_name = {t["target"]: t for t in targets(_result())}
    assert by_name["784-256-128-10 ours / GEMM floor ≤ 1.5×"]["met"] is False  # ratio 2.0
    assert by_name["784-256-128-10 PyTorch / ours ≥ 1.3×"]["met"] is True  # 3.5 / 2.0
    assert by_name["peak RSS of train ≤ 1 GiB"]["measured"] == pytest.approx(1.5)
    assert by_name["peak RSS of train ≤ 1 GiB"]["met"] is False
    assert by_name["prepare + featurize ≤ 5 s"]["measured"] == pytest.approx(4.5)
    assert by_name["cold dvc repro (local mirror) ≤ 45 s"]["met"] is True
    assert by_name["no-op dvc repro ≤ 2 s"]["met"] is False
    assert by_name["784-64-10 sigmoid, 9 epochs, ours ≤ 2 s"]["met"] is None  # classic not run


def test_markdown_table_has_date_machine_blas_and_one_row_per_config():
    result = _result()
    md = render_markdown(result)
    assert "2026-11-23" in md and "Test CPU" in md and "kernel Haswell" in md and "SkylakeX" in md
    assert "OPENBLAS_CORETYPE" in md and "PyTorch 2.13.0 (BLAS mkl)" in md
    row = next(line for line in md.splitlines() if line.startswith("| 784-256-128-10 relu b100"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "2 × 2" and cells[2] == "2.000 (2.000–2.000)" and cells[5] == "0.57" and cells[6] == "2.00"
    assert cells[8] == "2.000 · 3.500"  # steady state: median epoch of each run, median over runs
    assert cells[-1] == "yes"
    header = next(line for line in md.splitlines() if line.startswith("| net |"))
    assert header.count("|") == row.count("|")  # no stray pipe breaks the table
    assert "| cold `dvc repro` | 30.00 | 900 |" in md
    assert "| 784-256-128-10 ours / GEMM floor ≤ 1.5× | 2.00× | **no** |" in md


def test_markdown_marks_a_void_comparison():
    result = _result()
    result["configs"] = {"headline": _summary(ours_acc=0.97, torch_acc=0.95)}
    md = render_markdown(copy.deepcopy(result))
    assert "VOID: test accuracies differ by +2.00 points" in md


def test_clean_env_removes_openblas_overrides_and_pins_threads():
    env, removed = clean_env({"OPENBLAS_CORETYPE": "Haswell", "PATH": "/bin", "OPENBLAS_L2_SIZE": "1"}, threads=3)
    assert removed == {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "1"}
    assert "OPENBLAS_CORETYPE" not in env and "OPENBLAS_L2_SIZE" not in env
    assert env["PATH"] == "/bin" and env["OPENBLAS_NUM_THREADS"] == "3" and env["OMP_NUM_THREADS"] == "3"


def test_cpu_model_reads_model_name(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Fancy CPU @ 3GHz\nflags\t: avx\n")
    assert cpu_model(info) == "Fancy CPU @ 3GHz"


def test_torch_only_in_the_bench_extra(repo_root):
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert not any(dep.startswith("torch") for dep in project["dependencies"] + extras["dev"])
    assert "torch==2.13.0" in extras["bench"]  # the local CPU wheel; any other spec may pull CUDA builds
