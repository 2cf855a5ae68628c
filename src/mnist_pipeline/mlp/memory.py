"""Arrays carved from one buffer on transparent huge pages, for parameters, gradients and optimizer state.

Every training step sweeps each parameter, its gradient and the optimizer's state arrays (the update is
memory-bound). Allocated one by one, these arrays sit on 4 KiB pages and a step's sweeps miss the TLB
hundreds of times; :func:`zeros_in_one_buffer` places them side by side in one anonymous private mapping whose start
is aligned to 2 MiB and which is advised ``MADV_HUGEPAGE``, so with transparent huge pages in ``always``
or ``madvise`` mode (``/sys/kernel/mm/transparent_hugepage/enabled``) they share a few 2 MiB pages.
Measured on the headline net (784-256-128-10, batch 128, 2 cores): about 8% less time per step. Without
huge pages (a kernel without them, a refused ``madvise``, other systems) the arrays are ordinary zeroed
memory and nothing else changes. 2 MiB is the huge page of x86-64 (and of arm64 with 4 KiB pages).
"""

from __future__ import annotations

import mmap
from collections.abc import Sequence

import numpy as np

HUGE_PAGE = 2 << 20  # bytes: x86-64 transparent huge page
ALIGN = 64  # bytes: every array starts on a cache line


def zeros_in_one_buffer(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Zeroed, writable arrays shaped and typed like ``arrays``: views into one 2 MiB-aligned buffer
    advised for huge pages. The views keep the buffer alive; it is freed when the last of them is.
    """
    offsets, end = [], 0
    for a in arrays:
        offsets.append(end)
        end += -(-a.nbytes // ALIGN) * ALIGN
    length = -(-max(end, 1) // HUGE_PAGE) * HUGE_PAGE + HUGE_PAGE  # spare page: room to align the start
    if hasattr(mmap, "MAP_PRIVATE"):  # POSIX: anonymous private mapping, zero-filled by the kernel
        buf = mmap.mmap(-1, length, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        raw = np.frombuffer(buf, dtype=np.uint8)  # (length,) writable; its views keep buf alive
        start = -raw.ctypes.data % HUGE_PAGE
        if hasattr(mmap, "MADV_HUGEPAGE"):
            try:
                buf.madvise(mmap.MADV_HUGEPAGE, start, length - start)
            except OSError:  # EINVAL: a kernel without transparent huge pages, or a sandbox refusing it
                pass
    else:
        raw = np.zeros(length, np.uint8)
        start = -raw.ctypes.data % HUGE_PAGE
    return [
        raw[start + off : start + off + a.nbytes].view(a.dtype).reshape(a.shape)
        for a, off in zip(arrays, offsets, strict=True)
    ]
