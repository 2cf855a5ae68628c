"""Parameters, gradients and optimizer state carved from one huge-page buffer (mlp.memory)."""

from __future__ import annotations

import errno
import gc
import mmap
import re
import types
from pathlib import Path

import numpy as np
import pytest

from mnist_pipeline.mlp import memory
from mnist_pipeline.mlp.initializers import INITIALIZERS
from mnist_pipeline.mlp.memory import ALIGN, HUGE_PAGE, zeros_in_one_buffer
from mnist_pipeline.mlp.network import Network
from mnist_pipeline.mlp.optimizers import OptimizerConfig, make_optimizer

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def test_zeros_in_one_buffer_matches_shapes_and_dtypes_zeroed_aligned_and_disjoint():
    like = [np.ones((784, 256), np.float32), np.ones(10, np.float32), np.ones((3, 5), np.float64), np.ones(7, np.int8)]
    out = zeros_in_one_buffer(like)
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
    last = zeros_in_one_buffer([np.ones((64, 64), np.float32), np.ones(5, np.float32)])[1]
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


class RefusingMmap(mmap.mmap):
    """An anonymous mapping whose ``madvise`` fails as on a kernel without transparent huge pages."""

    def madvise(self, *args):
        raise OSError(errno.EINVAL, "Invalid argument")


def buffer_owner(a: np.ndarray) -> object:
    """The object at the end of ``a``'s chain of bases (through memoryviews): what holds its memory."""
    while True:
        nxt = getattr(a, "base", None)
        if nxt is None and isinstance(a, memoryview):
            nxt = a.obj
        if nxt is None:
            return a
        a = nxt


def test_a_refused_madvise_leaves_ordinary_memory(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(mmap, "mmap", RefusingMmap)
    (w,) = zeros_in_one_buffer([np.ones((100, 7), np.float32)])
    assert isinstance(buffer_owner(w), RefusingMmap)  # the refusing mapping was really used
    assert w.shape == (100, 7) and not w.any() and w.ctypes.data % HUGE_PAGE == 0
    net = Network([12, 5, 3], "relu", "he_normal", np.random.default_rng(0))
    assert net.dense[0].params["W"].any()


def test_without_mmap_the_arrays_come_from_numpy(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(memory, "mmap", types.SimpleNamespace())  # no MAP_PRIVATE, no madvise
    a, b = zeros_in_one_buffer([np.ones((3, 4), np.float64), np.ones(5, np.int16)])
    assert (a.shape, a.dtype, b.shape, b.dtype) == ((3, 4), np.float64, (5,), np.int16)
    assert not a.any() and not b.any() and a.ctypes.data % HUGE_PAGE == 0
    assert isinstance(buffer_owner(a), np.ndarray) and not np.shares_memory(a, b)


def smaps_fields(address: int) -> dict[str, int]:
    """The kB fields of the /proc/self/smaps entry of the mapping that holds ``address``."""
    header = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) ")
    fields: dict[str, int] | None = None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        m = header.match(line)
        if m:
            if fields is not None:
                break
            if int(m.group(1), 16) <= address < int(m.group(2), 16):
                fields = {}
        elif fields is not None and (f := re.match(r"^(\w+):\s+(\d+) kB", line)):
            fields[f.group(1)] = int(f.group(2))
    assert fields is not None, f"no mapping holds address {address:#x}"
    return fields


def thp_mode(name: str) -> str:
    """The bracketed (active) mode of /sys/kernel/mm/transparent_hugepage/<name>, or ''."""
    path = THP.parent / name
    m = re.search(r"\[(\w[\w+]*)\]", path.read_text()) if path.exists() else None
    return m.group(1) if m else ""


@pytest.mark.skipif(
    thp_mode("enabled") not in ("always", "madvise") or thp_mode("defrag") not in ("always", "madvise"),
    reason="this kernel may not give huge pages at fault time (THP off, or no direct compaction for madvised memory)",
)
def test_the_buffer_is_backed_by_huge_pages_when_the_kernel_offers_them():
    (w,) = zeros_in_one_buffer([np.ones((HUGE_PAGE // 4,), np.float32)])  # exactly one aligned huge page
    w[...] = 1.0  # first touch faults the page in
    assert smaps_fields(w.ctypes.data)["AnonHugePages"] >= HUGE_PAGE // 1024
