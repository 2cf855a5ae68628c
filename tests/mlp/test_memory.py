"""Parameters, gradients and optimizer state carved from one huge-page buffer (mlp.memory)."""

from __future__ import annotations

import gc
import re
from pathlib import Path

import numpy as np
import pytest

from mnist_pipeline.config import OptimizerConfig
from mnist_pipeline.mlp.initializers import INITIALIZERS
from mnist_pipeline.mlp.memory import ALIGN, HUGE_PAGE, zeros_like
from mnist_pipeline.mlp.network import Network
from mnist_pipeline.mlp.optimizers import make_optimizer

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def test_zeros_like_matches_shapes_and_dtypes_zeroed_aligned_and_disjoint():
    like = [np.ones((784, 256), np.float32), np.ones(10, np.float32), np.ones((3, 5), np.float64), np.ones(7, np.int8)]
    out = zeros_like(like)
    assert [(a.shape, a.dtype) for a in out] == [(a.shape, a.dtype) for a in like]
    assert all(a.flags.c_contiguous and a.flags.writeable and not a.any() for a in out)
    assert out[0].ctypes.data % HUGE_PAGE == 0
    assert all(a.ctypes.data % ALIGN == 0 for a in out)
    for i, a in enumerate(out):
        a[...] = i + 1  # fills every array; no write may land in another
    for i, a in enumerate(out):
        assert (a == i + 1).all()
        assert not any(np.shares_memory(a, b) for b in out[i + 1 :])


def test_views_keep_the_buffer_alive():
    last = zeros_like([np.ones((64, 64), np.float32), np.ones(5, np.float32)])[1]
    gc.collect()
    last[...] = 3.0  # the list and the first view are gone; the mapping must still be there
    assert last.sum() == 15.0


def test_network_and_optimizer_state_live_in_one_buffer_each():
    net = Network([784, 256, 128, 10], "relu", "he_normal", np.random.default_rng(0))
    arrays = [a for _, p, g in net.parameters() for a in (p, g)]
    starts = sorted(a.ctypes.data for a in arrays)
    span = starts[-1] - starts[0]
    assert span < sum(a.nbytes for a in arrays) + ALIGN * len(arrays)  # packed side by side
    assert starts[0] % HUGE_PAGE == 0
    opt = make_optimizer(OptimizerConfig("momentum", momentum=0.9), [p for _, p, _ in net.parameters()], [])
    assert opt.v[0].ctypes.data % HUGE_PAGE == 0 and not any(v.any() for v in opt.v)


def test_moving_to_huge_pages_keeps_the_initial_weights():
    """The same seed gives the same weights as drawing them without the move (the draw order is unchanged)."""
    net = Network([20, 8, 3], "relu", "he_normal", np.random.default_rng(5), dropout=0.5)
    w0 = INITIALIZERS.get("he_normal")(20, 8, np.random.default_rng(5), np.float32)
    np.testing.assert_array_equal(net.dense[0].params["W"], w0)
    assert not net.dense[0].params["b"].any() and not net.dense[1].grads["W"].any()


@pytest.mark.skipif(
    not THP.exists() or "[never]" in THP.read_text(), reason="transparent huge pages unavailable on this kernel"
)
def test_the_buffer_is_backed_by_huge_pages_when_the_kernel_offers_them():
    (w,) = zeros_like([np.ones((HUGE_PAGE // 4,), np.float32)])  # exactly one aligned huge page
    w[...] = 1.0  # first touch faults the page in
    address = w.ctypes.data
    smaps = Path("/proc/self/smaps").read_text().splitlines()
    for i, line in enumerate(smaps):
        m = re.match(r"([0-9a-f]+)-([0-9a-f]+) ", line)
        if m and int(m.group(1), 16) <= address < int(m.group(2), 16):
            fields = dict(re.findall(r"^(\w+):\s+(\d+) kB", "\n".join(smaps[i + 1 : i + 30]), re.M))
            assert int(fields["AnonHugePages"]) >= HUGE_PAGE // 1024
            return
    pytest.fail(f"no mapping holds address {address:#x}")
