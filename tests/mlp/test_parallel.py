"""The fixed decomposition and its threads: :func:`split` cuts ``n`` rows into consecutive slices of
near-equal length; :class:`Workers` runs every piece exactly once, on several threads at once, and
re-raises a piece's exception (then keeps working).

Concurrency is shown with a :class:`threading.Barrier` as wide as the thread count: its pieces can
only pass it when that many of them run at the same time, and its timeout turns a missing thread into
a prompt failure instead of a hang. Every ``run`` also happens on a watchdog thread (:func:`bounded`),
so a call that deadlocks fails the test after ``TIMEOUT`` seconds. One ``Workers`` per thread count
serves the whole module: its helper threads live as long as the process.
"""

from __future__ import annotations

import gc
import itertools
import sys
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from mnist_pipeline.mlp.parallel import SWITCH_INTERVAL, Workers, split

TIMEOUT = 30.0  # seconds before a hung run fails; far above what any call here takes
BARRIER_TIMEOUT = 10.0  # seconds a piece waits for the others before the barrier breaks
THREADS = (1, 2, 3, 4)


@pytest.fixture(scope="module")
def workers() -> dict[int, Workers]:
    return {t: Workers(t) for t in THREADS}


def bounded(
    w: Workers, fn: Callable[[int], None], n: int, then: tuple[Callable[[int], None], int] | None = None
) -> None:
    """``w.run(fn, n, then)`` on a watchdog thread: re-raise what it raises, fail if it hangs for ``TIMEOUT``."""
    raised: list[BaseException] = []

    def call() -> None:
        try:
            w.run(fn, n, then)
        except BaseException as exc:  # handed to the test's thread
            raised.append(exc)

    caller = threading.Thread(target=call, name="run-caller", daemon=True)
    caller.start()
    caller.join(TIMEOUT)
    if caller.is_alive():
        pytest.fail(f"Workers({w.threads}).run(fn, {n}) did not return within {TIMEOUT} s")
    if raised:
        raise raised[0]


# --- split -------------------------------------------------------------------------------------


def raises_then_runs_again(w: Workers, piece: Callable[[int], None], n: int, error: BaseException, after: int) -> None:
    """``run(piece, n)`` re-raises ``error`` itself, and the same workers then run ``after`` pieces each once."""
    with pytest.raises(Boom) as info:
        bounded(w, piece, n)
    assert info.value is error
    done: list[int] = []
    bounded(w, done.append, after)
    assert sorted(done) == list(range(after))


@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 64, 1000])
@pytest.mark.parametrize("parts", [1, 2, 3, 4, 7, 64, 100])
def test_split_covers_every_row_once_in_consecutive_near_equal_slices(n: int, parts: int) -> None:
    slices = split(n, parts)
    assert len(slices) == min(parts, n)
    assert all(s.step is None for s in slices)
    assert slices[0].start == 0 and slices[-1].stop == n
    assert all(a.stop == b.start for a, b in itertools.pairwise(slices))  # consecutive, in order
    lengths = [s.stop - s.start for s in slices]
    assert min(lengths) >= 1 and max(lengths) - min(lengths) <= 1
    covered = np.zeros(n, dtype=int)
    for s in slices:
        covered[s] += 1
    assert np.all(covered == 1)


def test_split_by_hand() -> None:
    assert split(7, 3) == [slice(0, 2), slice(2, 4), slice(4, 7)]
    assert split(2, 5) == [slice(0, 1), slice(1, 2)]  # never an empty slice
    assert split(5, 1) == [slice(0, 5)]


# --- Workers -----------------------------------------------------------------------------------


def test_workers_need_at_least_one_thread() -> None:
    with pytest.raises(ValueError, match="threads must be at least 1, got 0"):
        Workers(0)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("n", [1, 2, 7])
@pytest.mark.parametrize("threads", THREADS)
def test_run_calls_every_piece_exactly_once_and_waits_for_all(workers, threads: int, n: int) -> None:
    w = workers[threads]
    for _ in range(10):  # the same helpers serve call after call
        done: list[int] = []

        def piece(i: int, done: list[int] = done) -> None:
            time.sleep(0.001)  # run must wait for pieces still in progress on other threads
            done.append(i)

        bounded(w, piece, n)
        assert sorted(done) == list(range(n))


class Boom(Exception):
    pass


@pytest.mark.timeout(120)
@pytest.mark.parametrize("threads", THREADS)
def test_run_reraises_a_pieces_exception_and_stays_usable(workers, threads: int) -> None:
    w = workers[threads]
    error = Boom("piece 3")

    def piece(i: int) -> None:
        if i == 3:
            raise error

    raises_then_runs_again(w, piece, 7, error, 7)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("threads", [2, 3, 4])
def test_an_exception_raised_on_a_helper_thread_reaches_the_caller(workers, threads: int) -> None:
    w = workers[threads]
    barrier = threading.Barrier(threads, timeout=BARRIER_TIMEOUT)  # one piece per thread, all at once
    error = Boom("raised on a helper")

    def piece(i: int) -> None:
        barrier.wait()
        if threading.current_thread().name != "run-caller":  # a helper: not the thread that called run
            raise error

    raises_then_runs_again(w, piece, threads, error, 5)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("threads", [2, 3, 4])
def test_pieces_run_on_all_threads_at_once(workers, threads: int) -> None:
    w = workers[threads]
    for _ in range(5):
        # Each piece blocks until `threads` pieces wait together: on fewer threads it times out.
        barrier = threading.Barrier(threads, timeout=BARRIER_TIMEOUT)
        idents: list[int] = []

        def piece(i: int, barrier=barrier, idents=idents) -> None:
            idents.append(threading.get_ident())
            barrier.wait()

        try:
            bounded(w, piece, threads)
        except threading.BrokenBarrierError:
            pytest.fail(f"{threads} pieces never ran at the same time on Workers({threads})")
        assert len(set(idents)) == threads


def test_one_thread_runs_the_pieces_in_order_in_the_callers_thread(workers) -> None:
    seen: list[tuple[int, int]] = []
    workers[1].run(lambda i: seen.append((i, threading.get_ident())), 7)
    assert seen == [(i, threading.get_ident()) for i in range(7)]


def test_helper_threads_end_when_the_workers_are_collected() -> None:
    def helpers() -> set[threading.Thread]:  # other tests' helpers may end meanwhile: only these are counted
        return {t for t in threading.enumerate() if t.name == "mlp-worker" and t.is_alive()}

    before = helpers()
    workers = Workers(3)
    ours = helpers() - before
    box = [0]
    workers.run(lambda i: box.__setitem__(0, box[0] + 1), 5)  # a closure the helpers ran
    assert len(ours) == 2 and all(t.is_alive() for t in ours) and box == [5]
    del workers
    gc.collect()
    deadline = time.monotonic() + 10
    while any(t.is_alive() for t in ours) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(t.is_alive() for t in ours)


# --- two phases in one run ---------------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("n", "n2"), [(1, 1), (2, 5), (7, 3), (0, 4), (3, 0)])
@pytest.mark.parametrize("threads", THREADS)
def test_the_second_phase_starts_after_every_piece_of_the_first_has_finished(workers, threads: int, n: int, n2: int):
    w = workers[threads]
    guard = threading.Lock()
    for _ in range(5):
        events: list[tuple[str, int, int]] = []  # (event, phase, piece) in the order they happened

        def note(event: str, phase: int, i: int, events=events) -> None:
            with guard:
                events.append((event, phase, i))

        def first(i: int, note=note) -> None:
            note("start", 1, i)
            time.sleep(0.001 * (i % 3))  # unequal pieces: some threads reach the barrier early
            note("end", 1, i)

        def second(i: int, note=note) -> None:
            note("start", 2, i)
            note("end", 2, i)

        bounded(w, first, n, (second, n2))
        assert sorted(i for e, p, i in events if e == "end" and p == 1) == list(range(n))
        assert sorted(i for e, p, i in events if e == "end" and p == 2) == list(range(n2))
        first_ends = [k for k, (e, p, _) in enumerate(events) if e == "end" and p == 1]
        second_starts = [k for k, (e, p, _) in enumerate(events) if e == "start" and p == 2]
        assert max(first_ends, default=-1) < min(second_starts, default=len(events))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("threads", [2, 3, 4])
def test_both_phases_run_on_all_threads_at_once(workers, threads: int) -> None:
    w = workers[threads]
    barriers = [threading.Barrier(threads, timeout=BARRIER_TIMEOUT) for _ in range(2)]
    idents: list[set[int]] = [set(), set()]

    def phase(k: int) -> Callable[[int], None]:
        def piece(i: int) -> None:
            idents[k].add(threading.get_ident())
            barriers[k].wait()

        return piece

    try:
        bounded(w, phase(0), threads, (phase(1), threads))
    except threading.BrokenBarrierError:
        pytest.fail(f"the pieces of a phase never ran all at once on Workers({threads})")
    assert len(idents[0]) == len(idents[1]) == threads


@pytest.mark.timeout(120)
@pytest.mark.parametrize("threads", THREADS)
def test_an_exception_in_the_first_phase_skips_the_second_and_reaches_the_caller(workers, threads: int) -> None:
    w = workers[threads]
    error = Boom("first phase")
    second: list[int] = []

    def piece(i: int) -> None:
        if i == 1:
            raise error

    with pytest.raises(Boom) as info:
        bounded(w, piece, 4, (second.append, 6))
    assert info.value is error
    assert second == []
    raises_then_runs_again(w, piece, 4, error, 6)  # and the workers serve the next call


@pytest.mark.timeout(120)
@pytest.mark.parametrize("threads", THREADS)
def test_the_gil_changes_hands_sooner_during_a_run_and_as_before_after_it(workers, threads: int) -> None:
    w = workers[threads]
    before = sys.getswitchinterval()
    seen: list[float] = []
    bounded(w, lambda i: seen.append(sys.getswitchinterval()), 4)
    expected = before if threads == 1 else pytest.approx(SWITCH_INTERVAL)  # one thread: nobody to hand it to
    assert seen == [expected] * 4 and SWITCH_INTERVAL < before
    assert sys.getswitchinterval() == before

    def fail(i: int) -> None:
        raise Boom("piece")

    with pytest.raises(Boom):
        bounded(w, fail, 3)
    assert sys.getswitchinterval() == before  # restored when a piece raises too


@pytest.mark.timeout(120)
@pytest.mark.parametrize("threads", THREADS)
def test_an_exception_in_the_second_phase_reaches_the_caller_after_the_first_phase_ran(workers, threads: int):
    w = workers[threads]
    error = Boom("second phase")
    first: list[int] = []

    def second(j: int) -> None:
        if j == 0:
            raise error

    with pytest.raises(Boom) as info:
        bounded(w, first.append, 5, (second, 3))
    assert info.value is error and sorted(first) == list(range(5))
    raises_then_runs_again(w, lambda i: second(0), 1, error, 4)


@pytest.mark.timeout(120)
def test_runs_on_several_workers_at_once_restore_the_switch_interval_when_the_last_ends(workers) -> None:
    before = sys.getswitchinterval()
    barrier = threading.Barrier(2, timeout=BARRIER_TIMEOUT)  # both runs in progress at once
    seen: list[float] = []

    def piece(i: int) -> None:
        if i == 0:
            barrier.wait()
            seen.append(sys.getswitchinterval())
            time.sleep(0.01 * len(seen))  # the runs end one after the other

    callers = [threading.Thread(target=bounded, args=(workers[t], piece, 2)) for t in (2, 3)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(TIMEOUT)
    assert seen == [pytest.approx(SWITCH_INTERVAL)] * 2
    assert sys.getswitchinterval() == before
