"""A DVC remote over real SSH: push, pull, the model registry, two tuners, and a line that drops.

A real ``sshd`` on 127.0.0.1 (tests/helpers/sshd.py) serves the remote; each machine is a ``$HOME``
whose ``~/.ssh/config`` names the host alias ``mnist-remote`` (address, port, user, key), as
docs/sharing.md tells a user to set it up, so the URL committed in .dvc/config is
``ssh://mnist-remote/<path>`` and holds no credentials. Code and experiments go through a bare git
repository, as in tests/test_remote.py. Clones never get DATA_MIRROR: every byte they have came
through SSH.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest

from helpers.dvc_sandbox import BIN, Sandbox, make_sandbox, publish, sandbox_env, tiny_tune_sandbox
from helpers.sshd import Relay, SshServer

pytestmark = pytest.mark.slow

ALIAS = "mnist-remote"
TIMEOUT = 420


def _machine(box_root: Path, ssh_remote: SshServer, home: Path, port: int | None = None) -> dict[str, str]:
    """The environment of a machine whose ``$HOME/.ssh/config`` reaches the server as ``mnist-remote``."""
    env = sandbox_env(box_root, data_mirror=None)
    env["HOME"] = str(ssh_remote.client_home(home, ALIAS, port))
    return env


def _clone(bare: Path, dest: Path, ssh_remote: SshServer, name: str) -> Sandbox:
    """Another machine: its own ``$HOME`` and a clone of the git remote, no data yet."""
    subprocess.run(["git", "clone", "-q", str(bare), str(dest)], check=True, capture_output=True, timeout=60)
    return Sandbox(dest, _machine(dest, ssh_remote, dest.parent / f"{name}-home"))


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory, ssh_remote: SshServer) -> tuple[Sandbox, Path, Path]:
    """A repo that ran its pipeline, registered its model and pushed: data over SSH, code to a bare repo."""
    base = tmp_path_factory.mktemp("ssh")
    box = tiny_tune_sandbox(base / "work", base / "tiny")
    box.env["HOME"] = str(ssh_remote.client_home(base / "work-home", ALIAS))
    box.dvc("repro")
    store = base / "store"
    box.dvc("remote", "add", "-d", "storage", f"ssh://{ALIAS}{store}")
    box.commit("results and an SSH remote")
    box.run(BIN / "gto", "register", "mnist-mlp", "--version", "v1.0.0")
    pushed = box.dvc("push")
    assert re.search(r"\d+ files? pushed", pushed), pushed
    assert "Accepted publickey" in ssh_remote.log()
    return box, publish(box, base / "origin.git"), store


def _store_is_sound(store: Path) -> list[str]:
    """Every object under the remote's files/md5 has the content its name says (no half-written object).

    An upload goes to a hidden temporary name first and is renamed when complete; a line that drops
    can leave the temporary file behind (the plugin could not delete it), never a wrong object.
    """
    names = []
    for path in sorted(p for p in (store / "files" / "md5").rglob("*") if p.is_file()):
        if path.name.startswith(".") and path.name.endswith(".tmp"):
            continue
        name = path.parent.name + path.name.removesuffix(".dir")
        assert hashlib.md5(path.read_bytes()).hexdigest() == name, path  # noqa: S324 (DVC's content address)
        names.append(name)
    return names


def test_fresh_clone_pulls_every_output_over_ssh(origin: tuple[Sandbox, Path, Path], ssh_remote: SshServer) -> None:
    box, bare, store = origin
    clone = _clone(bare, box.root.parent / "teammate", ssh_remote, "teammate")
    assert ALIAS in (clone.root / ".dvc" / "config").read_text() and "DATA_MIRROR" not in clone.env
    clone.dvc("pull")
    original = box.outputs()
    assert {"data/model/model.npz", "data/features/train.npz", "reports/metrics.json"} <= set(original)
    assert clone.outputs() == original  # every output, byte for byte
    assert "Running stage" not in clone.dvc("repro")
    assert hashlib.md5(original["data/model/model.npz"]).hexdigest() in _store_is_sound(store)  # noqa: S324


def test_registered_model_fetched_by_name_over_ssh(origin: tuple[Sandbox, Path, Path], ssh_remote: SshServer) -> None:
    box, bare, _ = origin
    user = box.root.parent / "model-user"
    user.mkdir()
    env = _machine(user, ssh_remote, box.root.parent / "model-user-home")
    subprocess.run(
        [str(BIN / "dvc"), "artifacts", "get", str(bare), "mnist-mlp", "-o", "model.npz"],
        cwd=user, env=env, check=True, capture_output=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert (user / "model.npz").read_bytes() == (box.root / "data/model/model.npz").read_bytes()


def test_the_plugin_does_not_check_the_host_key(origin: tuple[Sandbox, Path, Path], ssh_remote: SshServer) -> None:
    """docs/sharing.md's caveat, kept true: a wrong known_hosts entry stops OpenSSH, not DVC's ssh plugin."""
    box, bare, _ = origin
    clone = _clone(bare, box.root.parent / "impostor", ssh_remote, "impostor")
    home = Path(clone.env["HOME"])
    other = home / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True, timeout=30)
    (home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{ssh_remote.port} {other.with_suffix('.pub').read_text()}")
    openssh = subprocess.run(
        ["ssh", "-F", str(home / ".ssh" / "config"), "-o", "BatchMode=yes", ALIAS, "true"],
        env=clone.env, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert openssh.returncode != 0 and "HOST IDENTIFICATION HAS CHANGED" in openssh.stderr, openssh.stderr
    clone.dvc("pull", "data/model/model.npz")  # the plugin connects all the same (sshfs: known_hosts=None)
    assert (clone.root / "data/model/model.npz").read_bytes() == (box.root / "data/model/model.npz").read_bytes()


def test_two_tune_workers_push_their_experiments_over_ssh_at_once(
    origin: tuple[Sandbox, Path, Path], ssh_remote: SshServer, database: str
) -> None:
    box, bare, store = origin
    workers = [_clone(bare, box.root.parent / name, ssh_remote, name) for name in ("worker-a", "worker-b")]
    for worker in workers:
        worker.dvc("pull")  # the baseline's outputs, so that a trial reruns only what its params change
    cmd = [sys.executable, "-m", "mnist_pipeline.tune", "--space", "tiny", "--study", "ssh", "--trials", "4"]
    running = [
        subprocess.Popen(
            [*cmd, "--storage", database],
            cwd=w.root,
            env=w.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )  # fmt: skip
        for w in workers
    ]
    try:
        outputs = [p.communicate(timeout=TIMEOUT)[0] for p in running]
    finally:
        for p in running:  # a worker still running here (timeout): stop it and its dvc before the database goes
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
    assert [p.returncode for p in running] == [0, 0], outputs
    trials = optuna.load_study(study_name="ssh", storage=database).get_trials()
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 4 and len({t.user_attrs["worker"] for t in complete}) == 2, outputs
    names = sorted(t.user_attrs["experiment"] for t in complete)

    reader = _clone(bare, box.root.parent / "reader", ssh_remote, "reader")
    listed = reader.dvc("exp", "list", "origin", "--name-only").split()
    assert sorted(n for n in listed if n.startswith("ssh-")) == names
    reader.dvc("exp", "pull", "origin", *names)
    for trial in complete:
        reader.dvc("exp", "apply", trial.user_attrs["experiment"])
        metrics = reader.read_json("reports/metrics.json")
        assert metrics["val"]["accuracy"] == pytest.approx(trial.value)
        assert "up to date" in reader.dvc("status")  # its model and data came over SSH
    _store_is_sound(store)


def test_remote_that_drops_mid_push_fails_in_one_line_and_the_retry_completes(
    tmp_path: Path, ssh_remote: SshServer
) -> None:
    with Relay(ssh_remote.port) as relay:
        box = make_sandbox(tmp_path / "work")
        box.env["HOME"] = str(ssh_remote.client_home(tmp_path / "home", ALIAS, relay.port))
        blob = np.random.default_rng(0).bytes(24 << 20)
        (box.root / "big.bin").write_bytes(blob)
        box.dvc("add", "big.bin")
        store = tmp_path / "store"
        box.dvc("remote", "add", "-d", "storage", f"ssh://{ALIAS}{store}")
        box.commit("a big file and an SSH remote")

        relay.cut_after = 6 << 20  # the line drops a quarter of the way through the upload
        failed = subprocess.run(
            [str(BIN / "dvc"), "push"], cwd=box.root, env=box.env, capture_output=True, text=True, timeout=TIMEOUT
        )
        assert relay.cut.is_set() and failed.returncode != 0, failed.stdout + failed.stderr
        # DVC's own words: a line for each object that failed, naming it and the cause, then the count
        errors = [line for line in failed.stderr.splitlines() if line.strip()]
        assert errors[-1] == "ERROR: failed to push data to the cloud - 1 files failed to upload", failed.stderr
        # the cause depends on when the line dropped for that request: "Connection not open", "... lost", ...
        transfer = re.compile(rf"ERROR: failed to transfer '{hashlib.md5(blob).hexdigest()}' - \S.*")  # noqa: S324
        assert len(errors) == 2 and transfer.fullmatch(errors[0]), failed.stderr
        assert "Traceback" not in failed.stdout + failed.stderr
        _store_is_sound(store)  # nothing half-written under an object's name

        relay.resume()
        box.dvc("push")
        assert relay.sent > 0
        assert hashlib.md5(blob).hexdigest() in _store_is_sound(store)  # noqa: S324
        bare = tmp_path / "origin.git"
        box.run("git", "init", "-q", "--bare", "-b", "main", bare)
        box.git("push", "-q", str(bare), "main")
        clone = _clone(bare, tmp_path / "elsewhere", ssh_remote, "elsewhere")
        clone.env["HOME"] = str(ssh_remote.client_home(tmp_path / "elsewhere-home", ALIAS, relay.port))
        clone.dvc("pull", "big.bin.dvc")
        assert (clone.root / "big.bin").read_bytes() == blob
