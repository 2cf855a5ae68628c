"""Where a study lives, and how it stays consistent when a worker dies.

Embedded (no ``--storage``): Optuna's journal file ``.dvc/tmp/tune/<study>.log`` (git-ignored with
the rest of ``.dvc/tmp``). Every change is one appended line under a file lock, so several workers
on one machine share it safely, where SQLite's single writer lock makes concurrent workers fail
with "database is locked". Shared (``--storage postgresql://...``): Optuna's RDBStorage with
heartbeats, for workers on many machines.

A worker killed mid-trial leaves a RUNNING trial behind. :func:`recover` fails such trials and
re-queues their params (as a WAITING trial that the next ``ask`` pops): trials of a worker on this
machine whose process is gone (checked by pid and start time, so at once), and, on RDBStorage, any
trial whose heartbeat is older than the grace period (a worker on another machine).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from mnist_pipeline.errors import ConfigError

log = logging.getLogger(__name__)

STORAGE_ENV = "TUNE_STORAGE"  # the same as --storage
JOURNAL_DIR = Path(".dvc/tmp/tune")
HEARTBEAT_SECONDS = 30
GRACE_SECONDS = 120  # a trial without a heartbeat for this long belongs to a dead worker
MAX_RETRY = 2  # times an interrupted trial's params are run again
CONNECT_TIMEOUT = 10  # seconds to reach the database server
SCHEMA_ATTEMPTS = 5
WORKER_ATTR = "worker"  # user attr: host:pid:start of the process running the trial
SKIPPED_ATTR = "skipped"  # user attr of a trial asked after the budget was spent (never run)


def _retry_callback() -> optuna.storages.RetryHeartbeatStaleTrialCallback:
    """Optuna's re-queue of a failed trial's params (experimental since 2.8; quiet about it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback(MAX_RETRY)


def open_storage(url: str | None, study: str) -> optuna.storages.BaseStorage:
    """The journal file for ``study`` if ``url`` is empty, a journal file if it is a path, else an RDBStorage.

    ``postgresql://`` is read as ``postgresql+psycopg://`` (psycopg 3, the ``tune`` extra).

    Raises
    ------
    ConfigError
        If the database cannot be reached or the URL is not understood; the message names the URL
        (password hidden). If the journal file is not one Optuna wrote (a line that is not its JSON).
    """
    if not url:
        url = str(JOURNAL_DIR / f"{study}.log")
    if "://" not in url:
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        backend = optuna.storages.journal.JournalFileBackend(url)  # type: ignore[attr-defined]  # a lazy submodule
        try:
            return optuna.storages.JournalStorage(backend)  # replays the whole journal
        except (ValueError, KeyError, TypeError) as exc:  # not JSON, not UTF-8, or JSON of other fields
            raise ConfigError(
                f"the study journal {url} is corrupt ({type(exc).__name__}: {' '.join(str(exc).split())}); "
                "move it away to start the study afresh, or pass another --storage"
            ) from exc
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    connect_args = {"connect_timeout": CONNECT_TIMEOUT} if url.startswith("postgresql") else {}
    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            return _rdb_storage(url, connect_args)
        except Exception as exc:  # sqlalchemy's errors, a missing driver, a malformed URL: all one line
            # Workers that start together on an empty database race to create Optuna's tables; the
            # losers see "already exists" / a duplicate key, and find the tables on the next try.
            if _is_schema_race(exc) and attempt + 1 < SCHEMA_ATTEMPTS:
                log.info("another worker is creating the study tables; retrying")
                time.sleep(0.5 + random.random())
                continue
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__]
            raise ConfigError(f"cannot open study storage {_masked(url)}: {reason[0]}") from exc
    raise AssertionError("unreachable")


def _rdb_storage(url: str, connect_args: dict[str, Any]) -> optuna.storages.RDBStorage:
    with warnings.catch_warnings():  # heartbeats are experimental (since 2.9)
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs={"connect_args": connect_args, "pool_pre_ping": True},
            heartbeat_interval=HEARTBEAT_SECONDS,
            grace_period=GRACE_SECONDS,
            heartbeat_stale_trial_callback=_retry_callback(),
        )


def _is_schema_race(exc: Exception) -> bool:
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    return isinstance(exc, IntegrityError | ProgrammingError)


def _masked(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: show the scheme only
        return url.split("://", 1)[0] + "://..."


def this_worker() -> str:
    """``host:pid:start`` of this process: names it in its trials, unambiguous even after pid reuse."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}"


def _start_time(pid: int) -> str:
    try:  # field 22 of /proc/PID/stat, after the parenthesised command name (which may hold spaces)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


def _is_dead(worker: str) -> bool:
    """True if ``worker`` ran on this machine and its process is gone (unknown workers are alive)."""
    host, _, rest = worker.partition(":")
    pid, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, another user's
        return False
    return start != "?" and _start_time(int(pid)) != start


def recover(study: optuna.Study) -> list[int]:
    """Fail and re-queue the RUNNING trials of dead workers; return their numbers."""
    with warnings.catch_warnings():  # heartbeats (RDBStorage): a worker on any machine
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _is_dead(str(trial.user_attrs.get(WORKER_ATTR, ""))):
            if fail_and_requeue(study, trial, f"worker {trial.user_attrs[WORKER_ATTR]} died"):
                recovered.append(trial.number)
    for number in recovered:
        log.warning("trial %d: its worker died; failed it and queued its params again", number)
    return recovered


def fail_and_requeue(study: optuna.Study, trial: FrozenTrial, error: str) -> bool:
    """Tell ``trial`` FAIL with ``error`` and queue its params again; False if another worker got there first."""
    storage = study._storage
    try:
        storage.set_trial_user_attr(trial._trial_id, "error", error)
        if not storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
            return False
    except UpdateFinishedTrialError:
        return False
    _retry_callback()(study, storage.get_trial(trial._trial_id))
    return True


def retried(trials: list[FrozenTrial]) -> set[int]:
    """Numbers of the trials that were run again under another number (they do not count)."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def counted(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The trials the budget counts: all but the re-queued and the skipped ones, by number."""
    gone = retried(trials)
    return sorted(
        (t for t in trials if t.number not in gone and SKIPPED_ATTR not in t.user_attrs), key=lambda t: t.number
    )


@contextlib.contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """Record ``trial``'s heartbeat in the background while the block runs (if the storage has heartbeats)."""
    storage: Any = study._storage
    interval = storage.get_heartbeat_interval() if hasattr(storage, "record_heartbeat") else None
    if not interval:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            storage.record_heartbeat(trial._trial_id)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name="tune-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
