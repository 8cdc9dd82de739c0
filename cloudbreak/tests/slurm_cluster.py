"""A real single-node Slurm cluster under a temporary directory, for the HPC tests.

Debian's ``slurm-wlm`` and ``munge`` packages (``apt-get install slurm-wlm munge``, which
``make test`` runs as root on Debian). Everything is private to the directory: a munged on
its own socket (``AuthInfo=socket=...``) with its own pid, log and seed files, a
``slurm.conf`` with ports picked free on loopback, state, spool, pid and log files.
Daemons run as root (``SlurmUser=root``) and are stopped by the PIDs in their pid files.

```
munged --force --socket=DIR/munge.socket ...      (without --force it refuses the log dir)
slurmctld -f DIR/slurm.conf                       (SlurmctldPort = a free port)
slurmd    -f DIR/slurm.conf                       (SlurmdPort = another free port)
SLURM_CONF=DIR/slurm.conf sbatch|squeue|scancel
```
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

INSTALL = "apt-get install -y slurm-wlm munge"
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol")


def missing_commands() -> list[str]:
    return [name for name in DAEMONS if shutil.which(name) is None]


def why_not_available() -> str | None:
    """Why a Slurm cluster cannot start here, or None."""
    missing = missing_commands()
    if missing:
        return f"Slurm is not installed (missing {', '.join(missing)}); install it with `{INSTALL}`"
    if os.geteuid() != 0:
        return "the single-node Slurm cluster runs its daemons as root; run the tests as root"
    if not Path("/etc/munge/munge.key").exists():
        return f"/etc/munge/munge.key is missing; reinstall munge (`{INSTALL}`)"
    return None


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 2048  # pragma: no cover


def _conf(root: Path, ctld_port: int, slurmd_port: int) -> str:
    node = socket.gethostname().split(".")[0]
    cpus = os.cpu_count() or 1
    memory = max(512, int(_memory_mb() * 0.8))
    return f"""\
ClusterName=hermes-test
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
KillWait=30
MinJobAge=600
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
"""


class SlurmCluster:
    """A running single-node Slurm cluster; ``env`` points Slurm's commands at it."""

    def __init__(self, root: Path):
        self.root = root
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self._pid_files = [root / "slurmd.pid", root / "slurmctld.pid", root / "munge" / "munged.pid"]

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, check=check, timeout=60)

    def start(self, timeout_s: float = 60.0) -> None:
        node = socket.gethostname().split(".")[0]
        for sub in ("munge", "state", f"spool/{node}", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "munge").chmod(0o700)
        munge = self.root / "munge"
        subprocess.run(
            ["munged", "--force", f"--socket={munge}/munge.socket", f"--pid-file={munge}/munged.pid",
             f"--log-file={munge}/munged.log", f"--seed-file={munge}/munged.seed"],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        ports = _free_ports(2)
        self.conf.write_text(_conf(self.root, *ports))
        self.run("slurmctld", "-f", str(self.conf))
        self.run("slurmd", "-f", str(self.conf))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = self.run("sinfo", "-h", "-o", "%T", check=False).stdout.strip()
            if state in ("idle", "mixed", "allocated"):
                return
            time.sleep(0.2)
        raise RuntimeError(
            f"slurm did not come up in {timeout_s:.0f} s (node state {state!r}):\n{self.logs()}"
        )

    def logs(self) -> str:
        return "\n".join(
            f"== {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted((self.root / "log").glob("*.log"))
        )

    def jobs(self) -> list[str]:
        """Ids of the jobs still pending, running or completing."""
        out = self.run("squeue", "-h", "-o", "%i", check=False).stdout
        return out.split()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.run("scancel", "--full", "--user=root", check=False)
        for pid_file in self._pid_files:
            with contextlib.suppress(OSError, ValueError):
                pid = int(pid_file.read_text().split()[0])
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 15
                while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                    time.sleep(0.05)
                if Path(f"/proc/{pid}").exists():
                    os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def slurm_cluster(root: Path) -> Iterator[SlurmCluster]:
    cluster = SlurmCluster(root)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
