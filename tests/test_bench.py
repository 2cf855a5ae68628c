"""Benchmark harness: the exact FLOP count, statistics and checks, the overhead variants, targets, the table.

No timing is asserted here; ``make bench`` measures. Nothing in these tests imports torch.
"""

from __future__ import annotations

import copy
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from mnist_pipeline import compute, config
from mnist_pipeline.bench import compare as compare_module
from mnist_pipeline.bench import flops, overhead, shared, system, worker
from mnist_pipeline.bench.__main__ import parse_args
from mnist_pipeline.bench.compare import compare, kernel_label, rotation, schedule, spread, steady_epoch, summarize
from mnist_pipeline.bench.configs import CONFIGS, BenchConfig, select
from mnist_pipeline.bench.pipeline import time_to_accuracy
from mnist_pipeline.bench.system import clean_env, cpu_model, portable_plan
from mnist_pipeline.bench.tables import (
    DEFORMATION_TARGET,
    OVERHEAD_TARGET,
    _deformation_lines,
    render_markdown,
    targets,
)
from mnist_pipeline.bench.worker import IMPLS, portable_gap
from mnist_pipeline.mlp.trainer import Split

HEADLINE = (784, 256, 128, 10)
# What the workers of an AVX-512 machine report (compute.fingerprint, the fields the bench reads)
NATIVE_FP = {"blas_kernel": "SkylakeX", "numpy_simd": ["X86_V3", "X86_V4", "AVX512_ICL"]}
PORTABLE_FP = {"blas_kernel": "Haswell", "numpy_simd": ["X86_V3"]}


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


def test_rotation_puts_each_impl_in_each_position_once_per_cycle():
    orders = [rotation(r) for r in range(5)]
    assert orders[0] == ["ours", "portable", "blas_threads", "torch", "floor"]
    for position in range(5):
        assert sorted(o[position] for o in orders) == sorted(IMPLS)
    assert rotation(5) == orders[0]
    # portable runs right after ours (or first when ours is last), blas_threads right after portable:
    # each of their ratios spans the least drift
    assert all((o.index("portable") - o.index("ours")) % 5 == 1 for o in orders)
    assert all((o.index("blas_threads") - o.index("portable")) % 5 == 1 for o in orders)


def test_rotation_without_portable_cycles_over_the_other_three():
    orders = [rotation(r, ["ours", "torch", "floor"]) for r in range(3)]
    assert orders == [["ours", "torch", "floor"], ["torch", "floor", "ours"], ["floor", "ours", "torch"]]


def test_schedule_runs_portable_in_its_own_environment_and_drops_it_where_it_cannot_apply():
    native, portable = {"PATH": "/bin"}, {"PATH": "/bin", "OPENBLAS_CORETYPE": "Haswell"}
    both = schedule({"native": native, "portable": portable})
    assert list(both) == list(IMPLS)
    assert both["portable"] is portable and both["blas_threads"] is portable
    assert all(both[impl] is native for impl in ("ours", "torch", "floor"))
    assert list(schedule({"native": native})) == ["ours", "torch", "floor"]


def test_spread_is_median_min_max():
    assert spread([3.0, 1.0, 2.0, 10.0]) == {"median": 2.5, "min": 1.0, "max": 10.0, "n": 4}
    with pytest.raises(ValueError):
        spread([])


def _run(seconds, acc=None, init="a", order="b", fingerprint=NATIVE_FP):
    run = {"epoch_seconds": seconds, "n_train": 1000, "init_sha256": init, "order_sha256": order}
    run["compute"] = fingerprint
    if acc is not None:
        run.update(test_acc=acc, param_dtypes=["float32"])
    return run


def _summary(ours_acc=0.9700, torch_acc=0.9690, torch_init="a", portable=True, portable_fields=None):
    """Ours 2.0 s/epoch, torch 3.5, floor 1.0; portable (unless skipped) 2.2 and 2.8 s/epoch, acc 0.9712."""
    cfg = BenchConfig("headline", HEADLINE, "relu", "he_normal", 100, 2, 0.1, reps=2)
    runs = {
        "ours": [_run([1.0, 3.0], ours_acc), _run([2.0, 2.0], ours_acc)],  # 2.0 and 2.0 s/epoch
        "torch": [_run([4.0, 4.0], torch_acc, init=torch_init), _run([3.0, 3.0], torch_acc, init=torch_init)],
        "floor": [_run([1.0, 1.0]), _run([1.0, 1.0])],
    }
    if portable:
        seconds = ([2.2, 2.2], [2.8, 2.8])
        runs["portable"] = [{**_run(s, 0.9712, fingerprint=PORTABLE_FP), **(portable_fields or {})} for s in seconds]
        seconds = ([3.0, 2.0], [9.0, 3.5])  # steady epochs 2.0 and 3.5
        runs["blas_threads"] = [_run(s, 0.9708, fingerprint=PORTABLE_FP) for s in seconds]
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


def test_summarize_portable_against_native_with_the_kernels_each_ran_on():
    s = _summary()
    assert s["portable"]["seconds_per_epoch"] == pytest.approx({"median": 2.5, "min": 2.2, "max": 2.8, "n": 2})
    assert s["portable"]["steady_epoch_seconds"]["median"] == pytest.approx(2.5)
    assert s["portable"]["test_acc"]["median"] == 0.9712
    assert s["ratios"]["portable_over_native"] == pytest.approx(2.5 / 2.0)
    paired = s["ratios"]["portable_over_native_paired"]
    assert (paired["min"], paired["max"]) == pytest.approx((1.1, 1.4))  # 2.2 / 2.0 and 2.8 / 2.0, rep by rep
    assert s["ours"]["kernels"] == ["SkylakeX / X86_V3 X86_V4 AVX512_ICL"]
    assert s["portable"]["kernels"] == ["Haswell / X86_V3"]
    assert s["ratios"]["ours_over_torch"] == pytest.approx(2.0 / 3.5)  # ours stays the native runs


def test_summarize_the_price_of_chunks_pairs_steady_epochs_rep_by_rep():
    price = _summary()["ratios"]["chunks_over_blas_threads"]
    assert price == pytest.approx({"median": (2.2 / 2.0 + 2.8 / 3.5) / 2, "min": 2.8 / 3.5, "max": 2.2 / 2.0, "n": 2})


def test_summarize_without_portable_keeps_every_other_statistic():
    s = _summary(portable=False)
    assert "portable" not in s and "portable_over_native" not in s["ratios"]
    assert "chunks_over_blas_threads" not in s["ratios"]
    assert s["ratios"]["ours_over_floor"] == pytest.approx(2.0) and s["checks"]["valid"]


def test_kernel_label_names_a_baseline_only_numpy():
    assert kernel_label({"blas_kernel": "Haswell", "numpy_simd": []}) == "Haswell / baseline only"


def test_accuracy_gap_over_tolerance_voids_the_comparison():
    chk = _summary(ours_acc=0.9700, torch_acc=0.9660)["checks"]
    assert not chk["valid"] and "0.40 points" in chk["void_reasons"][0]


def test_different_initial_weights_void_the_comparison():
    chk = _summary(torch_init="other")["checks"]
    assert not chk["valid"] and chk["void_reasons"] == ["initial weights differ"]


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"init_sha256": "other"}, "initial weights differ"),
        ({"order_sha256": "other"}, "data orders differ"),
        ({"param_dtypes": ["float64"]}, "parameters are not all float32"),
    ],
)
def test_portable_runs_are_held_to_the_same_identity_checks(fields, reason):
    chk = _summary(portable_fields=fields)["checks"]
    assert not chk["valid"] and chk["void_reasons"] == [reason]


def test_portable_gap_names_what_is_not_portable():
    assert portable_gap(PORTABLE_FP) == ""
    assert portable_gap({"blas_kernel": "HASWELL", "numpy_simd": ["X86_V3"]}) == ""
    assert portable_gap(NATIVE_FP) == "OpenBLAS kernel SkylakeX and numpy SIMD X86_V4 AVX512_ICL"
    assert portable_gap({**PORTABLE_FP, "numpy_simd": ["X86_V3", "AVX512_SPR"]}) == "numpy SIMD AVX512_SPR"


def test_compare_interleaves_the_scheduled_impls_each_in_its_environment(monkeypatch):
    calls = []

    def fake_worker(impl, cfg, features, threads, env, chunks):
        assert chunks == 2
        calls.append((impl, env.get("OPENBLAS_CORETYPE")))
        fingerprint = PORTABLE_FP if env.get("OPENBLAS_CORETYPE") else NATIVE_FP
        return _run([1.0, 1.0], None if impl == "floor" else 0.97, fingerprint=fingerprint)

    monkeypatch.setattr(compare_module, "run_worker", fake_worker)
    cfg = replace(CONFIGS[0], reps=2)
    s = compare(cfg, Path("unused"), 1, {"native": {}, "portable": {"OPENBLAS_CORETYPE": "Haswell"}}, 2)
    first = [("ours", None), ("portable", "Haswell"), ("blas_threads", "Haswell"), ("torch", None), ("floor", None)]
    assert calls[:5] == first
    assert [impl for impl, _ in calls[5:]] == ["portable", "blas_threads", "torch", "floor", "ours"]
    assert s["portable"]["kernels"] == ["Haswell / X86_V3"] and s["ratios"]["portable_over_native"] == 1.0
    calls.clear()
    s = compare(cfg, Path("unused"), 1, {"native": {}}, 2)  # portable cannot apply: three-way rotation
    assert [impl for impl, _ in calls] == ["ours", "torch", "floor", "torch", "floor", "ours"]
    assert "portable" not in s


@pytest.mark.parametrize("impl", ["portable", "blas_threads"])
def test_worker_refuses_to_time_a_portable_run_on_native_kernels(monkeypatch, impl: str):
    monkeypatch.setattr(worker, "load_splits", lambda *_: {})
    monkeypatch.setattr(compute, "fingerprint", lambda: dict(NATIVE_FP))
    spec = {"impl": impl, "config": CONFIGS[0].as_dict(), "features": "unused", "threads": 1}
    with pytest.raises(RuntimeError, match=f"{impl} worker is not on portable kernels: OpenBLAS kernel SkylakeX"):
        worker.run(spec)


@pytest.mark.parametrize(("impl", "expected"), [("portable", (3, 2, [1])), ("blas_threads", (1, 1, [2]))])
def test_worker_runs_blas_threads_unchunked_on_openblas_threads(monkeypatch, impl: str, expected):
    """(chunks, compute threads, BLAS threads per call) of a run: the pipeline's way, or the design before chunks."""
    seen = []

    def fake_run_ours(cfg, splits, chunks, threads):
        blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
        seen.append((chunks, threads, sorted(set(blas))))  # every BLAS library loaded (numpy's, maybe scipy's)
        return {"epoch_seconds": [1.0]}

    monkeypatch.setattr(
        worker, "load_splits", lambda *_: {"train": Split(np.zeros((1, 1)), np.zeros(1), np.zeros((1, 1)))}
    )
    monkeypatch.setattr(worker, "run_ours", fake_run_ours)
    monkeypatch.setattr(compute, "fingerprint", lambda: dict(PORTABLE_FP))
    worker.run({"impl": impl, "config": CONFIGS[0].as_dict(), "features": "unused", "threads": 2, "chunks": 3})
    assert seen == [expected]


def _result():
    stage = {"seconds": 1.0, "max_rss_mib": 100.0}
    return {
        "date": "2026-11-23 10:00 UTC",
        "machine": {"cpu_model": "Test CPU", "logical_cpus": 2, "usable_cpus": 2, "python": "3.11", "numpy": "2.4"},
        "load_average": {"start": [0.5, 0.4, 0.3], "end": [1.2, 0.6, 0.4]},
        "environment": {
            "threads": 2,
            "note": "OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE are removed (none was set here)",
            "portable": {"variables": {"OPENBLAS_CORETYPE": "Haswell"}, "skipped": ""},
            "blas_benchmark_env": [{"internal_api": "openblas", "version": "0.3", "architecture": "Haswell"}],
            "blas_inherited_env": [{"internal_api": "openblas", "version": "0.3", "architecture": "SkylakeX"}],
        },
        "torch": {"version": "2.13.0", "blas": "mkl", "threads": 2},
        "configs": {"headline": _summary()},
        "pipeline": {
            "install": {"seconds": 12.0, "max_rss_mib": 80.0},
            "install_dev": {"seconds": 50.0, "max_rss_mib": 80.0},
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


def test_steady_epoch_is_the_median_after_the_first():
    assert steady_epoch([9.0, 1.0, 2.0, 4.0]) == 2.0  # the first epoch (page faults) left out
    assert steady_epoch([9.0, 1.0]) == 1.0
    assert steady_epoch([3.0]) == 3.0  # a one-epoch run (--quick): that epoch


def test_lead_pairs_pytorch_with_ours_repetition_by_repetition_on_steady_epochs():
    cfg = BenchConfig("headline", HEADLINE, "relu", "he_normal", 100, 3, 0.1, reps=2)
    runs = {
        # steady epochs (median after the first): ours 2.0 and 3.0, PyTorch 4.0 and 4.5; the run means
        # (3.67, 2.33 and 4.0, 4.33) would give another answer
        "ours": [_run([7.0, 2.0, 2.0], 0.97), _run([1.0, 3.0, 3.0], 0.97)],
        "torch": [_run([4.0, 4.0, 4.0], 0.97), _run([4.0, 4.5, 4.5], 0.97)],
        "floor": [_run([1.0, 1.0, 1.0]), _run([1.0, 1.0, 1.0])],
    }
    lead = summarize(cfg, runs)["lead"]
    assert lead == {"ours": pytest.approx({"median": 1.75, "min": 1.5, "max": 2.0, "n": 2})}
    assert summarize(cfg, runs)["ours"]["steady_epoch_seconds"]["median"] == pytest.approx(2.5)
    lead = _summary()["lead"]  # 2-epoch runs: the second epoch; portable's pairs 4.0 / 2.2 and 3.0 / 2.8
    assert lead["portable"]["min"] == pytest.approx(3.0 / 2.8) and lead["portable"]["max"] == pytest.approx(4.0 / 2.2)
    assert "portable" not in _summary(portable=False)["lead"]


def test_markdown_lead_table_has_a_row_per_net_with_its_target():
    result = _result()
    result["configs"]["headline"] = _summary()
    row = next(
        line for line in render_markdown(result).splitlines() if line.startswith("| 784-256-128-10 relu b100 | 2 |")
    )
    assert [c.strip() for c in row.strip("|").split("|")][2:] == ["1.42 (1.33–1.50)", "1.44 (1.07–1.82)", "≥ 1.3×"]


def test_targets_compare_measurements_with_the_issue_limits():
    by_name = {t["target"]: t for t in targets(_result())}
    assert by_name["784-256-128-10 ours / GEMM floor ≤ 1.5×"]["met"] is False  # ratio 2.0
    native = by_name["784-256-128-10 PyTorch ÷ ours, native kernels (median of paired reps) ≥ 1.3×"]
    assert native["measured"] == pytest.approx((4.0 / 3.0 + 3.0 / 2.0) / 2) and native["met"] is True  # 2nd epochs
    portable = by_name["784-256-128-10 PyTorch ÷ ours, portable kernels (median of paired reps) ≥ 1.3×"]
    assert portable["measured"] == pytest.approx((4.0 / 2.2 + 3.0 / 2.8) / 2) and portable["met"] is True
    assert not any(name.startswith("784-64-10 PyTorch") for name in by_name)  # classic not run: no row
    assert by_name["peak RSS of train ≤ 1 GiB"]["measured"] == pytest.approx(1.5)
    assert by_name["peak RSS of train ≤ 1 GiB"]["met"] is False
    assert by_name["prepare + featurize ≤ 5 s"]["measured"] == pytest.approx(4.5)
    assert by_name["cold dvc repro (local mirror) ≤ 45 s"]["met"] is True
    assert by_name["no-op dvc repro ≤ 2 s"]["met"] is False
    assert by_name["784-64-10 sigmoid, 9 epochs, ours ≤ 2 s"]["met"] is None  # classic not run
    repro = by_name["cold make repro: make install + cold dvc repro ≤ 60 s"]
    assert repro["measured"] == pytest.approx(42.0) and repro["met"] is True
    first_test = by_name["make test's first install: install + install-dev ≤ 60 s"]
    assert first_test["measured"] == pytest.approx(62.0) and first_test["met"] is False


def test_whole_benchmark_target_leaves_out_the_optional_best_run_and_the_shared_machine():
    name = "whole benchmark, without --best's run and the shared machine ≤ 600 s"
    result = _result()
    result["bench_seconds"] = 900.0
    assert {t["target"]: t for t in targets(result)}[name]["met"] is False
    result["best_preset"] = {"dvc_exp_run": {"seconds": 200.0}}
    result["shared"], result["queue"] = _shared_result(), {"j1": 60.0, "j2": 40.0, "ratio": 2 / 3, "seconds": 100.0}
    row = {t["target"]: t for t in targets(result)}[name]
    assert row["measured"] == pytest.approx(900.0 - 200.0 - 50.0 - 100.0) and row["met"] is True


def _shared_result(two_at_once: float = 2.0, hashes: tuple[str, ...] = ("ab12",)) -> dict:
    def run(seconds: float) -> dict:
        return {"train_seconds": seconds, "epoch_median": seconds / 10, "model_sha256": hashes[0], "compute_line": "c"}

    runs = {"alone": [[run(4.0)]], "one CPU": [[run(6.0)]], "two at once": [[run(4.0 * two_at_once), run(7.0)]]}
    runs["beside a hog"] = [[run(5.0)]]
    summary = {
        name: {
            "train_seconds": rnd[0][0]["train_seconds"],
            "worst_ratio": max(r["train_seconds"] for r in rnd[0]) / 4.0,
            "median_ratio": 1.0,
            "compute_line": "c",
        }
        for name, rnd in runs.items()
    }
    return {"rounds": 1, "runs": runs, "summary": summary, "model_sha256": list(hashes), "seconds": 50.0}


def test_shared_machine_targets_hold_each_scenario_to_its_limit_and_the_bits_to_one_hash():
    result = {"shared": _shared_result(), "queue": {"j1": 60.0, "j2": 40.0, "ratio": 2 / 3, "seconds": 100.0}}
    rows = {t["target"]: t for t in shared.targets(result)}
    assert (
        rows["train one CPU ≤ 2.2× alone"]["measured"] == pytest.approx(1.5)
        and rows["train one CPU ≤ 2.2× alone"]["met"]
    )
    assert rows["train two at once ≤ 2.2× alone"]["met"] is True
    assert rows["one model.npz in every scenario"]["met"] is True
    assert rows["4 queued experiments: dvc queue -j 2 ≤ 0.75× -j 1"]["met"] is True
    result = {"shared": _shared_result(two_at_once=2.5, hashes=("ab12", "cd34"))}
    rows = {t["target"]: t for t in shared.targets(result)}
    assert rows["train two at once ≤ 2.2× alone"]["met"] is False
    assert (
        rows["one model.npz in every scenario"]["met"] is False
        and "4 queued experiments: dvc queue -j 2 ≤ 0.75× -j 1" not in rows
    )
    assert shared.targets({}) == [] and shared.lines({}) == []
    text = "\n".join(
        shared.lines(
            {"shared": _shared_result(), "queue": result.get("queue") or {"j1": 60.0, "j2": 40.0, "ratio": 2 / 3}}
        )
    )
    assert "| two at once | 8.00 |" in text
    assert "took 60.0 s on `dvc queue start -j 1` and 40.0 s on `-j 2` (0.67×" in text


def test_queue_measurement_queues_four_seeds_and_runs_them_on_one_worker_then_two(tmp_path, monkeypatch):
    calls, runs, clock = [], [], iter([0.0, 0.0, 80.0, 80.0, 130.0, 130.0])
    monkeypatch.setattr(shared.time, "perf_counter", lambda: next(clock))

    def fake_dvc_call(self, *args, **kwargs):
        calls.append((self.executable, self.cwd, args))
        seeds = args[-1].split("=")[1].split(",")
        return "".join(f"Queued experiment 'exp-{s}' for future execution.\n" for s in seeds)

    monkeypatch.setattr(shared.sweep.Dvc, "__call__", fake_dvc_call)
    monkeypatch.setattr(shared.sweep, "run_queue", lambda dvc, names, jobs, **kw: runs.append((names, jobs, kw)))
    out = shared.measure_experiments(tmp_path, {"DATA_MIRROR": "m"}, "/venv/bin/dvc")
    assert (out["j1"], out["j2"], out["ratio"]) == (80.0, 50.0, pytest.approx(0.625))
    assert [c[2] for c in calls] == [("exp", "run", "--queue", "-S", "train.seed=11,12,13,14")] + [
        ("exp", "run", "--queue", "-S", "train.seed=15,16,17,18")
    ]
    assert all(c[:2] == ("/venv/bin/dvc", tmp_path) for c in calls)
    assert [(names, jobs) for names, jobs, _ in runs] == [(["exp-11", "exp-12", "exp-13", "exp-14"], 1)] + [
        (["exp-15", "exp-16", "exp-17", "exp-18"], 2)
    ]
    assert all(kw["env"] == {"DATA_MIRROR": "m"} and kw["repo"] == tmp_path for _, _, kw in runs)


def test_tune_measurement_runs_one_worker_then_two_on_one_study_each_with_its_own_seeds(tmp_path, monkeypatch):
    started, clock = [], iter([0.0, 0.0, 60.0, 60.0, 100.0, 100.0])
    monkeypatch.setattr(shared.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(shared, "start", lambda cmd, cwd, env: started.append(cmd) or cmd)
    monkeypatch.setattr(shared, "wait", lambda proc, what: "")
    out = shared.measure_tune(tmp_path, tmp_path, {}, "dvc")
    assert (out["w1"], out["w2"], out["ratio"]) == (60.0, 40.0, pytest.approx(2 / 3))
    assert len(started) == 3 and started[1] == started[2]  # two workers of one study share its budget
    studies = [cmd[cmd.index("--study") + 1] for cmd in started]
    assert studies == ["bench-tune-w1", "bench-tune-w2", "bench-tune-w2"]
    journals = [cmd[cmd.index("--storage") + 1] for cmd in started]  # never $TUNE_STORAGE's database
    assert journals == [str(tmp_path / "bench-tune-w1.log"), *[str(tmp_path / "bench-tune-w2.log")] * 2]
    # trial n of a study is sampled with seed + n: the two studies' trials never share a sampler seed
    seeds = [{int(cmd[cmd.index("--seed") + 1]) + n for n in range(shared.TUNE_TRIALS)} for cmd in started[:2]]
    assert not seeds[0] & seeds[1]
    assert all("--no-push" in cmd and cmd[cmd.index("--dvc") + 1] == "dvc" for cmd in started)


def test_tune_measurement_space_is_a_valid_space_of_default_runs_that_differ_only_in_the_seed(tmp_path):
    from mnist_pipeline.tune.space import load_space

    (tmp_path / "s.yaml").write_text(shared.TUNE_SPACE)
    space = load_space(str(tmp_path / "s.yaml"))
    assert [p.name for p in space.params] == ["train.seed"] and not space.fixed
    assert space.trials == shared.TUNE_TRIALS == space.startup_trials  # every trial a random seed, none modelled
    result = {"shared": _shared_result(), "tune": {"trials": 4, "w1": 60.0, "w2": 48.0, "ratio": 0.8}}
    row = {t["target"]: t for t in shared.targets(result)}["make tune, 4 trials: 2 workers ≤ 0.75× 1 worker"]
    assert row["measured"] == 0.8 and row["met"] is False
    assert "took 60.0 s on one worker and 48.0 s on two workers started side by side (0.80×" in "\n".join(
        shared.lines(result)
    )


def test_shared_machine_workspace_copy_links_the_features_and_keeps_its_own_outputs(tmp_path):
    ws = tmp_path / "ws"
    (ws / "data" / "features").mkdir(parents=True)
    (ws / "params.yaml").write_text("train: {}\n")
    (ws / "data" / "features" / "train.npz").write_bytes(b"x")
    copy = shared.copy_workspace(ws, tmp_path / "copy")
    assert (copy / "params.yaml").read_text() == "train: {}\n"
    assert (copy / "data" / "features").is_symlink() and (copy / "data" / "features" / "train.npz").read_bytes() == b"x"
    assert not (copy / "data" / "model").exists()


def test_cold_start_targets_are_not_measured_without_the_install_timings():
    result = _result()
    del result["pipeline"]["install"]
    by_name = {t["target"]: t for t in targets(result)}
    assert by_name["cold make repro: make install + cold dvc repro ≤ 60 s"]["met"] is None
    assert "`make install-dev`" in render_markdown(result) and "`make install`" not in render_markdown(result)


def test_markdown_table_has_date_machine_blas_and_one_row_per_config():
    result = _result()
    md = render_markdown(result)
    assert "2026-11-23" in md and "Test CPU" in md and "kernel Haswell" in md and "SkylakeX" in md
    assert "OPENBLAS_CORETYPE" in md and "PyTorch 2.13.0 (BLAS mkl)" in md
    row = next(line for line in md.splitlines() if line.startswith("| 784-256-128-10 relu b100"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "2 × 2" and cells[2] == "2.000 (2.000–2.000)" and cells[5] == "0.57" and cells[6] == "2.00"
    assert cells[8] == "2.500 · 3.500"  # steady state: median epoch after the first of each run, median over runs
    assert cells[-1] == "yes"
    header = next(line for line in md.splitlines() if line.startswith("| net |"))
    assert header.count("|") == row.count("|")  # no stray pipe breaks the table
    assert "| cold `dvc repro` | 30.00 | 900 |" in md
    assert "| 784-256-128-10 ours / GEMM floor ≤ 1.5× | 2.00× | **no** |" in md


def test_markdown_portable_table_shows_kernels_seconds_and_ratio():
    md = render_markdown(_result())
    header = next(line for line in md.splitlines() if line.startswith("| net | native kernels |"))
    row = next(line for line in md.splitlines() if line.startswith("| 784-256-128-10 relu b100 | SkylakeX"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:3] == ["SkylakeX / X86_V3 X86_V4 AVX512_ICL", "Haswell / X86_V3"]
    assert cells[3] == "2.000 (2.000–2.000)" and cells[4] == "2.500 (2.200–2.800)"
    assert cells[5] == "1.25 (1.10–1.40)"
    assert cells[6] == "2.500 · 2.500" and cells[7] == "97.00% · 97.12%"
    assert header.count("|") == row.count("|")


def test_markdown_and_targets_show_the_price_of_chunks_against_openblas_threads():
    md = render_markdown(_result())
    header = next(line for line in md.splitlines() if line.startswith("| net | reps | chunked steady epoch s |"))
    row = next(line for line in md.splitlines() if line.startswith("| 784-256-128-10 relu b100 | 2 | 2.500"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2:] == ["2.500 (2.200–2.800)", "2.750 (2.000–3.500)", "0.95 (0.80–1.10)", "≤ 1.1×"]
    assert header.count("|") == row.count("|")
    by_name = {t["target"]: t for t in targets(_result())}
    price = by_name[
        "784-256-128-10 alone, portable: fixed chunks ÷ OpenBLAS's own threads (median of paired reps) ≤ 1.1×"
    ]
    assert price["measured"] == pytest.approx((2.2 / 2.0 + 2.8 / 3.5) / 2) and price["met"] is True


def test_markdown_says_why_portable_was_not_measured():
    result = _result()
    result["environment"]["portable"] = {"variables": {}, "skipped": "this CPU lacks AVX2"}
    result["configs"] = {"headline": _summary(portable=False)}
    md = render_markdown(result)
    assert "Portable kernels not measured: this CPU lacks AVX2." in md
    assert "portable/native" not in md and "OpenBLAS threads steady epoch s" not in md


def test_markdown_marks_a_void_comparison():
    result = _result()
    result["configs"] = {"headline": _summary(ours_acc=0.97, torch_acc=0.95)}
    md = render_markdown(copy.deepcopy(result))
    assert "VOID: test accuracies differ by +2.00 points" in md


def test_clean_env_removes_kernel_overrides_and_pins_threads():
    forced = {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "1", "NPY_DISABLE_CPU_FEATURES": "X86_V4"}
    env, removed = clean_env({**forced, "PATH": "/bin", "NPY_ENABLE_CPU_FEATURES": "X86_V3"}, threads=3)
    assert removed == {**forced, "NPY_ENABLE_CPU_FEATURES": "X86_V3"}  # native means the CPU's own kernels
    assert not set(removed) & set(env)
    assert env["PATH"] == "/bin" and env["OPENBLAS_NUM_THREADS"] == "3" and env["OMP_NUM_THREADS"] == "3"


def test_portable_plan_is_made_in_a_fresh_process_with_the_given_environment():
    env, _ = clean_env(dict(os.environ))
    variables, reason = portable_plan({**env, "OPENBLAS_CORETYPE": "SkylakeX"})
    assert variables == {} and reason  # a kernel forced in that environment blocks portable kernels
    if any(var in os.environ for var in (compute.DISABLE_VAR, compute.ENABLE_VAR)):
        pytest.skip("this process's numpy SIMD is capped: its own plan is no reference")
    assert portable_plan(env) == compute.plan("portable", env)


def test_environment_report_adds_a_portable_environment_only_where_it_applies(monkeypatch):
    monkeypatch.setattr(system, "blas_probe", lambda env: [])
    monkeypatch.setenv("OPENBLAS_CORETYPE", "SkylakeX")
    monkeypatch.setattr(system, "portable_plan", lambda env: ({"OPENBLAS_CORETYPE": "Haswell"}, ""))
    envs, report = system.environment_report(2)
    assert "OPENBLAS_CORETYPE" not in envs["native"] and envs["native"]["OPENBLAS_NUM_THREADS"] == "2"
    assert envs["portable"] == {**envs["native"], "OPENBLAS_CORETYPE": "Haswell"}
    assert report["portable"] == {"variables": {"OPENBLAS_CORETYPE": "Haswell"}, "skipped": ""}
    monkeypatch.setattr(system, "portable_plan", lambda env: ({}, "this CPU lacks AVX2"))
    envs, report = system.environment_report(2)
    assert list(envs) == ["native"] and report["portable"]["skipped"] == "this CPU lacks AVX2"


def test_portable_plan_gives_a_reason_when_the_probe_fails(monkeypatch):
    monkeypatch.setattr(system, "_PLAN_PROBE", "import sys; sys.exit('no numpy here')")
    assert portable_plan({}) == ({}, "planning portable kernels failed: no numpy here")


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


# --- Augmentation and regularization overhead of the default config (issue 17) ---


@pytest.fixture
def default_cfg(repo_root):
    return config.load(repo_root / "params.yaml")


def test_switched_on_finds_every_regularizer_the_config_turns_on(default_cfg):
    bare = overhead.switch_off(default_cfg, list(overhead.switched_on(default_cfg)), 1)
    assert overhead.switched_on(bare) == {}
    cfg = replace(bare, train=replace(bare.train, l2=1e-4, augment_shift=1), model=replace(bare.model, dropout=0.5))
    assert overhead.switched_on(cfg) == {"augment_shift": 1, "l2": 1e-4, "dropout": 0.5}


def test_variants_are_default_each_alone_off_then_all_off():
    assert overhead.variants(["augment_shift", "l2"]) == {
        "default": (),
        "augment_shift off": ("augment_shift",),
        "l2 off": ("l2",),
        "all off": ("augment_shift", "l2"),
    }
    assert overhead.variants(["l2"]) == {"default": (), "all off": ("l2",)}  # "l2 off" would be all off
    with pytest.raises(ValueError, match="no augmentation or regularizer"):
        overhead.variants([])


def test_switch_off_changes_only_the_named_fields_and_the_epochs(default_cfg):
    cfg = replace(default_cfg, model=replace(default_cfg.model, dropout=0.2))
    off = overhead.switch_off(cfg, ["l2", "dropout"], 3)
    assert (off.train.l2, off.model.dropout, off.train.epochs) == (0.0, 0.0, 3)
    assert replace(off.train, l2=cfg.train.l2, epochs=cfg.train.epochs) == cfg.train
    assert off.optimizer == cfg.optimizer and off.schedule == cfg.schedule
    assert off.model.hidden == cfg.model.hidden


def _worker(seconds, val_acc=None, fingerprint=PORTABLE_FP):
    """A worker's result: per-variant epoch seconds by round (round 0 is the warm-up)."""
    return {"epoch_seconds": seconds, "val_acc": val_acc or dict.fromkeys(seconds, 0.95), "compute": fingerprint}


def _overhead_summary():
    """Two workers, 3 rounds each (first not counted). all off 1.0, 1.2 | 1.0, 1.1; default 2.0, 2.0 | 1.5, 2.2."""
    plan = overhead.variants(["augment_shift", "l2"])
    workers = [
        _worker(
            {
                "default": [9.0, 2.0, 2.0],
                "augment_shift off": [9.0, 1.1, 1.3],
                "l2 off": [9.0, 1.9, 2.1],
                "all off": [9.0, 1.0, 1.2],
            },
            {"default": 0.97, "augment_shift off": 0.9, "l2 off": 0.9, "all off": 0.9},
        ),
        _worker(
            {
                "default": [0.1, 1.5, 2.2],
                "augment_shift off": [0.1, 1.0, 1.1],
                "l2 off": [0.1, 2.0, 2.2],
                "all off": [0.1, 1.0, 1.1],
            },
            {"default": 0.96, "augment_shift off": 0.9, "l2 off": 0.9, "all off": 0.9},
        ),
    ]
    return overhead.summarize(plan, workers)


def test_overhead_ratios_are_round_by_round_against_all_off_and_name_what_is_left_on():
    s = _overhead_summary()
    # warm-up rounds (9.0 and 0.1) left out
    assert s["all off"]["seconds_per_epoch"] == pytest.approx({"median": 1.05, "min": 1.0, "max": 1.2, "n": 4})
    assert s["default"]["seconds_per_epoch"]["median"] == pytest.approx(2.0)
    # default / all off per round: 2.0, 1.667, 1.5, 2.0 -> median 1.833 (not the ratio of medians, 1.905)
    assert s["default"]["over_all_off"] == pytest.approx((2.0 + 2.0 / 1.2) / 2)
    paired = s["default"]["over_all_off_paired"]
    assert (paired["min"], paired["max"], paired["n"]) == pytest.approx((1.5, 2.0, 4))
    assert s["augment_shift off"]["over_all_off"] == pytest.approx((1.0 + 1.3 / 1.2) / 2)  # L2 alone
    assert s["all off"]["over_all_off"] == 1.0
    assert [s[v]["on"] for v in s] == [["augment_shift", "l2"], ["l2"], ["augment_shift"], []]
    assert s["default"]["val_acc"]["median"] == pytest.approx(0.965)
    assert s["default"]["kernels"] == ["Haswell / X86_V3"]


def test_overhead_runs_reps_workers_with_every_variant_on_the_default_kernels(monkeypatch, repo_root):
    calls = []

    def fake_worker(spec, env):
        calls.append((spec["kernels"], env.get("OPENBLAS_CORETYPE"), spec["rounds"]))
        assert spec["plan"] == {k: list(v) for k, v in overhead.variants(["augment_shift", "l2"]).items()}
        return _worker({name: [1.0, 1.0, 1.0] if off else [1.0, 1.5, 1.5] for name, off in spec["plan"].items()})

    monkeypatch.setattr(overhead, "run_worker", fake_worker)
    envs = {"native": {}, "portable": {"OPENBLAS_CORETYPE": "Haswell"}}
    s = overhead.measure(repo_root / "params.yaml", Path("unused"), 2, envs, cycles=1, reps=2)
    assert calls == [("portable", "Haswell", 1 + 2 * 4)] * 2  # warm-up, then every rotation both ways
    assert (s["kernels"], s["kernels_asked"], s["default_on"]) == (
        "portable",
        "portable",
        {"augment_shift": 1, "l2": 1e-4},
    )
    assert s["variants"]["default"]["over_all_off"] == pytest.approx(1.5)
    calls.clear()
    s = overhead.measure(repo_root / "params.yaml", Path("unused"), 2, {"native": {}}, cycles=2, reps=1)
    assert s["kernels"] == "native" and calls == [("native", None, 1 + 2 * 2 * 4)]
    with pytest.raises(ValueError, match="cycles must be at least 1, got 0"):
        overhead.measure(repo_root / "params.yaml", Path("unused"), 2, {"native": {}}, cycles=0, reps=1)


def test_deformation_cost_is_the_composed_wide_net_against_itself_undeformed(monkeypatch, repo_root, tmp_path):
    from mnist_pipeline import compose

    params = tmp_path / "deformed.yaml"
    with monkeypatch.context() as m:
        m.chdir(repo_root)
        params.write_text(compose.compose(list(overhead.DEFORMED_WIDE)), encoding="utf-8")
    deforms = ["augment_elastic_alpha", "augment_rotate", "augment_scale", "augment_shear", "augment_translate"]

    def fake_worker(spec, env):
        assert spec["plan"] == {"deformed": [], "deformations off": deforms}  # nothing else switched off
        return _worker({"deformed": [9.0, 1.2, 1.1], "deformations off": [9.0, 1.0, 1.0]})

    monkeypatch.setattr(overhead, "run_worker", fake_worker)
    s = overhead.measure(params, Path("unused"), 2, {"native": {}}, cycles=1, reps=1, deformation=True)
    assert s["label"].startswith("784-1024-1024-10") and s["baseline"] == "deformations off"
    assert s["variants"]["deformed"]["over_all_off"] == pytest.approx(1.15)  # rounds 1.2 and 1.1
    assert s["variants"]["deformed"]["on"] == deforms
    result = {"deformation": s}
    lines = _deformation_lines(result)
    assert any(line.startswith("| deformed | ") and "| 1.15 (1.10–1.20) |" in line for line in lines), lines
    row = [t for t in targets({**result, "configs": {}}) if t["target"].startswith(DEFORMATION_TARGET)]
    assert row and row[0]["measured"] == pytest.approx(1.15) and row[0]["met"]
    with pytest.raises(ValueError, match="deforms no image"):
        overhead.measure(repo_root / "params.yaml", Path("unused"), 2, {"native": {}}, deformation=True)


@pytest.mark.parametrize("names", [["a", "b"], ["a", "b", "c"], ["a", "b", "c", "d"]])
def test_round_order_puts_each_variant_before_each_other_as_often_as_after(names):
    m = len(names)
    orders = [overhead.round_order(j, names) for j in range(2 * m)]
    assert all(sorted(order) == names for order in orders)
    for x in names:
        for y in names:
            if x != y:
                before = sum(order.index(x) < order.index(y) for order in orders)
                assert before == m, (x, y, orders)
    assert overhead.round_order(2 * m, names) == orders[0]  # the next cycle repeats


def _tiny_split(n, rng):
    y = rng.integers(0, 10, n)
    return Split(rng.random((n, 784), dtype=np.float32), y, np.eye(10, dtype=np.float32)[y])


def test_overhead_worker_interleaves_variants_by_epoch_and_refuses_native_kernels_as_portable(monkeypatch, repo_root):
    rng = np.random.default_rng(0)
    splits = {"train.npz": _tiny_split(300, rng), "val.npz": _tiny_split(50, rng)}
    monkeypatch.setattr(overhead, "load_feature_split", lambda path, d, c: splits[path.name])
    trained = []
    real_fit = overhead.fit

    def spy_fit(net, train, val, cfg, *args):
        trained.append((id(net), cfg.l2, cfg.augment_shift, cfg.epochs))
        return real_fit(net, train, val, cfg, *args)

    monkeypatch.setattr(overhead, "fit", spy_fit)
    plan = {"default": [], "l2 off": ["l2"]}
    spec = {"params": str(repo_root / "params.yaml"), "plan": plan, "rounds": 5, "features": "x", "threads": 1}
    result = overhead.run_variants({**spec, "kernels": "native"})
    assert {name: len(s) for name, s in result["epoch_seconds"].items()} == {"default": 5, "l2 off": 5}
    assert all(0 <= acc <= 1 for acc in result["val_acc"].values())
    assert set(result["compute"]) >= {"blas_kernel", "numpy_simd"}
    # one epoch at a time: the warm-up round in plan order, then round_order's rounds (D L, L D, L D, D L);
    # each variant keeps training its own network
    default, l2_off = (1e-4, 1, 1), (0.0, 1, 1)
    assert [(l2, shift, epochs) for _, l2, shift, epochs in trained] == [
        *(default, l2_off),
        *(default, l2_off),
        *(l2_off, default),
        *(l2_off, default),
        *(default, l2_off),
    ]
    assert trained[0][0] == trained[2][0] == trained[5][0] != trained[1][0]
    monkeypatch.setattr(compute, "fingerprint", lambda: dict(NATIVE_FP))
    with pytest.raises(RuntimeError, match="overhead worker is not on portable kernels: OpenBLAS kernel SkylakeX"):
        overhead.run_variants({**spec, "kernels": "portable"})


def _overhead_result(kernels="portable"):
    result = _result()
    result["overhead"] = {
        "label": "784-256-128-10 relu b128",
        "rounds": 3,
        "warmup_rounds": 1,
        "reps": 2,
        "threads": 2,
        "kernels_asked": "portable",
        "kernels": kernels,
        "default_on": {"augment_shift": 1, "l2": 1e-4},
        "variants": _overhead_summary(),
    }
    return result


def test_overhead_target_is_default_over_all_off_at_most_1_15():
    name = f"{OVERHEAD_TARGET} ≤ 1.15×"
    row = {t["target"]: t for t in targets(_overhead_result())}[name]
    assert row["measured"] == pytest.approx((2.0 + 2.0 / 1.2) / 2) and row["met"] is False
    result = _overhead_result()
    result["overhead"]["variants"]["default"]["over_all_off"] = 1.15
    assert {t["target"]: t for t in targets(result)}[name]["met"] is True
    assert {t["target"]: t for t in targets(_result())}[name]["met"] is None  # --skip-overhead


def test_markdown_overhead_table_rows_and_target():
    md = render_markdown(_overhead_result())
    header = next(line for line in md.splitlines() if line.startswith("| variant |"))
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ")}
    cells = [c.strip() for c in rows["default"].strip("|").split("|")]
    assert cells == ["default", "augment_shift=1, l2=0.0001", "2.000 (1.500–2.200)", "1.83 (1.50–2.00)", "96.50%"]
    assert [c.strip() for c in rows["all off"].strip("|").split("|")][1:4] == [
        "—",
        "1.050 (1.000–1.200)",
        "1.00 (1.00–1.00)",
    ]
    assert header.count("|") == rows["l2 off"].count("|")
    assert "2 fresh worker process(es), each training one network per variant in 3 rounds" in md
    assert "on portable kernels (Haswell / X86_V3); 2 threads" in md
    assert f"| {OVERHEAD_TARGET} ≤ 1.15× | 1.83× | **no** |" in md


def test_markdown_overhead_says_when_it_fell_back_to_native_kernels():
    result = _overhead_result(kernels="native")
    result["environment"]["portable"]["skipped"] = "this CPU lacks AVX2"
    assert "on native kernels (Haswell / X86_V3), not portable: this CPU lacks AVX2;" in render_markdown(result)


def test_markdown_overhead_only_has_no_comparison_table():
    result = _overhead_result()
    result["configs"] = {}
    md = render_markdown(result)
    assert "| variant |" in md and "| net | epochs × reps |" not in md and "portable/native" not in md
    assert "Portable kernels not measured" not in md


def test_overhead_only_excludes_configs_and_skip_overhead():
    assert parse_args(["--overhead-only"]).overhead_only
    for argv in (["--overhead-only", "--configs", "headline"], ["--overhead-only", "--skip-overhead"]):
        with pytest.raises(SystemExit):
            parse_args(argv)


# --- time to accuracy ---------------------------------------------------------------------------


def _run_dir(root: Path, val_acc: list[float], epoch_seconds: list[float]) -> Path:
    """What a run leaves in its workspace: DVCLive's val_acc.tsv, timing.json, metrics.json."""
    tsv = root / "dvclive" / "plots" / "metrics"
    tsv.mkdir(parents=True)
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
        values = val_acc if key == "val_acc" else [0.5] * len(val_acc)
        rows = [f"{epoch}\t{value}" for epoch, value in enumerate(values, start=1)]
        (tsv / f"{key}.tsv").write_text("\n".join([f"step\t{key}", *rows]) + "\n", encoding="utf-8")
    (root / "reports").mkdir()
    (root / "reports" / "timing.json").write_text(f'{{"epoch_seconds": {epoch_seconds}}}', encoding="utf-8")
    metrics = '{"val": {"accuracy": 0.9866}, "test": {"accuracy": 0.9876}}'
    (root / "reports" / "metrics.json").write_text(metrics, encoding="utf-8")
    return root


def test_time_to_accuracy_counts_training_seconds_to_the_first_epoch_at_each_threshold(tmp_path):
    ws = _run_dir(tmp_path, [0.95, 0.981, 0.979, 0.986, 0.984], [2.0, 1.5, 1.5, 1.0, 1.0])
    run = time_to_accuracy(ws)
    assert run["first_reached"] == {
        "0.98": {"epoch": 2, "seconds": 3.5},
        "0.985": {"epoch": 4, "seconds": 6.0},
        "0.99": None,
        "0.992": None,
        "0.993": None,
    }
    assert run["epochs"] == 5 and run["train_seconds"] == pytest.approx(7.0) and run["test_accuracy"] == 0.9876
    never = time_to_accuracy(_run_dir(tmp_path / "low", [0.95, 0.97], [1.0, 1.0]))
    assert set(never["first_reached"].values()) == {None}


def test_markdown_time_to_accuracy_table(tmp_path):
    result = _result()
    result["pipeline"]["time_to_accuracy"] = time_to_accuracy(_run_dir(tmp_path, [0.981, 0.986], [2.0, 3.0]))
    result["fast_preset"] = time_to_accuracy(_run_dir(tmp_path / "fast", [0.985, 0.9901, 0.9925], [1.0, 1.0, 1.0]))
    md = render_markdown(result)
    row = next(line for line in md.splitlines() if line.startswith("| default"))
    never = " | never" * 3
    assert row == f"| default (`dvc repro`) | 2.0 s (epoch 1) | 5.0 s (epoch 2){never} | 2 | 5.0 | 0.9866 | 0.9876 |"
    fast = next(line for line in md.splitlines() if line.startswith("| `experiment=fast`"))
    assert fast.startswith(
        "| `experiment=fast` | 1.0 s (epoch 1) | 1.0 s (epoch 1) | 2.0 s (epoch 2) | 3.0 s (epoch 3)"
    )
    assert "`experiment=best`" not in md  # not timed without --best
    header = next(line for line in md.splitlines() if line.startswith("| run | first val acc"))
    assert header.count("|") == row.count("|")


def test_best_needs_the_pipeline_clone():
    with pytest.raises(SystemExit):
        parse_args(["--best", "--skip-pipeline", "--features", "data/features"])
