"""Stopping a stage (mnist_pipeline.cli): SIGTERM unwinds it, and it dies with what started it.

The process-level tests train the tiny synthetic MNIST for many epochs, wait until the new run has
rewritten the live log, then stop it: by SIGTERM to the stage, or by SIGKILL to a stand-in for
``dvc`` that ran the stage through ``sh -c``. Either way the stage must be gone within seconds and
leave the previous run's model and live log byte for byte.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mnist_pipeline import cli, paths
from mnist_pipeline.epoch_log import files
from mnist_pipeline.stages import featurize, prepare

TRAIN = [sys.executable, "-m", "mnist_pipeline.stages.train"]
GONE_WITHIN = 15.0  # seconds: the watcher looks twice a second; the rest is unwinding


def test_starters_are_the_parent_and_the_shells_between() -> None:
    code = (
        "import json; from mnist_pipeline import cli; "
        "print(json.dumps([(p, s, open(f'/proc/{p}/comm').read().strip()) for p, s in cli.starters()]))"
    )
    probe = f"{sys.executable} -c {json.dumps(code)}; true"  # `; true`: the shell cannot exec the command
    chain = json.loads(subprocess.run(["sh", "-c", probe], capture_output=True, text=True, check=True).stdout)
    assert chain[-1][0] == os.getpid()  # the process that ran `sh -c`, as dvc does
    assert len(chain) == 2 and chain[0][2] in cli.SHELLS  # the shell in between is watched too
    assert all(start.isdigit() for _, start, _ in chain)
    assert cli.starters(1) == []  # init is never watched


def test_the_watcher_signals_once_a_starter_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        chain = cli.starters(sleeper.pid)
        assert [pid for pid, _ in chain] == [sleeper.pid]
        sent: list[tuple[int, int]] = []
        kill = os.kill
        monkeypatch.setattr(
            cli.os, "kill", lambda pid, sig: sent.append((pid, sig)) if pid == os.getpid() else kill(pid, sig)
        )
        watcher = cli.die_with_starters(chain, period=0.02)
        time.sleep(0.1)
        assert sent == []  # the starter is alive: nothing happens
        sleeper.kill()
        sleeper.wait()
        watcher.join(timeout=5)
        assert sent == [(os.getpid(), signal.SIGTERM)]
    finally:
        sleeper.kill()


def _previous_run(ws) -> dict[str, bytes]:
    """Train once to the end (the outputs a stopped run must leave), then set up a long run."""
    prepare.main()
    featurize.main()
    subprocess.run(TRAIN, capture_output=True, timeout=300, check=True)
    before = {p: (ws.root / p).read_bytes() for p in [paths.MODEL_FILE, *files(paths.LIVE_DIR)]}
    ws.write_params(**{"train.epochs": 1000, "train.seed": 1})
    return before


def _wait_until_rewritten(ws, before: dict[str, bytes], proc: subprocess.Popen) -> None:
    live = ws.root / paths.LIVE_DIR / "metrics.json"
    deadline = time.monotonic() + 120
    while not live.exists() or live.read_bytes() == before[paths.LIVE_DIR / "metrics.json"]:
        assert proc.poll() is None and time.monotonic() < deadline, "the long run never logged an epoch"
        time.sleep(0.05)


def _assert_as_before(ws, before: dict[str, bytes]) -> None:
    for path, data in before.items():
        assert (ws.root / path).read_bytes() == data, f"{path} changed"


@pytest.mark.slow
def test_sigterm_unwinds_the_stage_and_puts_the_live_log_back(tiny_workspace) -> None:
    before = _previous_run(tiny_workspace)
    proc = subprocess.Popen(TRAIN, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_until_rewritten(tiny_workspace, before, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=GONE_WITHIN)
    assert proc.returncode == 143
    assert err.strip().splitlines()[-1] == "error: train: stopped by SIGTERM"
    _assert_as_before(tiny_workspace, before)


@pytest.mark.slow
def test_a_stage_dies_with_the_dvc_that_ran_it_through_a_shell(tiny_workspace, tmp_path: Path) -> None:
    before = _previous_run(tiny_workspace)
    # A stand-in for dvc: runs the stage through `sh -c` (as dvc does with $SHELL) and waits for it.
    stand_in = subprocess.Popen(
        [sys.executable, "-c", f"import subprocess; subprocess.run({' '.join(TRAIN)!r}, shell=True)"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_until_rewritten(tiny_workspace, before, stand_in)
    argvs = {p: _cmdline(p).split(b"\0") for p in _descendants(stand_in.pid)}
    stages = [p for p, argv in argvs.items() if b"mnist_pipeline.stages.train" in argv]  # not `sh -c "..."`
    assert len(stages) == 1 and any(Path(a.decode()).name in cli.SHELLS for argv in argvs.values() for a in argv[:1])
    stand_in.kill()  # SIGKILL: dvc gets no chance to stop its child
    stand_in.wait()
    deadline = time.monotonic() + GONE_WITHIN
    while Path(f"/proc/{stages[0]}").exists() and _state(stages[0]) != "Z":
        assert time.monotonic() < deadline, "the orphaned stage is still training"
        time.sleep(0.05)
    _assert_as_before(tiny_workspace, before)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"


def _descendants(pid: int) -> list[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [p for p, pp in parents.items() if pp == parent]
        found += children
        frontier += children
    return found
