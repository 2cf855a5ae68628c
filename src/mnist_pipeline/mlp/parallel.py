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

import bisect
import itertools
import sys
import threading
import weakref
from collections.abc import Callable

# While pieces run on several threads, a thread that wants the GIL gets it from the holder after at
# most this many seconds (sys.setswitchinterval; Python's default is 5 ms): a thread back from a BLAS
# call then waits less for one that runs numpy's small calls (measured in docs/performance.md).
SWITCH_INTERVAL = 1e-5


class _SwitchInterval:
    """Process-wide: the GIL switch interval at most :data:`SWITCH_INTERVAL` while any run is on several
    threads; the first run in saves the interval, the last one out restores it."""

    def __init__(self) -> None:
        self.lock, self.depth, self.saved = threading.Lock(), 0, 0.0

    def __enter__(self) -> None:
        with self.lock:
            if self.depth == 0:
                self.saved = sys.getswitchinterval()
                sys.setswitchinterval(min(self.saved, SWITCH_INTERVAL))
            self.depth += 1

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.depth -= 1
            if self.depth == 0:
                sys.setswitchinterval(self.saved)


_SHORT_SWITCHES = _SwitchInterval()


def split(n: int, parts: int) -> list[slice]:
    """``n`` rows cut into ``min(parts, n)`` consecutive slices whose lengths differ by at most one."""
    if parts < 1 or n < 0:
        raise ValueError(f"split needs n >= 0 rows and parts >= 1, got n={n}, parts={parts}")
    parts = min(parts, n)
    bounds = [n * k // parts for k in range(parts + 1)] if parts else [0]
    return [slice(a, b) for a, b in itertools.pairwise(bounds)]


class _Job:
    """One call of :meth:`Workers.run`: the pieces of its phases, numbered in order across them, claimed one by one.

    A thread that claims a piece of a phase it has not entered yet waits until every piece of the phase
    before has finished; pieces are claimed in order, so by then they are all in progress.
    """

    def __init__(self, phases: list[tuple[Callable[[int], object], int]]) -> None:
        self.phases = [(fn, n) for fn, n in phases if n > 0]
        self.starts = list(itertools.accumulate((n for _, n in self.phases), initial=0))  # piece numbers
        self.n = self.starts[-1]
        self.claims = itertools.count()  # next() is atomic under the GIL
        self.completions = [itertools.count() for _ in self.phases]
        self.done = [False] * len(self.phases)  # phase p has finished (set before its lock is released)
        self.finished = [threading.Lock() for _ in self.phases]  # phase p's is released when it has finished
        for lock in self.finished:
            lock.acquire()
        self.error: BaseException | None = None

    def work(self) -> None:
        entered = 0
        while (i := next(self.claims)) < self.n:
            phase = bisect.bisect_right(self.starts, i) - 1
            if phase > entered:  # a barrier: the phase before must be complete
                if not self.done[phase - 1]:  # (the thread that completed it goes straight on)
                    self.finished[phase - 1].acquire()
                    self.finished[phase - 1].release()  # open for every other thread too
                entered = phase
            fn, n = self.phases[phase]
            try:
                if self.error is None:
                    fn(i - self.starts[phase])
            except BaseException as exc:  # re-raised in the caller's thread
                if self.error is None:
                    self.error = exc
            if next(self.completions[phase]) == n - 1:
                self.done[phase] = True
                self.finished[phase].release()

    def wait(self) -> None:
        """Return once the last phase has finished (and with it every phase before)."""
        if self.phases:
            self.finished[-1].acquire()


class Workers:
    """``threads - 1`` helper threads that, with the caller, run the pieces of :meth:`run`.

    With one thread there are no helpers: pieces run in order in the caller's thread. Each helper
    sleeps on a lock of its own between calls (a plain lock is the cheapest wake-up Python has;
    a training step makes one call of two phases). The helpers are daemon threads and end when the
    ``Workers`` is garbage-collected. One caller at a time: :meth:`run` is not reentrant.
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

    def run(self, fn: Callable[[int], object], n: int, then: tuple[Callable[[int], object], int] | None = None) -> None:
        """Call ``fn(i)`` for ``i in range(n)``, pieces spread over the threads; return when all are done.

        ``then = (fn2, n2)`` adds a second phase in the same hand-off: ``fn2(j)`` for ``j in range(n2)``,
        each started only after every ``fn(i)`` has finished. A thread done with the first phase waits
        at that barrier instead of going back to sleep and being woken again.

        The pieces of a phase must touch disjoint outputs. An exception raised by a piece (the first;
        of several raised at once, one of them) is re-raised here once every started piece has finished
        (later pieces, of either phase, are skipped). While the pieces run on several threads, the
        process's GIL switch interval is at most :data:`SWITCH_INTERVAL` (other Python threads switch
        sooner too); it is restored when no run is left on several threads.
        """
        phases = [(fn, n)] if then is None else [(fn, n), then]
        total = sum(count for _, count in phases)
        if self.threads == 1 or total <= 1:
            for each, count in phases:
                for i in range(count):
                    each(i)
            return
        job = self._slot[0] = _Job(phases)
        with _SHORT_SWITCHES:
            for wake in self._wakes[: total - 1]:
                if wake.locked():  # not already released: a sleeping or busy helper; it wakes to this job
                    wake.release()
            try:
                job.work()
                job.wait()
            except BaseException as exc:  # interrupted (KeyboardInterrupt) here: nobody starts another piece
                if job.error is None:
                    job.error = exc
                raise
            finally:
                self._slot[0] = None
        if job.error is not None:
            raise job.error


_STOP = _Job([])  # in the slot: helpers return


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
