"""Command line of the tuner, run by ``python -m mnist_pipeline.tune [--trials N] [--storage URL] ...``."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import re
import signal
from collections.abc import Sequence

from optuna.trial import TrialState

from mnist_pipeline import cli
from mnist_pipeline.errors import ConfigError, PipelineError
from mnist_pipeline.sweep import use_this_environment
from mnist_pipeline.text import terminal_lines
from mnist_pipeline.tune import __doc__ as DOC
from mnist_pipeline.tune import report, storage
from mnist_pipeline.tune.experiment import push_remote
from mnist_pipeline.tune.space import MAX_SEED, load_space
from mnist_pipeline.tune.study import Budget, load_study, optimize

log = logging.getLogger("mnist_pipeline.tune")
STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # a valid git ref component, as experiment names must be


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = cli.ArgumentParser(prog="tune", description=DOC.split("\n\n")[0])
    parser.add_argument("--space", default="default", help="conf/tune/<SPACE>.yaml, or a path (default: default)")
    parser.add_argument("--study", help="study name, prefix of its experiments' names (default: tune-<SPACE>)")
    parser.add_argument(
        "--storage",
        default=os.environ.get(storage.STORAGE_ENV),
        help=f"postgresql://user@host/db shared by many workers, or a journal file path "
        f"(default: ${storage.STORAGE_ENV}, else {storage.JOURNAL_DIR}/<STUDY>.log)",
    )
    parser.add_argument("--trials", type=int, help="trials in the study, over all workers (default: the space's)")
    parser.add_argument("--minutes", type=float, help="ask no new trial after this long (default: the space's)")
    parser.add_argument("--seed", type=int, help="sampler seed (default: the space's)")
    push = parser.add_mutually_exclusive_group()
    push.add_argument("--push", metavar="REMOTE", help="dvc exp push each experiment to this git remote")
    push.add_argument(
        "--no-push", action="store_true", help="never push (default: push if a git remote and a DVC remote are set)"
    )
    parser.add_argument("--preset", metavar="NAME", help="write the best trial as conf/experiment/NAME.yaml")
    parser.add_argument("--report", action="store_true", help="run nothing: print the study's table")
    parser.add_argument("--dvc", default="dvc", help="the dvc executable")
    args = parser.parse_args(argv)
    for flag in ("trials", "minutes"):
        value = getattr(args, flag)
        if value is not None and not (math.isfinite(value) and value > 0):  # NaN would never end the study
            parser.error(f"--{flag} must be a positive number, got {value}")
    if args.seed is not None and not 0 <= args.seed <= MAX_SEED:
        parser.error(f"--seed must be a whole number from 0 to {MAX_SEED}, got {args.seed}")
    return args


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> None:
    """Load the space, open the study, run trials until the budget is spent, print the ranking."""
    args = parse_args(argv)
    use_this_environment()
    space = load_space(args.space)
    if args.seed is not None:
        space = dataclasses.replace(space, seed=args.seed)
    study_name = args.study or f"tune-{space.name}"
    if not STUDY_NAME.match(study_name):
        raise ConfigError(f"study name {study_name!r} must be letters, digits, '.', '_' or '-'")
    study = load_study(study_name, storage.open_storage(args.storage, study_name), space)
    if not args.report:
        budget = Budget(args.trials or space.trials, args.minutes or space.minutes)
        if budget.trials is None and budget.minutes is None:
            raise ConfigError(f"no budget: give --trials or --minutes, or trials/minutes in space {space.name}")
        remote = None if args.no_push else (args.push or push_remote(args.dvc))
        for signum in (signal.SIGTERM, signal.SIGINT):  # a scheduler's stop, Ctrl-C: fail, re-queue, exit
            signal.signal(signum, _interrupt)
        ran = optimize(study, space, budget, args.dvc, remote, cwd=None)
        log.info("this worker ran %d trial(s)", ran)
    print(report.format_study(study))
    print(terminal_lines(report.summary(study)))
    best = [t for t in report.ranked(study)[:1] if t.state == TrialState.COMPLETE]
    if not best:
        raise PipelineError(f"study {study_name} has no complete trial yet; see the errors in the table above")
    if args.preset:
        print(f"wrote {report.write_preset(args.preset, best[0], space)}")
