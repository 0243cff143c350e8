"""A single-node SLURM cluster on this machine, for tests: Debian's ``slurm-wlm`` and ``munge``, with munged,
slurmctld and slurmd on 127.0.0.1 (:func:`slurm_cluster`).

Everything the daemons write — config, munge key and socket, state, spool, logs — lives in one directory, and
the ports are free ones, so the cluster touches nothing of the machine's own set-up (``/etc/slurm``,
``/etc/munge``) and two test sessions can run side by side. The daemons run in the foreground as children of the
test process and are stopped with it. Job accounting (slurmdbd) is left out: ``sacct`` fails, and submitit then
waits for a job's result file instead of asking for its state.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")
PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "sinfo", "squeue", "scontrol", "scancel")
PARTITION = "test"
CRED_EXPIRE_S = 10  # SLURM holds a requeued job this long (+1 s) before it may start again; default 120


class ClusterUnavailable(Exception):
    """SLURM cannot be installed or started here; the message says why (the tests skip with it)."""


@dataclass
class SlurmCluster:
    """A running cluster: ``env`` points SLURM's commands (and the jobs' own ``srun``) at its config."""

    root: Path
    env: dict[str, str]
    partition: str = PARTITION

    def command(self, *args: str, check: bool = True) -> str:
        """Run a SLURM client command (``squeue``, ``scontrol`` ...) against this cluster; its stdout."""
        done = subprocess.run(
            args, env={**os.environ, **self.env}, capture_output=True, text=True, timeout=60
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def logs(self, lines: int = 30) -> str:
        """The last ``lines`` of each daemon's log, for failure messages."""
        return "\n".join(
            f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
            for path in sorted(self.root.glob("*.log"))
        )


def install() -> None:
    """Install the Debian packages if a program is missing (needs root and apt-get; CI has both)."""
    if all(shutil.which(program) for program in PROGRAMS):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise ClusterUnavailable(
            f"SLURM is not installed and cannot be installed here (needs root and apt-get): "
            f"apt-get install {' '.join(PACKAGES)}"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
    ):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise ClusterUnavailable(
                f"{' '.join(command)} failed: {done.stdout[-1500:]}{done.stderr[-1500:]}"
            )
    missing = [program for program in PROGRAMS if not shutil.which(program)]
    if missing:
        raise ClusterUnavailable(
            f"installed {' '.join(PACKAGES)}, but {', '.join(missing)} are still missing"
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_line(name: str) -> str:
    """This machine as a SLURM node: ``slurmd -C``'s CPU layout and memory, reached at 127.0.0.1."""
    probe = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=60)
    first = probe.stdout.splitlines()[0] if probe.stdout.strip() else ""
    if probe.returncode != 0 or not first.startswith("NodeName="):
        raise ClusterUnavailable(f"slurmd -C cannot describe this machine: {probe.stderr.strip()}")
    hardware = first.split(maxsplit=1)[1]  # CPUs=2 Boards=1 ... RealMemory=24105
    return f"NodeName={name} NodeAddr=127.0.0.1 {hardware} State=UNKNOWN"


def write_config(root: Path, host: str, munge_socket: Path) -> Path:
    """A minimal ``slurm.conf``: one node, one partition, no cgroups (containers often lack them), no accounting;
    jobs requeue (``JobRequeue=1``); root runs everything."""
    lines = [
        "ClusterName=seq2seqtest",
        f"SlurmctldHost={host}(127.0.0.1)",
        f"SlurmctldPort={free_port()}",
        f"SlurmdPort={free_port()}",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={munge_socket},cred_expire={CRED_EXPIRE_S}",
        "SlurmUser=root",
        "SlurmdUser=root",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "SchedulerParameters=sched_interval=1,bf_interval=1",
        "JobRequeue=1",
        "ReturnToService=2",
        "MpiDefault=none",
        "SwitchType=switch/none",
        "AccountingStorageType=accounting_storage/none",
        "JobAcctGatherType=jobacct_gather/none",
        "JobCompType=jobcomp/none",
        node_line(host),
        f"PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP",
    ]
    path = root / "slurm.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


@contextmanager
def daemon(command: list[str], log: Path, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """Run a daemon in the foreground for the duration of the block; stop it (SIGTERM, then SIGKILL) after."""
    with log.open("ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for(what: str, ready, processes: list[subprocess.Popen], cluster: SlurmCluster, timeout: float = 60):
    """Poll ``ready()`` until it is true; a daemon that exits or a timeout: :class:`ClusterUnavailable`."""
    deadline = time.monotonic() + timeout
    while not ready():
        exited = [p.args[0] for p in processes if p.poll() is not None]
        if exited or time.monotonic() > deadline:
            reason = f"{', '.join(exited)} exited" if exited else f"not {what} after {timeout:.0f} s"
            raise ClusterUnavailable(f"the SLURM cluster did not start ({reason}):\n{cluster.logs()}")
        time.sleep(0.2)


@contextmanager
def slurm_cluster(root: Path) -> Iterator[SlurmCluster]:
    """Install (if needed) and start munged, slurmctld and slurmd in ``root``; yield once the node is idle.

    At the end, cancels every job and stops the daemons.

    Raises:
        ClusterUnavailable: the packages cannot be installed or the daemons do not start.
    """
    install()
    root = Path(root)
    for sub in ("munge", "state", "spool"):
        (root / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
    key, munge_socket = root / "munge" / "munge.key", root / "munge" / "munge.socket"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    host = socket.gethostname().split(".")[0]
    conf = write_config(root, host, munge_socket)
    env = {"SLURM_CONF": str(conf)}
    cluster = SlurmCluster(root, env)
    daemon_env = {**os.environ, **env}
    with ExitStack() as stack:
        munge = ["--key-file", key, "--socket", munge_socket, "--pid-file", root / "munge" / "munged.pid"]
        munge += ["--seed-file", root / "munge" / "munged.seed", "--log-file", root / "munged.log"]
        munged = stack.enter_context(
            daemon(["munged", "--foreground", "--force", *map(str, munge)], root / "munged.out", daemon_env)
        )
        wait_for("listening", munge_socket.exists, [munged], cluster, timeout=30)
        slurmctld = stack.enter_context(
            daemon(["slurmctld", "-D", "-i", "-f", str(conf)], root / "slurmctld.out", daemon_env)
        )
        slurmd = stack.enter_context(
            daemon(["slurmd", "-D", "-N", host, "-f", str(conf)], root / "slurmd.out", daemon_env)
        )
        processes = [munged, slurmctld, slurmd]

        def node_idle() -> bool:
            return cluster.command("sinfo", "-h", "-N", "-o", "%T", check=False).strip() == "idle"

        wait_for("idle", node_idle, processes, cluster)
        try:
            yield cluster
        finally:
            cluster.command("scancel", "--full", f"--partition={PARTITION}", check=False)
            deadline = time.monotonic() + 40  # jobs get KillWait (30 s) to end after SIGTERM
            while cluster.command("squeue", "-h", check=False).strip() and time.monotonic() < deadline:
                time.sleep(0.5)
