"""Every file the stages hand each other, in one place; ``dvc.yaml`` names the same paths.

Relative to the repository root, where DVC runs each stage. A stage reads what an earlier one
wrote by these names, never by importing that stage. Every file the pipeline reads is opened
with :func:`open_regular`, which refuses FIFOs, devices and other special files up front.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import IO, Any

from mnist_pipeline.errors import DataError

RAW_DIR = Path("data/raw")  # download: the four verified .gz files
PREPARED_DIR = Path("data/prepared")  # prepare: {train,test}.npz, normalized pixels and labels
FEATURES_DIR = Path("data/features")  # featurize: {train,val,test}.npz, with one-hot labels
MODEL_FILE = Path("data/model/model.npz")  # train: weights and metadata
ONNX_FILE = Path("data/model/model.onnx")  # export: the same model as ONNX, raw pixels in

LIVE_DIR = Path("dvclive")  # train: DVCLive's per-epoch metrics, rewritten after every epoch (epoch_log.py)

REPORTS_DIR = Path("reports")
TIMING_FILE = REPORTS_DIR / "timing.json"  # train: wall clock, deliberately no stage's output
METRICS_FILE = REPORTS_DIR / "metrics.json"  # evaluate
CLASSIFICATION_REPORT_FILE = REPORTS_DIR / "classification_report.json"  # evaluate
CLASSIFICATION_REPORT_TEXT = REPORTS_DIR / "classification_report.txt"  # evaluate
PREDICTIONS_FILE = REPORTS_DIR / "predictions.csv"  # evaluate: actual,predicted per test image
COMPUTE_FILE = REPORTS_DIR / "compute.json"  # evaluate: the compute fingerprints of train and evaluate
REPORT_FILE = REPORTS_DIR / "report.md"  # report
FIGURES_DIR = REPORTS_DIR / "figures"  # report


_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a directory",
}


def open_regular(path: str | Path, mode: str = "rb", **kwargs: Any) -> IO[Any]:
    """Open ``path`` (a regular file, or a link to one) for reading, as ``open(path, mode, **kwargs)`` would.

    A FIFO would block until someone writes to it and a device such as ``/dev/zero`` never ends, so
    anything but a regular file is refused before a byte is read: checked before opening, and again
    on the opened descriptor (opened non-blocking, so a FIFO cannot hang the open itself).

    Raises
    ------
    DataError
        If ``path`` is not a regular file; the message names it and what it is.
    OSError
        As :func:`open` does (``FileNotFoundError``, ``PermissionError``, ...).
    """
    _check_regular(path, os.stat(path).st_mode)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        _check_regular(path, os.fstat(fd).st_mode)  # it may have been swapped since the stat
        os.set_blocking(fd, True)
        return os.fdopen(fd, mode, **kwargs)
    except BaseException:
        os.close(fd)
        raise


def _check_regular(path: str | Path, mode: int) -> None:
    if not stat.S_ISREG(mode):
        kind = _KINDS.get(stat.S_IFMT(mode), "a special file")
        raise DataError(f"{path} is {kind}, not a regular file; refusing to read it")


TEXT_CAP = 256 << 10  # bytes: the largest config, gate, metrics or search-space file any command reads whole


def read_capped_text(path: str | Path, fix: str, cap: int = TEXT_CAP) -> str:
    """The UTF-8 text of the regular file ``path``, refused before it is read if it is over ``cap`` bytes.

    Every file a command reads whole and parses (params.yaml, conf/, gates, metrics, fingerprints,
    search spaces) is a few kilobytes; a gigabyte of padding would take seconds and gigabytes to
    parse only to be refused later, or worse, accepted.

    Raises
    ------
    DataError
        If ``path`` is over the cap (``fix`` says what to do), not a regular file, or not UTF-8.
    OSError
        As :func:`open` does.
    """
    with open_regular(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        data = b"" if size > cap else f.read(cap + 1)  # it may grow between the stat and the read
    if size > cap or len(data) > cap:
        raise DataError(
            f"{path} is {max(size, len(data)):,} bytes, over the {cap:,}-byte cap on files read whole; {fix}"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text (byte {exc.start}); {fix}") from exc
