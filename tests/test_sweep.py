"""sweep: queue a grid with dvc, run it, rank by validation accuracy (never test).

The DVC side is replaced by a fake ``dvc`` executable that logs its arguments and replays the
output formats of DVC 3 (copied from real runs); the real queue runs in test_experiments.py.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mnist_pipeline import compute, sweep
from mnist_pipeline.errors import PipelineError


@pytest.fixture(autouse=True)
def _restore_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """sweep.main() puts the interpreter's directory first on PATH; undo it after each test."""
    monkeypatch.setenv("PATH", os.environ.get("PATH", ""))


def test_commands_started_without_the_venv_on_path_use_its_dvc_and_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = os.path.dirname(sys.executable)
    monkeypatch.setenv("PATH", os.pathsep.join(["/usr/bin", here, "/bin"]))
    sweep.use_this_environment()
    assert os.environ["PATH"].split(os.pathsep) == [here, "/usr/bin", "/bin"]  # first, and once
    sweep.use_this_environment()
    assert os.environ["PATH"].split(os.pathsep) == [here, "/usr/bin", "/bin"]


# `dvc exp run --queue -S train.lr=0.7 -S model=mlp_64_sigmoid,softmax_regression` (DVC 3.67).
QUEUE_OUTPUT = """\
Queueing with overrides '{'params.yaml': ['train.lr=0.7', 'model=mlp_64_sigmoid']}'.
Queued experiment 'scary-rail' for future execution.
Queueing with overrides '{'params.yaml': ['train.lr=0.7', 'model=softmax_regression']}'.
Queued experiment 'inner-vase' for future execution.
"""


def _exp(
    name: str,
    rev: str,
    val_acc: float | None,
    val_loss: float = 0.1,
    test_acc: float = 0.9,
    state="success",
    preset=None,
):
    metrics = (
        {} if val_acc is None else {"test": {"accuracy": test_acc}, "val": {"accuracy": val_acc, "loss": val_loss}}
    )
    params = {} if preset is None else {"params.yaml": {"data": {"preset": {"name": preset}, "train": {"lr": 0.1}}}}
    data = {"rev": rev, "params": params, "metrics": {"reports/metrics.json": {"data": metrics}} if metrics else {}}
    return {"executor": {"state": state, "name": "dvc-task"}, "name": name, "revs": [{"rev": rev, "data": data}]}


def _show(*experiments) -> list[dict]:
    """``dvc exp show --json``: the workspace, then the baseline commit with its experiments."""
    return [
        {"rev": "workspace", "name": None, "data": {}, "experiments": None},
        {"rev": "a" * 40, "name": "main", "data": {}, "experiments": list(experiments)},
    ]


# --- parsing ------------------------------------------------------------------------------------


def test_a_dvc_command_returns_while_the_workers_it_started_hold_its_output(tmp_path: Path) -> None:
    """`dvc queue start` leaves workers behind with its stdout: the call must not wait for them to exit."""
    script = tmp_path / "dvc"
    worker = f"{sys.executable} -c 'import time; time.sleep(30)'"
    pid = tmp_path / "worker.pid"
    said = "Started '1' new experiments task queue worker."
    script.write_text(f'#!/bin/sh\n{worker} &\necho $! > {pid}\necho "{said}"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    began = time.monotonic()
    try:
        out = sweep.Dvc(str(script), tmp_path)("queue", "start", "-j", "1")
        assert time.monotonic() - began < 10 and out == said + "\n"
    finally:
        if pid.exists():
            os.kill(int(pid.read_text()), signal.SIGTERM)


def test_parse_queued_pairs_names_with_their_overrides() -> None:
    assert sweep.parse_queued(QUEUE_OUTPUT) == {
        "scary-rail": "train.lr=0.7 model=mlp_64_sigmoid",
        "inner-vase": "train.lr=0.7 model=softmax_regression",
    }


def test_parse_queued_without_override_lines_keeps_the_names() -> None:
    output = "Queued experiment 'a-b' for future execution.\nQueueing with overrides '{broken'.\n"
    output += "Queued experiment 'c-d' for future execution.\n"
    assert sweep.parse_queued(output) == {"a-b": "", "c-d": ""}


def test_collect_keeps_only_this_sweeps_experiments_in_queue_order() -> None:
    show = _show(_exp("older", "1" * 40, 0.99), _exp("inner-vase", "2" * 40, 0.90), _exp("scary-rail", "3" * 40, 0.95))
    results = sweep.collect(show, {"scary-rail": "x=1", "inner-vase": "x=2", "lost-one": "x=3"})
    assert [(r.name, r.rev, r.overrides, r.val_accuracy, r.state) for r in results] == [
        ("scary-rail", "3333333", "x=1", 0.95, "success"),
        ("inner-vase", "2222222", "x=2", 0.90, "success"),
        ("lost-one", "", "x=3", None, "no result"),
    ]


# --- ranking ------------------------------------------------------------------------------------


def test_rank_uses_validation_accuracy_not_test() -> None:
    # Test accuracy orders these the other way round: ranking must ignore it.
    show = _show(
        _exp("val-low", "1" * 40, 0.95, test_acc=0.99),
        _exp("val-high", "2" * 40, 0.97, test_acc=0.90),
        _exp("val-mid", "3" * 40, 0.96, test_acc=0.95),
    )
    results = sweep.collect(show, {"val-low": "", "val-high": "", "val-mid": ""})
    assert [r.name for r in sweep.rank(results)] == ["val-high", "val-mid", "val-low"]


def test_rank_breaks_ties_by_validation_loss_and_puts_failures_last() -> None:
    results = [
        sweep.Result("failed", "", "failed", "-", "", None, None),
        sweep.Result("tie-worse", "1", "success", "-", "", 0.96, 0.20),
        sweep.Result("tie-better", "2", "success", "-", "", 0.96, 0.10),
    ]
    assert [r.name for r in sweep.rank(results)] == ["tie-better", "tie-worse", "failed"]


def test_ranking_table_has_no_test_metrics() -> None:
    show = _show(
        _exp("scary-rail", "3" * 40, 0.95, 0.123456, test_acc=0.9912, preset="best"), _exp("inner-vase", "2" * 40, 0.97)
    )
    table = sweep.format_ranking(sweep.collect(show, sweep.parse_queued(QUEUE_OUTPUT)))
    lines = table.splitlines()
    header = ["Rank", "Experiment", "Rev", "Preset", "Overrides", "val.accuracy", "val.loss", "State"]
    assert lines[0].split() == header
    assert lines[1].split()[:4] == ["1", "inner-vase", "2222222", "-"]
    assert lines[2].split() == ["2", "scary-rail", "3333333", "best", "train.lr=0.7", "model=mlp_64_sigmoid"] + [
        "0.9500",
        "0.12346",
        "success",
    ]
    assert "test" not in table.lower() and "0.9912" not in table


# --- the command, against a fake dvc ------------------------------------------------------------

FAKE_DVC = """\
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_DVC_LOG"], "a") as log:
    threads = ["threads=" + os.environ.get("MNIST_PIPELINE_THREADS", "unset")] if args[:2] == ["queue", "start"] else []
    log.write(json.dumps(args + threads) + "\\n")
if args[:3] == ["exp", "run", "--queue"]:
    sys.stdout.write(os.environ["FAKE_QUEUE_OUTPUT"])
elif args[:2] == ["queue", "status"]:
    state = os.environ.get("FAKE_STATE", "Success")
    print("Task     Name        Created    Status")
    print(f"2e95028  scary-rail  11:47 AM   {state}")
    print(f"20e0b0a  inner-vase  11:47 AM   {state}")
    print("\\nWorker status: 0 active, 1 idle")
elif args[:2] == ["exp", "show"]:
    sys.stderr.write(os.environ.get("FAKE_SHOW_WARNING", ""))
    sys.stdout.write(open(os.environ["FAKE_SHOW"]).read())
"""


@pytest.fixture
def fake_dvc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    script = tmp_path / "dvc"
    script.write_text(f"#!{sys.executable}\n{FAKE_DVC}", encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("FAKE_DVC_LOG", str(tmp_path / "calls.jsonl"))
    monkeypatch.setenv("FAKE_QUEUE_OUTPUT", QUEUE_OUTPUT)
    show = _show(_exp("scary-rail", "3" * 40, 0.95), _exp("inner-vase", "2" * 40, 0.97))
    (tmp_path / "show.json").write_text(json.dumps(show), encoding="utf-8")
    monkeypatch.setenv("FAKE_SHOW", str(tmp_path / "show.json"))
    return script


def _calls(fake_dvc: Path) -> list[list[str]]:
    return [json.loads(line) for line in (fake_dvc.parent / "calls.jsonl").read_text(encoding="utf-8").splitlines()]


def test_main_queues_runs_and_ranks(fake_dvc: Path, capsys: pytest.CaptureFixture) -> None:
    sweep.main(
        ["--dvc", str(fake_dvc), "-S", "train.lr=0.7", "-S", "model=mlp_64_sigmoid,softmax_regression", "-j", "2"]
    )
    assert _calls(fake_dvc) == [
        ["exp", "run", "--queue", "-S", "train.lr=0.7", "-S", "model=mlp_64_sigmoid,softmax_regression"],
        ["queue", "status"],  # a worker alive? (here one is idle; with none, stale shutdowns are dropped first)
        ["queue", "start", "-j", "2", f"threads={max(1, min(n for n, _ in compute.available_cpus()) // 2)}"],
        ["queue", "status"],
        ["queue", "stop"],
        ["exp", "show", "--json"],
    ]
    out = capsys.readouterr().out.splitlines()
    assert out[1].split()[:2] == ["1", "inner-vase"] and out[2].split()[:2] == ["2", "scary-rail"]
    assert out[-2:] == [
        "best by val.accuracy: inner-vase (train.lr=0.7 model=softmax_regression); `dvc exp apply inner-vase`",
        "every experiment, readable: `make exps`",
    ]


def test_show_prints_the_readable_view_only(fake_dvc: Path) -> None:
    sweep.main(["--dvc", str(fake_dvc), "--show"])
    assert _calls(fake_dvc) == [["exp", "show", "--no-pager", *sweep.VIEW]]


def test_main_defaults_to_the_lr_grid(fake_dvc: Path) -> None:
    sweep.main(["--dvc", str(fake_dvc)])
    assert _calls(fake_dvc)[0] == ["exp", "run", "--queue", "-S", "train.lr=0.05,0.1,0.2"]


def test_main_reports_failed_experiments(
    fake_dvc: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("FAKE_STATE", "Failed")
    (fake_dvc.parent / "show.json").write_text(json.dumps(_show(_exp("inner-vase", "2" * 40, 0.97))), "utf-8")
    with pytest.raises(PipelineError, match=r"1 experiment\(s\) produced no reports/metrics.json: scary-rail"):
        sweep.main(["--dvc", str(fake_dvc)])
    table = capsys.readouterr().out
    assert "inner-vase" in table and "no result" in table  # what did run is still shown


@pytest.mark.parametrize(("show", "message"), [("{}", "printed no list"), ("<html>", "printed no JSON")])
def test_a_warning_beside_exp_show_is_no_json_and_no_json_is_one_error(
    fake_dvc: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, show: str, message: str
) -> None:
    monkeypatch.setenv("FAKE_SHOW_WARNING", "WARNING: a newer version of dvc is available\n")
    sweep.main(["--dvc", str(fake_dvc)])  # the warning goes to stderr, not into the JSON
    assert capsys.readouterr().out.splitlines()[1].split()[:2] == ["1", "inner-vase"]
    (fake_dvc.parent / "show.json").write_text(show, "utf-8")
    with pytest.raises(PipelineError, match=message):
        sweep.main(["--dvc", str(fake_dvc)])


def test_main_fails_when_nothing_was_queued(fake_dvc: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_QUEUE_OUTPUT", "ERROR: something went wrong\n")
    with pytest.raises(PipelineError, match="queued no experiment"):
        sweep.main(["--dvc", str(fake_dvc)])
    assert len(_calls(fake_dvc)) == 1  # never ran the queue


# --- the queue: bounded, and restarted once when its workers stall -------------------------------


class ScriptedDvc:
    """Stands in for :class:`sweep.Dvc`: ``queue status`` answers from ``script`` (one per call, the last repeats;
    an entry's ``@workers`` is its worker line, ``1 active, 0 idle`` by default)."""

    def __init__(self, script: list[dict[str, str]]) -> None:
        self.script, self.calls = script, []

    def __call__(self, *args: str, capture: bool = True, env=None) -> str:
        self.calls.append(list(args))
        if list(args[:2]) != ["queue", "status"]:
            return ""
        states = dict(self.script.pop(0) if len(self.script) > 1 else self.script[0])
        workers = states.pop("@workers", "1 active, 0 idle")
        rows = [f"{i:07x}  {name}  11:47 AM  {state}" for i, (name, state) in enumerate(states.items())]
        return "\n".join(["Task  Name  Created  Status", *rows, "", f"Worker status: {workers}"])


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def run_queue(dvc: ScriptedDvc, names: list[str], jobs: int, **kwargs) -> None:
    """sweep.run_queue in no repository (no broker, no git refs) unless the test gives one or its ``refs``."""
    kwargs.setdefault("refs", set)
    kwargs.setdefault("repo", Path("/nonexistent-repo"))
    sweep.run_queue(dvc, names, jobs, **kwargs)


def test_parse_queue_status() -> None:
    output = ScriptedDvc([{"a-b": "Running", "c-d": "Queued", "e-f": "Success", "g-h": "Failed"}])("queue", "status")
    assert sweep.parse_queue_status(output) == {"a-b": "Running", "c-d": "Queued", "e-f": "Success", "g-h": "Failed"}


def test_run_queue_waits_for_its_experiments_then_stops_the_workers() -> None:
    dvc, clock = ScriptedDvc([{"a": "Queued", "b": "Queued"}, {"a": "Running", "b": "Queued"}]), Clock()
    dvc.script += [{"a": "Success", "b": "Running"}, {"a": "Success", "b": "Failed", "other": "Queued"}]
    run_queue(dvc, ["a", "b"], 2, timeout=600, clock=clock, sleep=clock.sleep)
    assert dvc.calls[1] == ["queue", "start", "-j", "2"] and dvc.calls[-1] == ["queue", "stop"]
    assert dvc.calls.count(["queue", "status"]) == 4  # one before the start, then up to the first with both finished


def starts(dvc: ScriptedDvc) -> list[list[str]]:
    return [c for c in dvc.calls if c[:2] != ["queue", "status"]]


def test_run_queue_restarts_stalled_workers_once_then_says_so() -> None:
    dvc, clock = ScriptedDvc([{"a": "Success", "b": "Queued"}]), Clock()  # b waits, nothing runs
    with pytest.raises(PipelineError, match=r"1 experiment\(s\) not finished \(b\): queued, but no queue worker"):
        run_queue(dvc, ["a", "b"], 1, timeout=3600, clock=clock, sleep=clock.sleep)
    assert starts(dvc) == [["queue", "start", "-j", "1"], ["queue", "stop", "--kill"], ["queue", "start", "-j", "1"]]
    # the killed worker still shows as alive here: the restart waits WORKER_GRACE for it to go, no longer
    assert 2 * sweep.STALL_SECONDS + sweep.WORKER_GRACE <= clock.now < 2 * sweep.STALL_SECONDS + sweep.WORKER_GRACE + 10


def test_parse_workers_counts_the_active_and_the_idle_ones() -> None:
    assert sweep.parse_workers(ScriptedDvc([{"a": "Running", "@workers": "2 active, 1 idle"}])("queue", "status")) == 3
    assert sweep.parse_workers("Task  Name  Created  Status\n") is None


def test_run_queue_starts_workers_that_exited_with_work_queued_again_without_waiting_for_a_stall() -> None:
    """DVC's worker exits after each experiment here (as seen with -j 1): each is started again within seconds."""
    gone = {"@workers": "0 active, 0 idle"}
    script = [{"a": "Running", "b": "Queued"}] * 3 + [{"a": "Success", "b": "Queued", **gone}] * 8
    script += [{"a": "Success", "b": "Running"}] * 3 + [{"a": "Success", "b": "Success", **gone}]
    dvc, clock = ScriptedDvc(script), Clock()
    run_queue(dvc, ["a", "b"], 1, timeout=3600, clock=clock, sleep=clock.sleep)
    assert starts(dvc) == [["queue", "start", "-j", "1"]] * 2 + [["queue", "stop"]]  # no kill, no stall
    assert clock.now < sweep.STALL_SECONDS / 2


def test_run_queue_tops_up_to_the_workers_asked_while_one_still_runs() -> None:
    script = [{"a": "Running", "b": "Queued", "c": "Queued", "@workers": "1 active, 0 idle"}] * 8
    script += [{"a": "Running", "b": "Running", "c": "Queued", "@workers": "2 active, 0 idle"}] * 3
    dvc, clock = ScriptedDvc(script + [{"a": "Success", "b": "Success", "c": "Success"}]), Clock()
    run_queue(dvc, ["a", "b", "c"], 2, timeout=3600, clock=clock, sleep=clock.sleep)
    assert starts(dvc) == [["queue", "start", "-j", "2"]] * 2 + [["queue", "stop"]]
    one_left = [{"a": "Success", "b": "Success", "c": "Running", "@workers": "1 active, 0 idle"}]
    dvc, clock = ScriptedDvc(one_left * 10 + [{"a": "Success", "b": "Success", "c": "Success"}]), Clock()
    run_queue(dvc, ["a", "b", "c"], 2, timeout=3600, clock=clock, sleep=clock.sleep)
    assert starts(dvc) == [["queue", "start", "-j", "2"], ["queue", "stop"]]  # nothing queued: one worker is enough


def test_run_queue_starts_exited_workers_a_bounded_number_of_times_then_stops_with_the_stall_error() -> None:
    dvc, clock = ScriptedDvc([{"a": "Success", "b": "Queued", "@workers": "0 active, 0 idle"}]), Clock()
    with pytest.raises(PipelineError, match=r"not finished \(b\): queued, but no queue worker runs them"):
        run_queue(dvc, ["a", "b"], 1, timeout=3600, clock=clock, sleep=clock.sleep)
    revived = [["queue", "start", "-j", "1"]] * (1 + sweep.MAX_REVIVALS)
    assert starts(dvc) == [*revived, ["queue", "stop", "--kill"], ["queue", "start", "-j", "1"]]


def _control_message(inbox: Path, name: str, body: object) -> Path:
    raw = base64.b64encode(json.dumps(body).encode()).decode()
    path = inbox / name
    path.write_text(json.dumps({"body": raw, "properties": {"body_encoding": "base64"}}), encoding="utf-8")
    return path


def test_stale_shutdowns_are_dropped_before_workers_start_when_none_is_alive(tmp_path: Path) -> None:
    inbox = tmp_path / sweep.BROKER_INBOX
    inbox.mkdir(parents=True)
    shutdown = {"method": "shutdown", "arguments": {}, "destination": None}
    stale = _control_message(inbox, "5_a.dvc-exp-1a2b3c-1@localhost.celery.pidbox.msg", shutdown)
    other = _control_message(inbox, "5_b.dvc-exp-1a2b3c-1@localhost.celery.pidbox.msg", {"method": "active"})
    task = _control_message(inbox, "5_c.celery.msg", shutdown)  # a task message, never touched
    broken = inbox / "5_d.dvc-exp-1a2b3c-2@localhost.celery.pidbox.msg"
    broken.write_text("{not json", encoding="utf-8")
    dvc, clock = ScriptedDvc([{"a": "Queued", "@workers": "1 active, 0 idle"}, {"a": "Success"}]), Clock()
    run_queue(dvc, ["a"], 1, timeout=600, clock=clock, sleep=clock.sleep, repo=tmp_path)
    assert stale.exists()  # a worker was alive: its messages are its own
    dvc, clock = ScriptedDvc([{"a": "Queued", "@workers": "0 active, 0 idle"}, {"a": "Success"}]), Clock()
    run_queue(dvc, ["a"], 1, timeout=600, clock=clock, sleep=clock.sleep, repo=tmp_path)
    assert not stale.exists() and other.exists() and task.exists() and broken.exists()
    assert sweep.drop_stale_shutdowns(tmp_path / "no-repo") == 0


def test_experiment_refs_are_the_refs_under_refs_exps(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    assert sweep.experiment_refs(tmp_path) == set()  # not a git repository
    git("init", "-q")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "base")
    for ref in ("refs/exps/ab/cdef12/rummy-tote", "refs/exps/ab/cdef12/fresh-zest", "refs/heads/other"):
        git("update-ref", ref, "HEAD")
    assert sweep.experiment_refs(tmp_path) == {"refs/exps/ab/cdef12/rummy-tote", "refs/exps/ab/cdef12/fresh-zest"}


def test_run_queue_returns_once_every_experiment_is_saved_without_waiting_for_the_status() -> None:
    dvc, clock = ScriptedDvc([{"a": "Running", "b": "Running"}]), Clock()  # the status lags behind
    older = "refs/exps/12/3456/b"  # a namesake saved under another baseline before the sweep: not this b
    looks: list[float] = []

    def refs() -> set[str]:
        looks.append(clock.now)
        return {older, "refs/exps/ab/cdef/a", "refs/exps/ab/cdef/b"} if clock.now >= 5.1 else {older}

    run_queue(dvc, ["a", "b"], 2, timeout=600, clock=clock, sleep=clock.sleep, refs=refs)
    assert clock.now == pytest.approx(5.5) and looks[-1] == pytest.approx(5.5)  # the first look after 5.1 s
    assert dvc.calls[-1] == ["queue", "stop"] and dvc.calls.count(["queue", "status"]) == 4


def test_run_queue_is_bounded_by_its_timeout() -> None:
    dvc, clock = ScriptedDvc([{"a": "Running"}]), Clock()  # runs forever
    with pytest.raises(PipelineError, match=r"not finished \(a\) after 5 min \(--timeout\)"):
        run_queue(dvc, ["a"], 1, timeout=300, clock=clock, sleep=clock.sleep)
    assert 300 < clock.now <= 305 and ["queue", "stop", "--kill"] not in dvc.calls  # running is progress


@pytest.mark.parametrize("jobs", ["0", "65", "100000"])
def test_jobs_must_be_from_1_to_64(jobs: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        sweep.parse_args(["-j", jobs])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"error: sweep: --jobs must be from 1 to 64, got {jobs}; see --help\n"
    assert sweep.parse_args(["-j", "64"]).jobs == 64


def test_queue_workers_share_the_cpus_out_unless_the_user_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compute, "available_cpus", lambda: [(8, "8 CPUs"), (6, "a cgroup quota of 5.5 CPUs")])
    assert compute.shared_by(2, {"PATH": "/bin"}) == {"PATH": "/bin", "MNIST_PIPELINE_THREADS": "3"}
    assert compute.shared_by(1, {})["MNIST_PIPELINE_THREADS"] == "6"
    assert compute.shared_by(16, {})["MNIST_PIPELINE_THREADS"] == "1"  # never zero
    assert compute.shared_by(2, {"MNIST_PIPELINE_THREADS": "4"}) == {"MNIST_PIPELINE_THREADS": "4"}
