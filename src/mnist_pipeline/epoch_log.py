"""The per-epoch training log: written live by DVCLive during ``train``, read back by ``report``.

``train`` logs each epoch's losses, accuracies and learning rate with DVCLive into ``dvclive/``
(:data:`~mnist_pipeline.paths.LIVE_DIR`): one TSV per metric under ``plots/metrics/`` and the
latest values in ``metrics.json``. DVCLive rewrites them after every epoch, so ``dvc exp show``, the
VS Code DVC extension and Studio follow a run while it trains, queued runs included.

What DVCLive writes is kept byte-identical across reruns: the step is the epoch number, no
timestamps, no system monitoring, no report, and it never writes ``dvc.yaml`` (the pipeline
declares the directory, its metrics and its plots there itself). If training fails (a diverged
loss, Ctrl-C), the previous run's log is put back, so a failed run leaves the directory as it was.

Importing this module does not import DVCLive (and DVC with it): only :func:`live_epochs` needs it.
"""

from __future__ import annotations

import csv
import io
import math
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from mnist_pipeline.errors import DataError
from mnist_pipeline.paths import read_capped_text

# The trainer's row keys, logged under the same names: plots/metrics/val_acc.tsv, "val_acc" in
# metrics.json. Flat names, so that none collides with evaluate's val.accuracy and val.loss in
# `dvc exp show` (a collision makes DVC prefix every such column with its file).
METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")


def metric_file(directory: Path, key: str) -> Path:
    """The TSV DVCLive writes for metric ``key`` (e.g. ``val_acc``)."""
    return directory / "plots" / "metrics" / f"{key}.tsv"


def files(directory: Path) -> list[Path]:
    """Every file :func:`live_epochs` writes in ``directory``: one TSV per metric, then ``metrics.json``."""
    return [*(metric_file(directory, key) for key in METRICS), directory / "metrics.json"]


@contextmanager
def live_epochs(directory: Path) -> Iterator[Callable[[dict[str, Any]], None]]:
    """Yield ``log(row)``, which writes one epoch's trainer row to ``directory`` with DVCLive.

    On an exception the directory is restored to what it held before, and the exception goes on.
    """
    from dvclive.live import Live  # imports DVC: only the train stage pays for it

    backup = tempfile.TemporaryDirectory(prefix="epoch-log-")
    with backup:
        saved = Path(backup.name) / "saved"
        if directory.exists():
            shutil.copytree(directory, saved)
        try:
            live = Live(str(directory), save_dvc_exp=False, dvcyaml=False, report=None, monitor_system=False)

            def log(row: dict[str, Any]) -> None:
                live.step = row["epoch"]
                for key in METRICS:
                    live.log_metric(key, row[key], timestamp=False)
                live.next_step()  # type: ignore[no-untyped-call]  # dvclive leaves it unannotated; writes metrics.json, signals VS Code, posts to Studio if connected

            yield log
            live.end()  # type: ignore[no-untyped-call]  # dvclive leaves it unannotated
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            if saved.exists():
                shutil.copytree(saved, directory)
            raise


def read_history(directory: Path) -> dict[str, np.ndarray]:
    """``{"epoch": (E,) int64, "train_loss": (E,) float64, ...}`` from the TSVs :func:`live_epochs` wrote.

    Raises
    ------
    DataError
        If a metric's file is missing or unreadable, or the files disagree on the epochs.
    """
    history: dict[str, np.ndarray] = {}
    epochs: np.ndarray | None = None
    for key in METRICS:
        path = metric_file(directory, key)
        steps, values = _read_tsv(path)
        if epochs is None:
            epochs = steps
        elif not np.array_equal(steps, epochs):
            raise DataError(f"{path} has other epochs than {metric_file(directory, 'train_loss')}; rerun `dvc repro`")
        history[key] = values
    assert epochs is not None  # METRICS is never empty
    return {"epoch": epochs, **history}


def _read_tsv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    fix = "rerun `dvc repro -f train`"
    try:
        rows = list(csv.reader(io.StringIO(read_capped_text(path, fix), newline=""), delimiter="\t"))
    except FileNotFoundError as exc:
        raise DataError(f"{path} is missing; {fix}") from exc
    except csv.Error as exc:
        raise DataError(f"{path} is not a DVCLive metric file ({exc}); {fix}") from exc
    if len(rows) < 2 or rows[0][:1] != ["step"] or any(len(r) != 2 for r in rows):
        raise DataError(f"{path} is not a DVCLive metric file (step<TAB>value rows); {fix}")
    try:
        steps = np.array([int(r[0]) for r in rows[1:]], dtype=np.int64)
        values = np.array([float(r[1]) for r in rows[1:]], dtype=np.float64)
    except ValueError as exc:
        raise DataError(f"{path}: {exc}; {fix}") from exc
    if not all(math.isfinite(v) for v in values) or np.any(np.diff(steps) != 1) or steps[0] != 1:
        raise DataError(f"{path} holds non-finite values or epochs that do not count up from 1; {fix}")
    return steps, values
