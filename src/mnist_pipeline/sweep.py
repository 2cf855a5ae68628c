"""Run a small grid of DVC experiments and rank them by validation accuracy.

Queues one experiment per grid point with ``dvc exp run --queue -S key=v1,v2 ...`` (DVC expands
the comma lists into their product), starts ``N`` queue workers (``dvc queue start -j N``) and
waits for this sweep's experiments, bounded (:func:`run_queue`), reads ``dvc exp show --json``
and prints the experiments of this sweep ranked by ``val.accuracy`` of reports/metrics.json.
Model selection uses validation only: test metrics are left out of the table on purpose;
compare the winner on test with ``dvc exp show``.

``--show`` prints every experiment in :data:`VIEW`, the columns people change and compare
(``make exps``), instead of the ~80 that plain ``dvc exp show`` lists.

Run: ``python -m mnist_pipeline.sweep [-S 'train.lr=0.05,0.1,0.2' ...] [-j 1] [--timeout MIN]``
(or ``make sweep``).
"""

from __future__ import annotations

import argparse
import ast
import base64
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from mnist_pipeline import cli, compute, paths
from mnist_pipeline.check_metrics import align
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.text import terminal

log = logging.getLogger(__name__)

DEFAULT_GRID = ("train.lr=0.05,0.1,0.2",)
METRICS_FILE = paths.METRICS_FILE.as_posix()  # the key of `dvc exp show --json`
RANK_BY = "val.accuracy"
# `dvc exp show` arguments for a table a person can read: the preset and groups chosen, the train
# settings people change, the metrics they compare, train seconds; no dataset checksums, mirrors,
# download settings or dependency hashes. Best validation accuracy first.
VIEW = (
    "--drop",
    ".*",
    "--keep",
    r"^(Created|preset\.name|dataset\.name|model\.(hidden|activation|dropout)|optimizer\.name|schedule\.name"
    r"|train\.(epochs|batch_size|lr|l2|seed|augment_shift|label_smoothing)|train_seconds"
    r"|(reports/metrics\.json:)?(val\.(accuracy|loss)|test\.accuracy))$",  # the file named when another has them
    "--sort-by",
    f"{METRICS_FILE}:{RANK_BY}",
    "--sort-order",
    "desc",
)
FINISHED = ("Success", "Failed")
STALL_SECONDS = 60.0  # queued work, nothing running, for this long: the workers are stuck
WORKER_GRACE = 10.0  # seconds a started queue worker may take to show in `dvc queue status`
SAVED_POLL = 0.5  # seconds between looks at the saved experiments' git refs while waiting for the queue
MAX_REVIVALS = 3  # workers started again per finished experiment, at most
_WORKERS = re.compile(r"Worker status: (\d+) active, (\d+) idle")
# DVC's filesystem message broker: the messages not yet consumed, one file each.
BROKER_INBOX = Path(".dvc/tmp/exps/celery/broker/in")
_QUEUED = re.compile(r"Queued experiment '([^']+)'")
_OVERRIDES = re.compile(r"Queueing with overrides '(\{.*\})'\.?$")


@dataclass(frozen=True)
class Result:
    """One experiment of the sweep as ``dvc exp show`` reports it."""

    name: str
    rev: str
    state: str
    preset: str
    overrides: str
    val_accuracy: float | None
    val_loss: float | None


def parse_queued(output: str) -> dict[str, str]:
    """``{experiment name: "key=value ..."}`` from ``dvc exp run --queue`` output, in queue order.

    DVC prints the overrides of each grid point on the line before its name; if that line is
    absent or unreadable, the overrides are left empty (the table still names the experiment).
    """
    queued: dict[str, str] = {}
    pending = ""
    for line in output.splitlines():
        if match := _OVERRIDES.search(line.strip()):
            try:
                by_file = ast.literal_eval(match.group(1))  # a dict literal, e.g. {'params.yaml': ['train.lr=0.1']}
                pending = " ".join(item for items in by_file.values() for item in items)
            except (ValueError, SyntaxError, AttributeError, TypeError):
                pending = ""
        elif match := _QUEUED.search(line):
            queued[match.group(1)] = pending
            pending = ""
    return queued


def _metric(data: dict[str, Any], dotted: str) -> float | None:
    node: Any = (data.get("metrics") or {}).get(METRICS_FILE, {}).get("data", {})
    for key in dotted.split("."):
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, int | float) and not isinstance(node, bool) else None


def collect(show: list[dict[str, Any]], queued: dict[str, str]) -> list[Result]:
    """The experiments named in ``queued`` found in ``dvc exp show --json`` output, in queue order."""
    found: dict[str, Result] = {}
    for baseline in show:
        for group in baseline.get("experiments") or []:
            name = group.get("name")
            if name not in queued:
                continue
            state = ((group.get("executor") or {}).get("state")) or "done"
            revs = group.get("revs") or [{}]
            data = revs[0].get("data") or {}
            rev = str(revs[0].get("rev", ""))[:7]
            params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
            preset = str((params.get("preset") or {}).get("name", "-"))
            val = _metric(data, RANK_BY), _metric(data, "val.loss")
            found[name] = Result(name, rev, state, preset, queued[name], *val)
    missing = [Result(n, "", "no result", "-", o, None, None) for n, o in queued.items() if n not in found]
    return [found[n] for n in queued if n in found] + missing


def rank(results: list[Result]) -> list[Result]:
    """Best validation accuracy first (ties: lower validation loss); runs without metrics last."""
    scored = [r for r in results if r.val_accuracy is not None]
    unscored = [r for r in results if r.val_accuracy is None]
    scored.sort(key=lambda r: (-(r.val_accuracy or 0.0), r.val_loss if r.val_loss is not None else float("inf")))
    return scored + unscored


def format_ranking(results: list[Result]) -> str:
    """A plain table: rank, experiment, rev, preset, overrides, val.accuracy, val.loss, state."""
    rows = [["Rank", "Experiment", "Rev", "Preset", "Overrides", "val.accuracy", "val.loss", "State"]]
    for i, r in enumerate(rank(results), start=1):
        acc = "-" if r.val_accuracy is None else f"{r.val_accuracy:.4f}"
        loss = "-" if r.val_loss is None else f"{r.val_loss:.5f}"
        position = str(i) if r.val_accuracy is not None else "-"
        rows.append([position, r.name, r.rev or "-", r.preset, r.overrides or "-", acc, loss, r.state])
    return align(rows)


def use_this_environment() -> None:
    """Put this interpreter's directory first on PATH, as the Makefile does for ``make tune``.

    Then ``dvc`` and the stage commands' ``python`` (``python -m mnist_pipeline...`` in dvc.yaml) are
    this environment's, when the command was started as ``.venv/bin/python -m ...`` without activating
    the venv (a SLURM task, cron, a service).
    """
    here = os.path.dirname(sys.executable)
    parts = os.environ.get("PATH", "").split(os.pathsep)
    if here and parts[:1] != [here]:
        os.environ["PATH"] = os.pathsep.join([here, *(p for p in parts if p != here)])


class Dvc:
    """Runs ``dvc`` commands in a repository; a failing command raises PipelineError with its output's tail."""

    def __init__(self, executable: str = "dvc", cwd: Path | None = None) -> None:
        self.executable, self.cwd = executable, cwd

    def __call__(
        self, *args: str, capture: bool = True, env: Mapping[str, str] | None = None, errors: bool = True
    ) -> str:
        """Run ``dvc *args`` (in ``env`` if given); return its output (with its errors and warnings unless not
        ``errors``), or let it print to the terminal if not ``capture``."""
        log.info("$ dvc %s", " ".join(args))
        # Output into files, not pipes: `dvc queue start` leaves workers behind that inherit its stdout, and a
        # pipe would not reach its end (so the call would not return) until every one of them had exited.
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            proc = subprocess.run(
                [self.executable, *args],
                cwd=self.cwd,
                stdout=out if capture else None,
                stderr=(subprocess.STDOUT if errors else err) if capture else None,
                text=True,
                env=None if env is None else dict(env),
            )
            said, complaints = (_read(out), _read(err)) if capture else ("", "")
        if proc.returncode != 0:
            tail = " | ".join((said + complaints).strip().splitlines()[-3:]) or "see its output above"
            raise PipelineError(f"`dvc {' '.join(args)}` exited {proc.returncode}: {tail}")
        return said


def _read(file: IO[str]) -> str:
    file.seek(0)
    return file.read()


def parse_queue_status(output: str) -> dict[str, str]:
    """``{experiment name: status}`` from ``dvc queue status`` (status: Queued, Running, Success, Failed)."""
    states = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[-1] in (*FINISHED, "Queued", "Running") and parts[0] != "Task":
            states[parts[1]] = parts[-1]
    return states


def parse_workers(output: str) -> int | None:
    """The queue workers alive (active or idle) that ``dvc queue status`` reports; None without its line."""
    match = _WORKERS.search(output)
    return None if match is None else int(match[1]) + int(match[2])


def drop_stale_shutdowns(repo: Path) -> int:
    """Delete the undelivered ``shutdown`` control messages in ``repo``'s queue broker; how many.

    Call only with no queue worker alive. ``dvc queue stop``, and a worker that stops itself when idle,
    broadcast ``shutdown`` into the control queue of every worker name the broker knows, alive or not;
    the next worker started under a name that was not alive reads it on start and exits after its first
    experiment, with work still queued (seen with DVC 3.x). Other messages, and anything unreadable, stay.
    """
    dropped = 0
    for path in sorted((repo / BROKER_INBOX).glob("*.celery.pidbox.msg")):
        try:
            message = json.loads(path.read_text(encoding="utf-8"))
            body = json.loads(base64.b64decode(message["body"], validate=True))
        except (OSError, ValueError, KeyError, TypeError):  # binascii.Error is a ValueError
            continue
        if isinstance(body, dict) and body.get("method") == "shutdown":
            path.unlink(missing_ok=True)
            dropped += 1
    return dropped


def experiment_refs(repo: Path) -> set[str]:
    """The git refs under which DVC has saved experiments in ``repo`` (``refs/exps/<baseline>/<name>``).

    A ``git for-each-ref`` takes milliseconds where ``dvc queue status`` takes seconds; empty if git fails.
    """
    try:
        out = subprocess.run(
            ["git", "for-each-ref", "--format=%(refname)", "refs/exps"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return set()
    return set(out.split())


def run_queue(
    dvc: Dvc,
    names: Sequence[str],
    jobs: int,
    timeout: float,
    poll: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    repo: Path = Path("."),
    env: Mapping[str, str] | None = None,
    refs: Callable[[], set[str]] | None = None,
) -> None:
    """Run the queued experiments ``names`` of ``repo`` with ``jobs`` queue workers; return when all have finished.

    The workers start in ``env`` (this process's environment by default), each experiment's share of the
    CPUs added (:func:`~mnist_pipeline.compute.shared_by`). Between two ``dvc queue status`` calls the
    experiments' refs are looked for every :data:`SAVED_POLL` seconds (``refs()``, by default
    :func:`experiment_refs`): once each name has a ref that was not there at the start, the wait is over.

    Not ``dvc exp run --run-all``, which users have seen stop after a few experiments and wait
    forever (iterative/dvc#10398): the wait here is bounded by ``timeout`` seconds. DVC's workers
    sometimes exit, or sit idle, with work still queued (iterative/dvc#10562, treeverse/dvc-task#77).
    A worker that has exited is started again (``dvc queue start -j N`` starts the missing ones) as
    soon as the status shows fewer workers than ``jobs`` (or than experiments left) with experiments
    queued, :data:`WORKER_GRACE` seconds after the last start, at most :data:`MAX_REVIVALS` times per
    finished experiment. Queued work with nothing running for :data:`STALL_SECONDS` gets every worker
    killed and restarted, once until an experiment finishes again. Workers are started after
    :func:`drop_stale_shutdowns` when none is alive. The workers are stopped once the sweep is done.

    Raises
    ------
    PipelineError
        On timeout, or if the workers stall again; the message names the experiments left and
        what to do. They stay in DVC's queue either way.
    """

    def start_workers(alive: int | None) -> None:
        if alive == 0 and (dropped := drop_stale_shutdowns(repo)):
            log.info("dropped %d stale shutdown message(s) that would stop the next queue worker", dropped)
        # The queue's workers pass their environment on: each experiment computes on its share of the CPUs.
        dvc("queue", "start", "-j", str(jobs), env=compute.shared_by(jobs, os.environ if env is None else env))

    def workers_alive() -> int | None:
        return parse_workers(dvc("queue", "status"))

    def saved_refs() -> set[str]:
        return refs() if refs is not None else experiment_refs(repo)

    before = saved_refs()  # names are unique per baseline commit only: an older namesake is not this one

    def all_saved() -> bool:
        return set(names) <= {ref.rsplit("/", 1)[-1] for ref in saved_refs() - before}

    start_workers(workers_alive())
    start = last_progress = last_start = clock()
    restarted, done, revivals = False, -1, 0
    while not all_saved():
        status = dvc("queue", "status")
        states = parse_queue_status(status)
        pending = [n for n in names if states.get(n) not in FINISHED]
        now = clock()
        if len(names) - len(pending) != done:
            done, last_progress = len(names) - len(pending), now
            restarted, revivals = False, 0
            log.info("%d of %d experiment(s) finished", done, len(names))
        if not pending:
            break
        if any(states.get(n) == "Running" for n in pending):
            last_progress = now
        left = f"{len(pending)} experiment(s) not finished ({', '.join(pending)})"
        if now - start > timeout:
            raise PipelineError(
                f"{left} after {timeout / 60:g} min (--timeout); they stay queued or running: "
                "see `dvc queue status` and `dvc queue logs NAME`, stop them with `dvc queue kill NAME`"
            )
        alive, queued = parse_workers(status), any(states.get(n) == "Queued" for n in pending)
        wanted = min(jobs, sum(states.get(n) in ("Queued", "Running") for n in pending))  # workers with work
        gone = queued and alive is not None and alive < wanted and revivals < MAX_REVIVALS
        if gone and now - last_start > WORKER_GRACE:
            log.warning("%d of %d queue worker(s) left with experiments queued: starting the others", alive, wanted)
            start_workers(alive)
            revivals, last_start = revivals + 1, now
        elif now - last_progress > STALL_SECONDS:
            if restarted:
                raise PipelineError(
                    f"{left}: queued, but no queue worker runs them (restarted once); see `dvc queue status`, "
                    "then `dvc queue stop` and `dvc queue start`"
                )
            log.warning("queued experiments and nothing running for %gs: restarting the queue workers", STALL_SECONDS)
            dvc("queue", "stop", "--kill")
            alive, waited = workers_alive(), 0.0
            while alive and waited < WORKER_GRACE:  # killed workers take a moment to go
                sleep(poll)
                waited += poll
                alive = workers_alive()
            start_workers(alive)
            restarted, last_progress, last_start = True, clock(), clock()
        waited = 0.0
        while waited < poll and not all_saved():
            sleep(SAVED_POLL)
            waited += SAVED_POLL
    else:
        log.info("%d of %d experiment(s) finished", len(names), len(names))
    dvc("queue", "stop")  # idle workers exit


def sweep(dvc: Dvc, grid: Sequence[str], jobs: int, timeout: float) -> list[Result]:
    """Queue ``grid``, run the queue, and return this sweep's experiments (unranked)."""
    queue_args = ["exp", "run", "--queue"]
    for override in grid:
        queue_args += ["-S", override]
    queued = parse_queued(dvc(*queue_args))
    if not queued:
        raise PipelineError(f"`dvc {' '.join(queue_args)}` queued no experiment")
    log.info("queued %d experiment(s): %s", len(queued), ", ".join(queued))
    run_queue(dvc, list(queued), jobs, timeout, repo=dvc.cwd or Path("."))
    shown = dvc("exp", "show", "--json", errors=False)  # a warning on stderr is no JSON
    try:
        experiments = json.loads(shown)
    except ValueError as exc:
        raise PipelineError(f"`dvc exp show --json` printed no JSON ({exc}); see `dvc exp show`") from exc
    if not isinstance(experiments, list):
        raise PipelineError("`dvc exp show --json` printed no list of commits; see `dvc exp show`")
    return collect(experiments, queued)


# Each job is a DVC queue worker process (and its stages' threads): more than this is no sweep a machine runs.
MAX_JOBS = 64


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = cli.ArgumentParser(prog="sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "-S",
        "--set-param",
        dest="grid",
        action="append",
        metavar="KEY=V1,V2",
        help=f"a dvc exp run -S override; repeat for a product grid (default: {' '.join(DEFAULT_GRID)})",
    )
    parser.add_argument("-j", "--jobs", type=int, default=1, help="experiments run at once (default 1)")
    parser.add_argument(
        "--timeout", type=float, default=180, help="minutes to wait for the sweep's experiments (default 180)"
    )
    parser.add_argument("--dvc", default="dvc", help="the dvc executable")
    parser.add_argument("--show", action="store_true", help="only print every experiment's readable dvc exp show view")
    args = parser.parse_args(argv)
    if not 1 <= args.jobs <= MAX_JOBS:
        parser.error(f"--jobs must be from 1 to {MAX_JOBS}, got {args.jobs}")
    if not args.timeout > 0:
        parser.error("--timeout must be a positive number of minutes")
    args.grid = args.grid or list(DEFAULT_GRID)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run the sweep, print the ranking, exit 1 if any experiment of the sweep failed."""
    args = parse_args(argv)
    use_this_environment()
    if args.show:
        Dvc(args.dvc)("exp", "show", "--no-pager", *VIEW, capture=False)
        return
    results = sweep(Dvc(args.dvc), args.grid, args.jobs, args.timeout * 60)
    print(format_ranking(results))
    best = rank(results)[0]
    if best.val_accuracy is not None:
        print(
            terminal(
                f"best by {RANK_BY}: {best.name} ({best.overrides or 'no overrides'}); `dvc exp apply {best.name}`"
            )
        )
        print("every experiment, readable: `make exps`")
    failed = [r.name for r in results if r.val_accuracy is None]
    if failed:
        raise PipelineError(
            f"{len(failed)} experiment(s) produced no {METRICS_FILE}: {', '.join(failed)}; see `dvc queue logs NAME`"
        )


if __name__ == "__main__":
    from mnist_pipeline.cli import run

    run(main, "sweep")
