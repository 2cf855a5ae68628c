"""Atomic, pickle-free artifact I/O: npz arrays, JSON and CSV with stable bytes.

Every writer goes through :func:`atomic_write`: the data lands in a temporary
file beside the target and is renamed over it only when complete, so a stage
killed at any point leaves the previous complete file or none.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import io
import json
import math
import os
import secrets
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mnist_pipeline.errors import DataError
from mnist_pipeline.paths import open_regular

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first local header, or an empty zip
# The most an .npz may hold, uncompressed, all arrays together: 1 GiB, about 5 times the largest
# file the pipeline writes (data/prepared/train.npz: 60000x784 float32 pixels, 188 MB).
MAX_NPZ_BYTES = 1 << 30
NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[Any]:
    """Open a temp file next to ``path``; rename it over ``path`` on success only.

    If the ``with`` body raises (or the process dies), ``path`` keeps its old
    content, or stays absent. The temp file ``.<name>.<pid>.<random>.tmp`` is
    removed on error; one left by a killed process is removed by the next
    write to ``path``. The new file gets the usual permissions (``0o666`` less
    the umask), and the data and the rename are fsynced.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, mode) if "b" in mode else os.fdopen(fd, mode, encoding="utf-8", newline="") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _remove_stale_temps(path: Path) -> None:
    """Delete temp files that a killed writer left beside ``path`` (those whose process is gone)."""
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (best effort: not every platform can open a directory)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_npz(path: str | Path, meta: dict[str, Any] | None = None, **arrays: np.ndarray) -> None:
    """Write arrays (and optional JSON ``meta``) to an uncompressed ``.npz``.

    Entries are written in sorted order with a fixed zip timestamp so that equal
    arrays give byte-identical files.
    """
    if meta is not None:
        arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
    with atomic_write(path) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            zf.writestr(info, buf.getvalue())


def load_npz(path: str | Path, required: Sequence[str] = (), fix: str | None = None) -> dict[str, np.ndarray]:
    """Load every array of an ``.npz`` into memory, refusing pickled objects and sizes beyond limits.

    Before a member is decompressed or allocated, its zip entry's uncompressed size (all entries
    together at most :data:`MAX_NPZ_BYTES`) and its ``.npy`` header (shape x dtype, at most the
    entry's size) are checked, so neither a compressed bomb nor a header claiming 10^10 elements
    costs memory.

    Raises DataError (naming ``path``) if the file is missing, not a regular file, not a zip
    archive (a bare ``.npy``, a pickle, anything else), too large, corrupt, holds pickled
    object arrays or anything but ``.npy`` members, or lacks one of the ``required`` arrays. The message
    ends with ``fix`` if given, else with the pipeline's own (``dvc repro`` rebuilds its files).
    """
    path = Path(path)
    rerun = fix or "delete it and rerun `dvc repro`"
    try:
        with open_regular(path) as f:
            magic = f.read(4)
            if magic not in ZIP_MAGIC:  # np.load would treat it as .npy or (refused) pickle: say what it is
                raise DataError(f"{path} is not an .npz archive (starts with {magic!r}), refusing to load it; {rerun}")
            f.seek(0)
            with zipfile.ZipFile(f) as zf:
                members = zf.infolist()
                for m in members:  # what zipfile would refuse with RuntimeError or NotImplementedError
                    if m.flag_bits & 0x1 or m.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                        raise DataError(
                            f"{path}: member {m.filename!r} is encrypted or compressed in a way numpy never "
                            f"writes (method {m.compress_type}); {rerun}"
                        )
                total = sum(m.file_size for m in members)
                if total > MAX_NPZ_BYTES:
                    raise DataError(
                        f"{path}: its arrays take {total} bytes uncompressed, more than the {MAX_NPZ_BYTES} bytes "
                        f"({MAX_NPZ_BYTES >> 20} MiB) accepted; refusing to load it; {rerun}"
                    )
                arrays = {m.filename.removesuffix(".npy"): _load_member(zf, m, path, rerun) for m in members}
    except FileNotFoundError as exc:
        raise DataError(f"{path} is missing; {fix or 'run `dvc repro` to build it'}") from exc
    except ValueError as exc:  # numpy reports bad .npy headers and truncated data with ValueError
        raise DataError(f"{path} is corrupt ({exc}); {rerun}") from exc
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path} is not a readable .npz ({exc}); {rerun}") from exc
    missing = [k for k in required if k not in arrays]
    if missing:
        raise DataError(f"{path} lacks array {missing[0]!r}; {fix or 'rebuild it with `dvc repro`'}")
    return arrays


def _load_member(zf: zipfile.ZipFile, member: zipfile.ZipInfo, path: Path, rerun: str) -> np.ndarray:
    """One ``.npy`` member of an ``.npz``, its header checked against its zip entry's size before loading."""
    name = member.filename
    with zf.open(member) as f:
        if not name.endswith(".npy") or f.read(len(np.lib.format.MAGIC_PREFIX)) != np.lib.format.MAGIC_PREFIX:
            raise DataError(f"{path}: member {name!r} is not an .npy array, refusing to load it; {rerun}")
        f.seek(0)
        version = np.lib.format.read_magic(f)
        if version not in NPY_HEADER_READERS:
            raise DataError(f"{path}: {name} has unsupported .npy format version {version}; {rerun}")
        shape, _, dtype = NPY_HEADER_READERS[version](f)
    if dtype.hasobject:  # never unpickle: a pickle can run code on load
        raise DataError(f"{path} holds pickled objects, refusing to load it; {rerun}")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > member.file_size:
        raise DataError(
            f"{path}: {name} claims shape {shape} of {dtype} ({nbytes} bytes) but its zip entry holds "
            f"{member.file_size} bytes; {rerun}"
        )
    with zf.open(member) as f:
        return np.lib.format.read_array(f, allow_pickle=False)


def check_labelled(path: str | Path, x: np.ndarray, y: np.ndarray, num_classes: int, fix: str) -> None:
    """DataError naming ``path`` (then ``fix``) unless ``x`` holds finite floats and ``y`` integer labels
    below ``num_classes``: what a data file of examples must hold before anything is computed from it."""
    if x.dtype.kind != "f" or not np.isfinite(x).all():
        raise DataError(f"{path}: x holds NaN, infinite or non-float values; {fix}")
    if y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= num_classes:
        raise DataError(f"{path}: y must hold integer labels 0..{num_classes - 1}; {fix}")


def npz_meta(arrays: dict[str, np.ndarray], path: str | Path) -> dict[str, Any]:
    """The JSON metadata stored by :func:`save_npz` under ``meta``."""
    if "meta" not in arrays:
        raise DataError(f"{path} has no metadata; rebuild it with `dvc repro`")
    try:
        return json.loads(str(arrays["meta"]))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} has corrupt metadata ({exc}); rebuild it with `dvc repro`") from exc
    except ValueError as exc:  # Python refuses to read an integer of over 4300 digits
        raise DataError(
            f"{path} has corrupt metadata (an integer of over 4300 digits); rebuild it with `dvc repro`"
        ) from exc
    except RecursionError as exc:  # json recurses once per level of nesting
        raise DataError(f"{path} has metadata nested too deeply to read; rebuild it with `dvc repro`") from exc


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON with sorted keys and a trailing newline (stable bytes); NaN or inf is a ValueError (not JSON)."""
    with atomic_write(path, "w") as f:
        f.write(json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")


def json_object(text: str, source: str, fix: str = "") -> dict[str, Any]:
    """The JSON object in ``text``; DataError naming ``source`` (and ``fix``, if given) if it is not valid
    JSON or not an object."""
    then = f"; {fix}" if fix else ""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{source} is not valid JSON ({exc.msg} at line {exc.lineno}){then}") from exc
    except ValueError as exc:  # Python refuses to read an integer of over 4300 digits
        raise DataError(f"{source} is not usable JSON (an integer of over 4300 digits){then}") from exc
    except RecursionError as exc:
        raise DataError(f"{source} is not usable JSON (nested too deeply){then}") from exc
    if not isinstance(data, dict):
        raise DataError(f"{source} must hold a JSON object{then}")
    return data


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically."""
    with atomic_write(path, "w") as f:
        f.write(text)


def write_csv(path: str | Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Write a CSV file atomically (``\\n`` line endings)."""
    with atomic_write(path, "w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
