"""DVC experiments on the real MNIST files: queued sweeps, comparison, apply/branch, group overrides.

A module fixture copies the repo into a throw-away git repo whose default preset cuts training
to 1 epoch, runs the baseline with ``dvc repro`` and commits it. Every test that changes the
workspace puts it back, so they do not depend on their order. Skipped without the MNIST mirror.
One pipeline runs at a time (``-j 1``): the machine is small.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from helpers.dvc_sandbox import BIN, DVC, Sandbox, make_sandbox, real_mirror, stages_run
from mnist_pipeline.epoch_log import METRICS, files, read_history
from mnist_pipeline.paths import LIVE_DIR

pytestmark = pytest.mark.slow

LRS = (0.05, 0.2)


def _exps(box: Sandbox) -> dict[str, dict]:
    """Experiments of ``dvc exp show --json`` by name: ``{"lr", "optimizer", "metrics", "rev"}``."""
    found = {}
    for baseline in json.loads(box.dvc("exp", "show", "--json")):
        for group in baseline.get("experiments") or []:
            data = group["revs"][0]["data"]
            params = data["params"]["params.yaml"]["data"]
            metrics = (data.get("metrics") or {}).get("reports/metrics.json", {}).get("data")
            found[group["name"]] = {
                "lr": params["train"]["lr"],
                "optimizer": params["optimizer"]["name"],
                "metrics": metrics,
                "rev": group["revs"][0]["rev"],
            }
    return found


def _reset(box: Sandbox) -> None:
    box.git("reset", "-q", "--hard")
    box.dvc("checkout", "--force")


def _wait_for_queue(box: Sandbox, names: list[str], timeout: float = 480) -> str:
    """Poll ``dvc queue status`` until every one of ``names`` has succeeded or failed (or time is up)."""
    deadline = time.monotonic() + timeout
    while True:
        status = box.dvc("queue", "status")
        lines = status.splitlines()
        finished = [
            n for n in names for line in lines if f" {n} " in line and line.split()[-1] in ("Success", "Failed")
        ]
        if len(finished) == len(names) or time.monotonic() > deadline:
            return status
        time.sleep(2)


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Sandbox:
    mirror = real_mirror()
    if mirror is None:
        pytest.skip("real MNIST files not found (set DATA_MIRROR or provide ../shared/datasets/mnist)")
    sandbox = make_sandbox(
        tmp_path_factory.mktemp("experiments") / "repo", preset={"train": {"epochs": 1}}, data_mirror=mirror
    )
    sandbox.dvc("repro")
    sandbox.commit("baseline results")
    yield sandbox
    sandbox.wait_for_workers()


@pytest.fixture(scope="module")
def queued(box: Sandbox) -> dict[float, str]:
    """Two experiments queued one by one and run by a queue worker: ``{lr: experiment name}``."""
    names = {}
    for lr in LRS:
        output = box.dvc("exp", "run", "--queue", "-S", f"train.lr={lr}")
        names[lr] = re.search(r"Queued experiment '([^']+)'", output).group(1)
    box.dvc("queue", "start", "-j", "1")
    status = _wait_for_queue(box, list(names.values()))
    assert status.count("Success") >= 2, status
    box.wait_for_workers()
    return names


def test_queued_sweep_gives_two_experiments_with_different_metrics(box: Sandbox, queued: dict[float, str]) -> None:
    exps = _exps(box)
    runs = [exps[queued[lr]] for lr in LRS]
    assert [run["lr"] for run in runs] == list(LRS)
    first, second = (run["metrics"] for run in runs)
    assert first["val"]["accuracy"] > 0.9 and second["val"]["accuracy"] > 0.9
    assert first["val"]["loss"] != second["val"]["loss"] and first["test"]["loss"] != second["test"]["loss"]
    assert box.git("status", "--porcelain") == ""  # queued runs never touch the workspace


def test_compare_experiments(box: Sandbox, queued: dict[float, str], tmp_path: Path) -> None:
    low, high = queued[LRS[0]], queued[LRS[1]]
    diff = box.dvc("metrics", "diff", low, high)
    header = diff.splitlines()[0].split()
    assert header == ["Path", "Metric", low, high, "Change"]
    assert re.search(r"reports/metrics.json\s+val.accuracy\s+[\d.]+\s+[\d.]+\s+-?[\d.]+", diff), diff
    assert "train.lr" in box.dvc("params", "diff", low, high)
    table = box.dvc("exp", "show", "--no-pager", "--csv", "--sort-by", "reports/metrics.json:val.accuracy")
    assert low in table and high in table
    box.dvc("plots", "diff", low, high, "-o", str(tmp_path / "plots"))
    html = (tmp_path / "plots" / "index.html").read_text(encoding="utf-8")
    assert low in html and high in html and "Accuracy per epoch" in html


def test_apply_and_branch(box: Sandbox, queued: dict[float, str]) -> None:
    name = queued[LRS[1]]
    expected = _exps(box)[name]["metrics"]
    try:
        box.dvc("exp", "apply", name)
        assert box.read_json("reports/metrics.json") == expected
        assert box.params()["train"]["lr"] == LRS[1]
        assert "Running stage" not in box.dvc("repro")  # the applied outputs match their lock
    finally:
        _reset(box)
    box.dvc("exp", "branch", name, "lr-high")
    assert json.loads(box.git("show", "lr-high:reports/metrics.json")) == expected
    assert box.read_json("reports/metrics.json") != expected  # the workspace is back at the baseline


def test_group_override_in_the_workspace(box: Sandbox) -> None:
    try:
        output = box.dvc("exp", "run", "-n", "adam", "-S", "optimizer=adam", "-S", "train.lr=0.001")
        assert stages_run(output) == ["train", "export", "evaluate", "report"], output
        optimizer = box.params()["optimizer"]
        assert optimizer["name"] == "adam" and "momentum" not in optimizer  # the group was swapped, not merged
        assert box.read_json("reports/metrics.json")["val"]["accuracy"] > 0.9
        assert _exps(box)["adam"]["optimizer"] == "adam"
    finally:
        _reset(box)


def _lock_without(box: Sandbox, paths: set[str]) -> dict:
    """dvc.lock with the entries of ``paths`` left out of every stage's outs."""
    lock = yaml.safe_load((box.root / "dvc.lock").read_text(encoding="utf-8"))
    for stage in lock["stages"].values():
        stage["outs"] = [o for o in stage.get("outs", []) if o["path"] not in paths]
    return lock


def _live_metrics(box: Sandbox) -> dict | None:
    """dvclive/metrics.json as it is now, or None while DVCLive is between writes."""
    try:
        return json.loads((box.root / LIVE_DIR / "metrics.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


def test_dvclive_shows_each_epoch_while_training_and_in_exp_show(box: Sandbox) -> None:
    before = _live_metrics(box)  # the baseline: 1 epoch
    proc = subprocess.Popen(
        [str(DVC), "exp", "run", "-n", "live-2", "-S", "train.epochs=2"],
        cwd=box.root,
        env=box.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = []  # metrics.json contents seen while the run was still going
    try:
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline:
            if (now := _live_metrics(box)) is not None and proc.poll() is None and now not in seen:
                seen.append(now)
            time.sleep(0.02)
        output = proc.communicate(timeout=60)[0]
        assert proc.returncode == 0, output
        final = _live_metrics(box)
        # Epoch 1 of this run (another lr than the baseline's, the cosine schedule spans 2 epochs)
        # was in the workspace before the run ended.
        assert any(m["step"] == 1 and m != before for m in seen), seen
        assert final["step"] == 2 and set(final) == {*METRICS, "step"}
        history = read_history(box.root / LIVE_DIR)
        assert history["epoch"].tolist() == [1, 2] and history["val_acc"][-1] == final["val_acc"]

        shown = next(
            g["revs"][0]["data"]
            for b in json.loads(box.dvc("exp", "show", "--json"))
            for g in b.get("experiments") or []
            if g["name"] == "live-2"
        )
        assert shown["metrics"]["dvclive/metrics.json"]["data"] == final

        # A forced rerun of train and what follows gives every tracked output back byte for byte, but
        # the two that hold wall-clock times by design (timing.json, and report.md, which shows them).
        clock = {"reports/timing.json", "reports/report.md"}
        tracked = [p for p in box.git("ls-files", "dvclive", "reports").split() if p not in clock]
        tracked += ["data/model/model.npz"]
        first = {rel: (box.root / rel).read_bytes() for rel in tracked}
        first_lock = _lock_without(box, clock)
        assert stages_run(box.dvc("repro", "--force", "--downstream", "train")) == [
            "train",
            "export",
            "evaluate",
            "report",
        ]
        assert {rel: (box.root / rel).read_bytes() for rel in tracked} == first
        assert _lock_without(box, clock) == first_lock
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        _reset(box)


def test_model_fetched_by_name_from_a_clone_and_used_by_predict(box: Sandbox, tmp_path: Path) -> None:
    """The registry round trip: register the model with GTO, push it, fetch it elsewhere by name."""
    store, clone, user = tmp_path / "store", tmp_path / "clone", tmp_path / "user"
    head = box.git("rev-parse", "HEAD").strip()
    try:
        box.dvc("remote", "add", "-d", "store", str(store))
        box.commit("a DVC remote")
        box.run(BIN / "gto", "register", "mnist-mlp", "--version", "v1.0.0")
        box.dvc("push", "data/model/model.npz")
        box.git("clone", "-q", str(box.root), str(clone))  # git only (tags too): the model is in the remote
        user.mkdir()
        box.dvc("artifacts", "get", str(clone), "mnist-mlp", "-o", "model.npz", cwd=user)
        fetched = (user / "model.npz").read_bytes()
        assert fetched == (box.root / "data/model/model.npz").read_bytes()
        images = box.root / "data/raw/t10k-images-idx3-ubyte.gz"
        predict = [sys.executable, "-m", "mnist_pipeline.predict", "--model", str(user / "model.npz"), "--json"]
        result = subprocess.run(
            [*predict, str(images)], cwd=user, env=box.env, capture_output=True, text=True, timeout=120, check=True
        )
        predicted = [int(p["prediction"]) for p in json.loads(result.stdout)]
        with open(box.root / "reports/predictions.csv", encoding="utf-8") as f:
            expected = [int(line.split(",")[1]) for line in f.read().splitlines()[1:]]
        assert predicted == expected  # the fetched model predicts the test set exactly as evaluate did
    finally:
        box.git("tag", "-d", "mnist-mlp@v1.0.0", check=False)
        box.git("reset", "-q", "--hard", head)


def test_sweep_command_ranks_by_validation_accuracy(box: Sandbox) -> None:
    # A stop with no worker alive leaves a shutdown in worker 1's control queue (once it has existed): the
    # next worker 1 would read it on start and exit after one experiment, unless the sweep drops it.
    box.dvc("queue", "start", "-j", "1")  # worker 1 binds its control queue, finds no work and stops itself
    box.wait_for_workers()
    box.dvc("queue", "stop")
    output = box.python("-m", "mnist_pipeline.sweep", "-S", "train.lr=0.3,0.02", "-j", "1", timeout=480)
    assert re.search(r"dropped [1-9][0-9]* stale shutdown message", output), output
    assert "starting the others" not in output and "restarting the queue workers" not in output, output
    rows = [line.split() for line in output.splitlines() if re.match(r"^[12]\s", line)]
    assert [row[0] for row in rows] == ["1", "2"], output
    exps = _exps(box)
    accuracies = [exps[row[1]]["metrics"]["val"]["accuracy"] for row in rows]
    assert accuracies == sorted(accuracies, reverse=True)
    assert [row[3] for row in rows] == ["sandbox", "sandbox"]  # the preset each ran with
    assert [float(row[5]) for row in rows] == pytest.approx(accuracies, abs=5e-5)
    assert {exps[row[1]]["lr"] for row in rows} == {0.3, 0.02}
    assert "Worker status: 0 active, 0 idle" in box.dvc("queue", "status")  # the sweep stopped its workers
    assert re.search(rf"best by val.accuracy: {rows[0][1]} \(train.lr=", output), output


def _snapshot(box: Sandbox) -> dict[str, bytes]:
    """Every output a failed run must leave alone, and every file of the DVC cache (run-cache included)."""
    kept = ["data/features/train.npz", "data/model/model.npz", "reports/metrics.json"]
    kept += [p.as_posix() for p in files(LIVE_DIR)]
    cache = sorted(p for p in (box.root / ".dvc" / "cache").rglob("*") if p.is_file())
    return {rel: (box.root / rel).read_bytes() for rel in kept} | {str(p): p.read_bytes() for p in cache}


@pytest.mark.parametrize("command", ["exp run", "repro"])
@pytest.mark.parametrize(("override", "stage"), [("train.lr=-0.1", "train"), ("featurize.val_size=60000", "featurize")])
def test_a_bad_value_stops_the_run_and_keeps_every_output(
    box: Sandbox, command: str, override: str, stage: str
) -> None:
    before = _snapshot(box)
    key, value = override.split("=")
    if command == "exp run":
        output = box.dvc("exp", "run", "-S", override, check=False)
    else:  # the value written into params.yaml by hand (compose would refuse it), then a plain `dvc repro`
        params = box.params()
        section, name = key.split(".")
        params[section][name] = yaml.safe_load(value)
        (box.root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
        output = box.dvc("repro", check=False)
    try:
        assert f"error: {stage}: {key}" in output, output
        assert _snapshot(box) == before  # persist: no output deleted, the cache untouched
    finally:
        _reset(box)
