"""A real, throw-away one-node SLURM cluster for tests: munged + slurmctld + slurmd in a temp dir on 127.0.0.1.

:func:`slurm_cluster` is a context manager yielding a :class:`SlurmCluster`: pass its ``env`` to any
subprocess (or use :meth:`SlurmCluster.run`) and ``sbatch``, ``srun``, ``squeue`` and ``scancel`` talk
to this cluster only. Everything lives under one temp dir: a random munge key and its own munged
socket (``AuthInfo=socket=...``, so the system munged is never asked), a generated ``slurm.conf``
(``SLURM_CONF``; ``/etc/slurm`` is never read), state, spool, pid and log files. The controller and
the node, ``tune1`` with at least 2 CPUs, listen on free ports of 127.0.0.1, so the container's
hostname need not resolve. There is no accounting database: ``scontrol show job`` keeps finished jobs
for ``MinJobAge`` seconds, which is what :meth:`SlurmCluster.wait_job` reads. Teardown SIGKILLs the
daemons and every process carrying this cluster's ``SLURM_CONF`` (slurmstepd and job tasks, which
slurmd detaches), then deletes the dir. Verified as root (SlurmUser=root); :func:`find_binaries`
returns None when the packages are missing (the caller skips with :data:`SKIP_REASON`).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from helpers.ports import free_ports

SKIP_REASON = "SLURM or munge is not installed (apt-get install slurm-wlm munge)"
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("munge", "sbatch", "srun", "squeue", "scancel", "scontrol", "sinfo")
SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")  # the daemons are often not on a user's PATH
NODE = "tune1"
PARTITION = "debug"
START_SECONDS = 60
MIN_JOB_AGE = 3600  # seconds `scontrol show job` keeps a finished job: longer than any test
FINAL_STATES = frozenset(
    {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
)
_CLIENT_ENV_PREFIXES = ("SLURM_", "SBATCH_", "SALLOC_", "SRUN_", "SQUEUE_", "SINFO_", "SCANCEL_", "SCONTROL_")
_FIELD_SEPARATOR = re.compile(r"\s+(?=[A-Za-z][\w/:]*=)")  # `scontrol -o` prints `Key=value Key=value ...`


def find_binaries() -> dict[str, Path] | None:
    """Paths of the munge and SLURM daemons and clients this helper runs, or None if any is missing."""
    search = os.pathsep.join([os.environ.get("PATH", os.defpath), *SBIN_DIRS])
    found = {name: shutil.which(name, path=search) for name in DAEMONS + CLIENTS}
    if not all(found.values()):
        return None
    return {name: Path(path) for name, path in found.items() if path}


@dataclass(frozen=True)
class SlurmCluster:
    """A running cluster: ``env`` for subprocesses, ``root`` its temp dir, ``conf`` its slurm.conf."""

    root: Path
    conf: Path
    env: dict[str, str]
    node: str
    cpus: int

    def run(
        self, *cmd: str | Path, timeout: float = 60, check: bool = True, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a command against this cluster; a failure (with ``check``) raises with its stderr and the logs."""
        result = subprocess.run(
            [str(c) for c in cmd],
            env=self.env,
            cwd=cwd or self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(map(str, cmd))} exited {result.returncode}: {result.stderr.strip()}\n{self.logs()}"
            )
        return result

    def submit(self, *sbatch_args: str | Path, cwd: Path | None = None) -> str:
        """``sbatch --parsable ARGS``; returns the job id (an array's tasks are ``ID_0``, ``ID_1``, ...)."""
        return self.run("sbatch", "--parsable", *sbatch_args, cwd=cwd).stdout.strip().split(";")[0]

    def jobs(self, job_id: str) -> list[dict[str, str]]:
        """``scontrol show job -o JOB_ID`` as one dict per record (per task of an array), [] if unknown."""
        result = self.run("scontrol", "show", "job", "-o", job_id, check=False, timeout=30)
        if result.returncode != 0 and "Invalid job id" in result.stderr:
            return []
        if result.returncode != 0:
            raise RuntimeError(f"scontrol show job {job_id} failed: {result.stderr.strip()}\n{self.logs()}")
        return [_parse_record(line) for line in result.stdout.splitlines() if line.strip()]

    def wait_job(self, job_id: str, timeout: float = 120) -> dict[str, str]:
        """Wait until every task of ``job_id`` has finished; returns ``{"ID" or "ID_TASK": final JobState}``."""
        deadline = time.monotonic() + timeout
        while True:
            states = {_task_label(record): record.get("JobState", "?") for record in self.jobs(job_id)}
            if states and all(state in FINAL_STATES for state in states.values()):
                return states
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"job {job_id} not finished after {timeout:.0f} s: {states or 'unknown'}\n{self.logs()}"
                )
            time.sleep(0.5)

    def logs(self, lines: int = 30) -> str:
        """The last ``lines`` of each daemon's log (its stderr when it died before opening the log)."""
        parts = []
        for name in DAEMONS:
            log, stderr = self.root / f"{name}.log", self.root / f"{name}.stderr"
            chosen = log if log.exists() and log.stat().st_size else stderr
            if chosen.exists():
                tail = chosen.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {chosen.name} ---\n" + "\n".join(tail))
        return "\n".join(parts)


def _parse_record(line: str) -> dict[str, str]:
    return dict(field.split("=", 1) for field in _FIELD_SEPARATOR.split(line.strip()) if "=" in field)


def _task_label(record: dict[str, str]) -> str:
    array_job, task = record.get("ArrayJobId"), record.get("ArrayTaskId")
    return f"{array_job}_{task}" if array_job and task else record.get("JobId", "?")


def _slurm_conf(root: Path, user: str, cpus: int) -> str:
    controller, node = free_ports(2)
    settings = {
        "ClusterName": "tune",
        "SlurmctldHost": "localhost(127.0.0.1)",  # slurmctld accepts "localhost" whatever `hostname` says
        "SlurmctldPort": controller,
        "SlurmdPort": node,
        "AuthType": "auth/munge",
        "AuthInfo": f"socket={root / 'munge' / 'munge.socket'}",
        "CredType": "cred/munge",
        "SlurmUser": user,
        "SlurmdUser": user,
        "StateSaveLocation": root / "state",
        "SlurmdSpoolDir": root / "spool",
        "SlurmctldPidFile": root / "slurmctld.pid",
        "SlurmdPidFile": root / "slurmd.pid",
        "SlurmctldLogFile": root / "slurmctld.log",
        "SlurmdLogFile": root / "slurmd.log",
        "PlugStackConfig": root / "plugstack.conf",  # empty: no SPANK plugins from /etc/slurm
        "ProctrackType": "proctrack/linuxproc",  # no cgroups in a container
        "TaskPlugin": "task/none",
        "JobAcctGatherType": "jobacct_gather/none",
        "AccountingStorageType": "accounting_storage/none",
        "JobCompType": "jobcomp/none",
        "MpiDefault": "none",
        "SwitchType": "switch/none",
        "SelectType": "select/cons_tres",
        "SelectTypeParameters": "CR_CPU",  # one job per CPU: two 1-CPU array tasks run side by side
        "SlurmdParameters": "config_overrides",  # trust CPUs= below even if the machine has fewer
        "ReturnToService": 2,
        "MinJobAge": MIN_JOB_AGE,
        "KillWait": 5,
        "MailProg": "/bin/true",
    }
    lines = [f"{key}={value}" for key, value in settings.items()]
    lines.append(f"NodeName={NODE} NodeHostname=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1000 State=UNKNOWN")
    lines.append(f"PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP")
    return "\n".join(lines) + "\n"


def _client_env(conf: Path, binaries: dict[str, Path]) -> dict[str, str]:
    """os.environ without any outer SLURM settings, plus SLURM_CONF and the binaries' dirs on PATH."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(_CLIENT_ENV_PREFIXES)}
    dirs = dict.fromkeys(str(path.parent) for path in binaries.values())
    env["PATH"] = os.pathsep.join([*dirs, env.get("PATH", os.defpath)])
    env["SLURM_CONF"] = str(conf)
    return env


def _cluster_pids(conf: Path) -> set[int]:
    """Processes whose environment names this cluster's slurm.conf: daemons, slurmstepd, job tasks."""
    marker, pids = f"SLURM_CONF={conf}\0".encode(), set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if marker in (entry / "environ").read_bytes():
                    pids.add(int(entry.name))
    return pids


def _kill_all(conf: Path, daemons: list[subprocess.Popen[bytes]], timeout: float = 10) -> None:
    """SIGKILL the daemons and all processes of this cluster, with their process groups, until none is left.

    Killed orphans (slurmstepd, slurmscriptd) linger as zombies until PID 1 reaps them, which takes about
    a second: wait for that too (bounded, as an init that never reaps would keep them forever).
    """
    own_group, deadline, killed = os.getpgrp(), time.monotonic() + timeout, set()
    while time.monotonic() < deadline:
        pids = _cluster_pids(conf) | {d.pid for d in daemons if d.poll() is None}
        if not pids:
            break
        killed |= pids
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getpgid(pid) != own_group:
                    os.killpg(os.getpgid(pid), signal.SIGKILL)
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    for daemon in daemons:
        with contextlib.suppress(subprocess.TimeoutExpired):
            daemon.wait(timeout=5)
    while any(Path(f"/proc/{pid}").exists() for pid in killed) and time.monotonic() < deadline:
        time.sleep(0.1)


@contextlib.contextmanager
def slurm_cluster(binaries: dict[str, Path], cpus: int | None = None) -> Iterator[SlurmCluster]:
    """Start munged, slurmctld and slurmd in a temp dir, wait until node ``tune1`` is idle, yield; kill, delete."""
    root = Path(tempfile.mkdtemp(prefix="tune-slurm-"))
    root.chmod(0o755)  # munged insists that every dir above its socket is searchable by all
    for sub, mode in (("munge", 0o755), ("keys", 0o700), ("state", 0o755), ("spool", 0o755)):
        (root / sub).mkdir(mode=mode)
    key = root / "keys" / "munge.key"
    key.write_bytes(secrets.token_bytes(1024))
    key.chmod(0o400)
    conf, user = root / "slurm.conf", getpass.getuser()
    (root / "plugstack.conf").touch()
    cpus = max(2, cpus or os.cpu_count() or 2)
    conf.write_text(_slurm_conf(root, user, cpus))
    cluster = SlurmCluster(root, conf, _client_env(conf, binaries), NODE, cpus)
    socket_path = root / "munge" / "munge.socket"
    commands = {
        "munged": [
            binaries["munged"],
            "--foreground",  # logs to stderr, i.e. munged.stderr
            "--force",  # not needed with the modes above, but turns a group-writable TMPDIR from an error to a warning
            f"--socket={socket_path}",
            f"--key-file={key}",
            f"--pid-file={root / 'munge' / 'munged.pid'}",
            f"--seed-file={root / 'munge' / 'munged.seed'}",
        ],
        "slurmctld": [binaries["slurmctld"], "-D"],
        "slurmd": [binaries["slurmd"], "-D", "-N", NODE],
    }
    daemons: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, command in commands.items():
            with open(root / f"{name}.stderr", "wb") as stderr:
                daemons[name] = subprocess.Popen(
                    [str(c) for c in command],
                    env=cluster.env,
                    cwd=root,
                    stdin=subprocess.DEVNULL,
                    stdout=stderr,
                    stderr=stderr,
                    start_new_session=True,  # its own process group, killed whole at teardown
                )
            if name == "munged":
                _wait_until(cluster, daemons, lambda: _munge_ready(cluster, socket_path), "munged to answer")
        _wait_until(cluster, daemons, lambda: _node_state(cluster) == "idle", f"node {NODE} to be idle")
        yield cluster
    finally:
        _kill_all(conf, list(daemons.values()))
        shutil.rmtree(root, ignore_errors=True)


def _munge_ready(cluster: SlurmCluster, socket_path: Path) -> bool:
    return cluster.run("munge", "--socket", socket_path, "--no-input", check=False, timeout=10).returncode == 0


def _node_state(cluster: SlurmCluster) -> str:
    result = cluster.run("sinfo", "--noheader", "--Node", "--format=%T", check=False, timeout=15)
    return result.stdout.strip() if result.returncode == 0 else ""


def _wait_until(
    cluster: SlurmCluster, daemons: dict[str, subprocess.Popen[bytes]], ready: Callable[[], bool], what: str
) -> None:
    deadline = time.monotonic() + START_SECONDS
    while not ready():
        dead = [name for name, daemon in daemons.items() if daemon.poll() is not None]
        if dead or time.monotonic() > deadline:
            reason = f"{dead[0]} exited" if dead else f"timed out after {START_SECONDS} s"
            raise RuntimeError(f"SLURM cluster in {cluster.root}: waiting for {what}: {reason}\n{cluster.logs()}")
        time.sleep(0.2)
