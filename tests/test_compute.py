"""Portable kernels, the compute threads and the compute fingerprint (mnist_pipeline.compute).

The pure decisions (:func:`plan`'s blockers, the SIMD cap, fingerprint differences, the thread count
from affinity, cgroup quota and environment) are tested directly; the restart and the bit-identical
models in subprocesses, since kernels are chosen when numpy loads and affinity is per process.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import numpy as np
import pytest
import threadpoolctl

from mnist_pipeline import compute, paths
from mnist_pipeline.errors import ConfigError
from mnist_pipeline.io import load_npz, npz_meta
from mnist_pipeline.stages import featurize, prepare

AVX2 = {"AVX2": True, "FMA3": True}
# Variables a machine may set that would force the kernels; the subprocess tests start without them.
FORCING_VARS = (compute.CORETYPE_VAR, compute.DISABLE_VAR, compute.ENABLE_VAR)


def _features_and_blas() -> tuple[dict[str, bool], str]:
    return compute.numpy_simd()[0], compute.blas_pool().get("internal_api", "")


PORTABLE_POSSIBLE = not compute.portable_blocker({}, platform.machine(), *_features_and_blas())
NATIVE_ABOVE_V3 = bool(compute.above_portable(compute.simd_targets()))
needs_portable = pytest.mark.skipif(not PORTABLE_POSSIBLE, reason="portable kernels need x86-64, AVX2, FMA, OpenBLAS")


@pytest.mark.parametrize(
    ("environ", "machine", "features", "blas", "needle"),
    [
        ({}, "arm64", AVX2, "openblas", "architecture is arm64"),
        ({}, "x86_64", {"AVX2": True, "FMA3": False}, "openblas", "lacks FMA3"),
        ({}, "x86_64", {}, "openblas", "lacks AVX2 and FMA3"),
        ({}, "x86_64", AVX2, "mkl", "BLAS is mkl, not OpenBLAS"),
        ({"OPENBLAS_CORETYPE": "SkylakeX"}, "x86_64", AVX2, "openblas", "forces OPENBLAS_CORETYPE=SkylakeX"),
        ({"NPY_ENABLE_CPU_FEATURES": "AVX2"}, "x86_64", AVX2, "openblas", "sets NPY_ENABLE_CPU_FEATURES=AVX2"),
    ],
)
def test_portable_blockers_name_the_reason(environ, machine, features, blas, needle) -> None:
    assert needle in compute.portable_blocker(environ, machine, features, blas)


@pytest.mark.parametrize("coretype", ["", "Haswell", "HASWELL"])
def test_portable_applies_on_x86_64_with_avx2_fma_openblas(coretype: str) -> None:
    environ = {"OPENBLAS_CORETYPE": coretype} if coretype else {}
    assert compute.portable_blocker(environ, "x86_64", AVX2, "openblas") == ""
    assert compute.portable_blocker(environ, "AMD64", AVX2, "openblas") == ""


def test_simd_cap_disables_everything_above_x86_v3_in_numpy_1_and_2_names() -> None:
    numpy2 = ["X86_V3", "X86_V4", "AVX512_ICL", "AVX512_SPR"]
    numpy1 = ["SSSE3", "SSE41", "AVX2", "FMA3", "AVX512F", "AVX512CD", "AVX512_SKX", "AVX512_CLX", "AVX512_ICL"]
    assert compute.above_portable(numpy2) == ["X86_V4", "AVX512_ICL", "AVX512_SPR"]
    assert compute.above_portable(numpy1) == ["AVX512F", "AVX512CD", "AVX512_SKX", "AVX512_CLX", "AVX512_ICL"]


def test_native_plan_sets_nothing() -> None:
    assert compute.plan("native", {}) == ({}, "compute.kernels=native")


@needs_portable
def test_portable_plan_keeps_disabled_features_and_is_a_fixed_point() -> None:
    variables, reason = compute.plan("portable", {"NPY_DISABLE_CPU_FEATURES": "AVX512_SPR"})
    assert reason == "" and variables["OPENBLAS_CORETYPE"] == "Haswell"
    disabled = variables.get("NPY_DISABLE_CPU_FEATURES", "").split()
    assert disabled[0] == "AVX512_SPR" and set(compute.above_portable(compute.simd_targets())) <= set(disabled)
    # Planned again inside the environment it asked for, it asks for nothing new: no restart loop.
    assert compute.plan("portable", variables) == (variables, "")


def test_differences_name_nested_fields() -> None:
    a = {"train": {"blas_kernel": "Haswell", "numpy_simd": ["X86_V3"], "python": "3.11.7"}, "evaluate": None}
    b = {"train": {"blas_kernel": "SkylakeX", "numpy_simd": ["X86_V3", "X86_V4"], "python": "3.11.7"}}
    assert compute.differences(a, a) == []
    assert compute.differences(a, b) == [
        "train.blas_kernel: Haswell (was SkylakeX)",
        "train.numpy_simd: X86_V3 (was X86_V3 X86_V4)",
    ]


def test_fingerprint_reads_the_live_process() -> None:
    fp = compute.fingerprint()
    pool = compute.blas_pool()
    assert fp["blas"] == pool["internal_api"] and fp["blas_kernel"] == pool["architecture"]
    assert fp["blas_threads"] == pool["num_threads"] and fp["numpy"] == np.__version__
    assert fp["numpy_simd"] == compute.simd_targets() and fp["machine"] == platform.machine()
    assert "model name" not in json.dumps(fp) and set(fp) == {
        "blas",
        "blas_version",
        "blas_kernel",
        "blas_threads",
        "numpy",
        "numpy_simd",
        "machine",
        "python",
        "libc",
    }
    assert compute.fingerprint(3) == {**fp, "chunks": 3}


def test_apply_runs_one_blas_thread_per_call_and_the_chunks_on_at_most_as_many_threads() -> None:
    controller = threadpoolctl.ThreadpoolController()
    try:
        controller.limit(limits=2, user_api="blas")
        fp, threads = compute.apply("native", 3)
        assert fp["blas_threads"] == 1 == compute.blas_pool()["num_threads"] and fp["chunks"] == 3
        assert 1 <= threads <= min(3, len(os.sched_getaffinity(0)))
    finally:
        controller.limit(limits=os.cpu_count(), user_api="blas")


def test_threads_is_the_least_of_cpus_and_chunks_or_what_the_environment_says(monkeypatch) -> None:
    monkeypatch.setattr(compute, "cgroup_cpu_limit", lambda: None)
    cpus = len(os.sched_getaffinity(0))
    n, why = compute.threads(64, {})
    assert n == cpus and f"{cpus} CPU" in why and "no CPU quota" in why
    assert compute.threads(1, {})[0] == 1
    monkeypatch.setattr(compute, "cgroup_cpu_limit", lambda: 0.5)
    n, why = compute.threads(64, {})
    assert n == 1 and "a cgroup quota of 0.5 CPUs" in why  # rounded up: never zero threads
    # The environment sets the count, above the CPUs too, but never above the chunks.
    assert compute.threads(4, {compute.THREADS_VAR: "3"}) == (3, "MNIST_PIPELINE_THREADS=3, compute.chunks=4")
    assert compute.threads(2, {compute.THREADS_VAR: "8"})[0] == 2
    for bad in ("0", "-1", "two", "1.5", "²"):
        with pytest.raises(ConfigError, match="MNIST_PIPELINE_THREADS"):
            compute.threads(2, {compute.THREADS_VAR: bad})


def test_cgroup_cpu_limit_reads_v2_then_v1_in_the_own_group_then_the_root(tmp_path) -> None:
    own_v2, own_v1 = "0::/jobs/a\n", "5:cpu,cpuacct:/jobs/b\n0::/\n"
    assert compute.cgroup_cpu_limit(tmp_path, own_v2) is None  # no controller files at all
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert compute.cgroup_cpu_limit(tmp_path, own_v2) is None  # root: no quota
    (tmp_path / "jobs" / "a").mkdir(parents=True)
    (tmp_path / "jobs" / "a" / "cpu.max").write_text("150000 100000\n")
    assert compute.cgroup_cpu_limit(tmp_path, own_v2) == 1.5
    (tmp_path / "cpu.max").unlink()
    v1 = tmp_path / "cpu" / "jobs" / "b"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert compute.cgroup_cpu_limit(tmp_path, own_v1) == 0.5
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert compute.cgroup_cpu_limit(tmp_path, own_v1) is None
    (tmp_path / "cpu" / "jobs" / "cpu.cfs_quota_us").write_text("25000\n")  # a parent's quota binds too
    (tmp_path / "cpu" / "jobs" / "cpu.cfs_period_us").write_text("100000\n")
    assert compute.cgroup_cpu_limit(tmp_path, own_v1) == 0.25


def test_cgroup_cpu_limit_is_the_least_quota_up_the_v2_tree(tmp_path) -> None:
    for folder, text in (("", "max 100000"), ("pod", "300000 100000"), ("pod/app", "500000 100000")):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / folder / "cpu.max").write_text(text + "\n")
    assert compute.cgroup_cpu_limit(tmp_path, "0::/pod/app\n") == 3.0
    (tmp_path / "pod" / "cpu.max").write_text("100000 0\n")  # a zero period is no quota, not a crash
    assert compute.cgroup_cpu_limit(tmp_path, "0::/pod/app\n") == 5.0


# --- subprocesses: the restart, and the same model bytes whatever the environment's thread count -----


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in FORCING_VARS}
    return {**env, **extra}


_PROBE = (
    "import json, sys; from mnist_pipeline import compute; compute.restart_if_needed(sys.argv[1]); "
    "import os; print(json.dumps([compute.fingerprint(), os.environ.get('OPENBLAS_CORETYPE')]))"
)


@needs_portable
def test_restart_puts_the_process_in_the_portable_environment() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, "portable"], env=_clean_env(), capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    fp, coretype = json.loads(out.stdout)
    assert coretype == "Haswell" and fp["blas_kernel"] == "Haswell"
    assert compute.above_portable(fp["numpy_simd"]) == [] and "X86_V3" in fp["numpy_simd"]


def test_native_does_not_restart() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, "native"], env=_clean_env(), capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[1] is None


def _train_in_subprocess(
    ws, affinity: set[int] | None = None, **env: str
) -> tuple[bytes, dict, dict[str, np.ndarray], str]:
    """Model bytes, metadata, weights and the stage's log of one train run in a fresh process."""
    out = subprocess.run(
        [sys.executable, "-m", "mnist_pipeline.stages.train"],
        env=_clean_env(**env),
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=None if affinity is None else lambda: os.sched_setaffinity(0, affinity),
    )
    assert out.returncode == 0, out.stderr
    model = ws.root / paths.MODEL_FILE
    arrays = load_npz(model, ["meta"])
    weights = {k: v for k, v in arrays.items() if k != "meta"}
    return model.read_bytes(), npz_meta(arrays, model), weights, out.stderr


@needs_portable
def test_model_bytes_do_not_depend_on_the_thread_count_or_the_affinity(tiny_workspace) -> None:
    """1, 2, 3 and 4 compute threads and one pinned CPU train the same bytes; chunks and kernels are inputs."""
    tiny_workspace.write_params(
        **{"model.hidden": [64, 32], "model.dropout": 0.2, "train.epochs": 2, "train.batch_size": 64},
        **{"compute.chunks": 4},
    )
    prepare.main()
    featurize.main()
    runs = {n: _train_in_subprocess(tiny_workspace, MNIST_PIPELINE_THREADS=str(n)) for n in (1, 2, 3, 4)}
    for n, (_, _, _, log) in runs.items():
        assert f"4 chunks on {n} thread" in log, log
    pinned = _train_in_subprocess(tiny_workspace, affinity={min(os.sched_getaffinity(0))})
    assert "4 chunks on 1 thread (the least of: 1 CPU in the affinity mask" in pinned[3], pinned[3]
    assert len({r[0] for r in [*runs.values(), pinned]}) == 1  # one model file, byte for byte
    _, meta, weights, _ = runs[2]
    fp = meta["compute"]
    assert fp["blas_kernel"] == "Haswell" and fp["blas_threads"] == 1 and fp["chunks"] == 4
    assert compute.above_portable(fp["numpy_simd"]) == []
    # The decomposition is a real input: another chunk count gives another model.
    tiny_workspace.write_params(**{"compute.chunks": 1})
    _, _, single, _ = _train_in_subprocess(tiny_workspace)
    assert not all(np.array_equal(single[k], weights[k]) for k in weights)
    # Native kernels: on a CPU with AVX-512 another kernel and SIMD level, so other weights; on an
    # AVX2 CPU the native kernels (Haswell, or Zen: the same code) compute what the portable ones do.
    tiny_workspace.write_params(**{"compute.chunks": 4, "compute.kernels": "native"})
    _, native_meta, native, _ = _train_in_subprocess(tiny_workspace)
    same = all(np.array_equal(native[k], weights[k]) for k in weights)
    assert same != NATIVE_ABOVE_V3
    assert (native_meta["compute"]["numpy_simd"] == fp["numpy_simd"]) != NATIVE_ABOVE_V3


def test_a_bad_thread_count_in_the_environment_stops_the_stage_with_one_line(tiny_workspace) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mnist_pipeline.stages.train"],
        env=_clean_env(MNIST_PIPELINE_THREADS="two"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "MNIST_PIPELINE_THREADS='two' must be a positive integer" in lines[0], out.stderr
    assert not (tiny_workspace.root / paths.MODEL_FILE).exists()
