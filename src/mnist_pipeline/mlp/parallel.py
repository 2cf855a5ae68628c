"""A fixed decomposition of the work, run on however many threads the machine allows.

A BLAS that splits one product over its threads rounds differently for each thread count, and
its threads busy-wait for each other: with fewer free cores than threads every product waits
for a thread that is not scheduled. Here the work is cut into ``chunks`` pieces that depend
only on the shapes and on ``chunks`` (:func:`split`): a batch into row blocks, a weight matrix
into row blocks. Every piece is computed the same way (one single-threaded BLAS call, numpy's
element-wise loops) whichever thread takes it, so the bits depend on ``chunks`` and never on
the thread count. :class:`Workers` hands the pieces out: the calling thread works too, idle
threads sleep (no spinning), and pieces nobody has started yet go to whoever is free, so a
thread that the scheduler delays only delays the piece it holds.

numpy releases the GIL inside BLAS calls and large element-wise loops, so the threads of one
process do run at once. The caller sets its BLAS to one thread per call first
(:func:`mnist_pipeline.compute.apply` does): a BLAS that threads each call itself would round by its
own thread count again. Each thread has its own ``numpy.errstate``.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Callable


def split(n: int, parts: int) -> list[slice]:
    """``n`` rows cut into ``min(parts, n)`` consecutive slices whose lengths differ by at most one."""
    if parts < 1 or n < 0:
        raise ValueError(f"split needs n >= 0 rows and parts >= 1, got n={n}, parts={parts}")
    parts = min(parts, n)
    bounds = [n * k // parts for k in range(parts + 1)] if parts else [0]
    return [slice(a, b) for a, b in itertools.pairwise(bounds)]


class _Job:
    """One call of :meth:`Workers.run`: pieces ``0..n-1`` of ``fn``, claimed one at a time."""

    def __init__(self, fn: Callable[[int], object], n: int) -> None:
        self.fn, self.n = fn, n
        self.claims = itertools.count()  # next() is atomic under the GIL
        self.completions = itertools.count()
        self.finished = threading.Lock()
        self.finished.acquire()  # released by whoever completes the last piece
        self.error: BaseException | None = None

    def work(self) -> None:
        while (i := next(self.claims)) < self.n:
            try:
                if self.error is None:
                    self.fn(i)
            except BaseException as exc:  # re-raised in the caller's thread
                if self.error is None:
                    self.error = exc
            if next(self.completions) == self.n - 1:
                self.finished.release()


class Workers:
    """``threads - 1`` helper threads that, with the caller, run the pieces of :meth:`run`.

    With one thread there are no helpers: pieces run in order in the caller's thread. Each helper
    sleeps on a lock of its own between calls (a plain lock is the cheapest wake-up Python has;
    a training step makes two calls). The helpers are daemon threads and end when the ``Workers``
    is garbage-collected. One caller at a time: :meth:`run` is not reentrant.
    """

    def __init__(self, threads: int = 1) -> None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.threads = threads
        self._slot: list[_Job | None] = [None]  # the current job; shared with the helpers, not self
        self._wakes = [threading.Lock() for _ in range(threads - 1)]
        for wake in self._wakes:
            wake.acquire()
            threading.Thread(target=_serve, args=(wake, self._slot), name="mlp-worker", daemon=True).start()
        weakref.finalize(self, _stop, self._wakes, self._slot)

    def run(self, fn: Callable[[int], object], n: int) -> None:
        """Call ``fn(i)`` for ``i in range(n)``, pieces spread over the threads; return when all are done.

        The pieces must touch disjoint outputs. The first exception raised by a piece is re-raised
        here once every started piece has finished (later pieces are skipped).
        """
        if self.threads == 1 or n <= 1:
            for i in range(n):
                fn(i)
            return
        job = self._slot[0] = _Job(fn, n)
        for wake in self._wakes[: n - 1]:
            if wake.locked():  # not already released: a sleeping or busy helper; it wakes to this job
                wake.release()
        job.work()
        job.finished.acquire()
        self._slot[0] = None
        if job.error is not None:
            raise job.error


_STOP = _Job(lambda i: None, 0)  # in the slot: helpers return


def _serve(wake: threading.Lock, slot: list[_Job | None]) -> None:
    while True:
        wake.acquire()  # blocks until run() (or _stop) releases it
        job = slot[0]
        if job is _STOP:
            return
        if job is not None:
            job.work()
        job = None  # hold no finished job: its closure would keep the caller's objects alive


def _stop(wakes: list[threading.Lock], slot: list[_Job | None]) -> None:
    slot[0] = _STOP
    for wake in wakes:
        if wake.locked():
            wake.release()
