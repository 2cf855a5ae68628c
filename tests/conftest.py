"""Shared fixtures for the whole suite (shared plain helpers live in ``tests/helpers/``).

``repo_root``
    The checkout's top directory (holds ``dvc.yaml``, ``params.yaml``, ``conf/``).
``params_dict``
    ``params.yaml`` parsed into a plain dict (a fresh deep copy per test, so a test may mutate it).
``tiny_mnist_dir``
    A small synthetic MNIST in the canonical layout: four gzip IDX files named like the real ones,
    with 600 training and 100 test 28x28 uint8 images in 10 learnable classes. Returns a
    :class:`~helpers.tiny_mnist.TinyMnist` with the directory, each file's path, byte size and
    SHA-256, and the arrays written, so a test can point ``dataset.files`` (and ``DATA_MIRROR``) at it.
``tiny_workspace``
    A stage working directory (the test is ``chdir``-ed into it): ``params.yaml`` is the repo's with
    ``dataset.files`` pointing at the tiny MNIST, ``featurize.val_size`` 100 and ``train.epochs`` 2,
    and ``data/raw/`` holds the four tiny files, so ``prepare.main()`` and later stages can run.
    Returns a :class:`Workspace`; call ``ws.write_params(**{"train.lr": 0.1})`` to change values.
``fault_server``
    A running :class:`~helpers.http_faults.FaultyServer` on 127.0.0.1, torn down after the test
    (stalled responses are released). Proxies are bypassed for it and ``DATA_MIRROR`` is unset.
``database``
    The SQLAlchemy URL of a real PostgreSQL server started for the module (tests/helpers/postgres.py).
``ssh_remote``
    A real ``sshd`` on 127.0.0.1 started for the module (tests/helpers/sshd.py).
Without the server's package, these two skip (fail where .ci/run requires them; tests/helpers/services.py).
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from helpers.http_faults import FaultyServer
from helpers.postgres import find_bin_dir, postgres_server
from helpers.services import unavailable
from helpers.sshd import SshServer, find_sshd, ssh_server
from helpers.tiny_mnist import TinyMnist, write_tiny_mnist

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny_mnist_dir(tmp_path: Path) -> TinyMnist:
    """A synthetic 600/100-image MNIST in ``tmp_path / "tiny_mnist"`` (see :class:`TinyMnist`)."""
    return write_tiny_mnist(tmp_path / "tiny_mnist")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def _params_cache() -> dict:
    return yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"))


@pytest.fixture
def params_dict(_params_cache: dict) -> dict:
    """``params.yaml`` as a dict; a deep copy, safe to mutate."""
    return copy.deepcopy(_params_cache)


@dataclass
class Workspace:
    """A directory laid out like the repo for running stage ``main()`` functions (see ``tiny_workspace``)."""

    root: Path
    params: dict
    mnist: TinyMnist

    def write_params(self, **overrides) -> dict:
        """Apply ``{"dotted.key": value}`` overrides to ``params`` and write ``params.yaml``."""
        for dotted, value in overrides.items():
            *parents, leaf = dotted.split(".")
            node = self.params
            for key in parents:
                node = node[key]
            node[leaf] = value
        (self.root / "params.yaml").write_text(yaml.safe_dump(self.params, sort_keys=False), encoding="utf-8")
        return self.params


@pytest.fixture
def tiny_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, params_dict: dict) -> Workspace:
    """A chdir-ed stage workspace over the tiny synthetic MNIST (see the module docstring)."""
    mnist = write_tiny_mnist(tmp_path / "tiny_mnist")
    root = tmp_path / "ws"
    raw = root / "data" / "raw"
    raw.mkdir(parents=True)
    for path in mnist.paths.values():
        shutil.copy2(path, raw / path.name)
    params_dict["dataset"]["files"] = mnist.file_specs()
    ws = Workspace(root, params_dict, mnist)
    ws.write_params(**{"featurize.val_size": 100, "train.epochs": 2})
    monkeypatch.chdir(root)
    return ws


@pytest.fixture
def fault_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultyServer]:
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    monkeypatch.delenv("DATA_MIRROR", raising=False)
    with FaultyServer() as server:
        yield server


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        unavailable("PostgreSQL server binaries (initdb, pg_ctl, postgres) not installed; apt-get install postgresql")
    with postgres_server(bin_dir) as url:
        yield url


@pytest.fixture(scope="module")
def ssh_remote() -> Iterator[SshServer]:
    sshd = find_sshd()
    if sshd is None:
        unavailable("OpenSSH server (sshd, ssh-keygen) not installed; apt-get install openssh-server")
    with ssh_server(sshd) as server:
        yield server
