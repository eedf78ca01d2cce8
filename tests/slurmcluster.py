"""A real one-node Slurm cluster on this machine, all of its own: munged, slurmctld, slurmd.

Tests of `scheduler=slurm` need the real `sbatch`, `srun`, `scontrol` and `scancel`. This
module starts Debian's Slurm (`slurm-wlm`, 22.05) and MUNGE (`munge`) as root in a couple of
seconds, with every file in a temporary folder: its own munge key and socket, its own
slurm.conf, state and spool folders, logs and free ports. Nothing under /etc is used, so it
does not disturb (or depend on) a Slurm set up on the machine, and two test sessions can run
one each. The node runs processes as the submitting user, like a compute node would.

Usage::

    with start_cluster(tmp_path) as slurm:
        env = {**os.environ, **slurm.env}          # SLURM_CONF for sbatch, srun, fab ...
        slurm.run("sinfo")                         # a CompletedProcess
        slurm.jobs()                               # ids of the jobs in the queue
        slurm.wait_idle()                          # [] once no job is queued or running

Other Unix users (the SSH test hosts' users) can submit too: `base` and its `slurm` folder are
made traversable (0711) and slurm.conf readable; they need `SLURM_CONF` in their environment
(e.g. at the top of their ~/.bashrc, which bash reads for SSH commands too).

The node is this machine's short host name with 4 CPUs (`SlurmdParameters=config_overrides`:
more tasks than the 2 real cores may share it) in one partition, `debug`, with
`OverSubscribe=YES`. `ProctrackType=proctrack/linuxproc` and `TaskPlugin=task/none` need no
cgroups; there is no accounting storage (that needs slurmdbd and a database), so `sacct` says
so and the launcher reads srun's own report instead. `KillWait=5`: scancel sends KILL 5 s
after TERM.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from tests.sshcluster import free_ports

BINARIES = ("/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd")
COMMANDS = ("sbatch", "srun", "scontrol", "scancel", "squeue", "sinfo")
START_TIMEOUT = 60.0


class SlurmClusterError(Exception):
    """The test cluster cannot start; the message says what is missing and how to fix it."""


def check_requirements() -> None:
    if os.geteuid() != 0:
        raise SlurmClusterError("the Slurm test cluster runs munged and slurmd as root")
    missing = [b for b in BINARIES if not os.access(b, os.X_OK)]
    missing += [c for c in COMMANDS if shutil.which(c) is None]
    if missing:
        raise SlurmClusterError(
            f"missing {', '.join(missing)}: run scripts/system-packages.sh "
            "(apt-get install slurm-wlm munge)"
        )


def node_name() -> str:
    return socket.gethostname().split(".")[0]


@dataclass
class SlurmCluster:
    """A running test cluster; `close()` ends every job and daemon and their processes."""

    base: Path
    node: str
    ports: tuple[int, int]
    pid_files: list[Path] = field(default_factory=list)

    @property
    def conf(self) -> Path:
        return self.base / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args),
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def jobs(self) -> list[str]:
        """Ids of the jobs Slurm still has queued, running or completing."""
        out = self.run("squeue", "-h", "-o", "%i")
        return out.stdout.split()

    def wait_idle(self, timeout: float = 60) -> list[str]:
        deadline = time.monotonic() + timeout
        while (jobs := self.jobs()) and time.monotonic() < deadline:
            time.sleep(0.5)
        return jobs

    def log(self, name: str, lines: int = 20) -> str:
        try:
            text = (self.base / name).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _pids(self) -> list[int]:
        pids = []
        for path in self.pid_files:
            try:
                pids.append(int(path.read_text().strip()))
            except (OSError, ValueError):
                continue
        return pids

    def close(self) -> None:
        """Cancel every job, then stop slurmd, slurmctld and munged (TERM, then KILL)."""
        if self.conf.exists():
            self.run("scancel", "--full", "--user", "root", "--signal", "KILL")
            self.wait_idle(15)
        pids = self._pids()
        for pid in pids:
            with suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in pids:
            with suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        # Step daemons of jobs the controller did not reach name our spool folder.
        for line in _pgrep(str(self.base)):
            with suppress(ProcessLookupError, PermissionError):
                os.kill(int(line.split()[0]), signal.SIGKILL)

    def __enter__(self) -> SlurmCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _pgrep(text: str) -> list[str]:
    out = subprocess.run(["pgrep", "-af", text], capture_output=True, text=True, check=False)
    return [line for line in out.stdout.splitlines() if "pgrep" not in line]


def slurm_conf(base: Path, node: str, ctld_port: int, slurmd_port: int) -> str:
    return f"""\
ClusterName=tfctest
SlurmctldHost={node}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={base}/munge.socket
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
StateSaveLocation={base}/state
SlurmdSpoolDir={base}/spool
SlurmctldPidFile={base}/slurmctld.pid
SlurmdPidFile={base}/slurmd.pid
SlurmctldLogFile={base}/slurmctld.log
SlurmdLogFile={base}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
KillWait=5
InactiveLimit=0
MinJobAge=300
SchedulerParameters=sched_interval=1
NodeName={node} CPUs=4 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
"""


def _start(argv: list[str], what: str, cluster: SlurmCluster) -> None:
    proc = subprocess.run(
        argv,
        env={**os.environ, **cluster.env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if proc.returncode != 0:
        raise SlurmClusterError(f"{what} did not start: {(proc.stderr or proc.stdout).strip()}")


def start_cluster(base: Path) -> SlurmCluster:
    """Start munged, slurmctld and slurmd with everything under `base/slurm`; wait until the
    node is idle. On failure whatever started is stopped and the logs' tails are in the error."""
    check_requirements()
    root = base / "slurm"
    for sub in ("state", "spool"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    # Other users submit too (SSH test hosts): they must reach slurm.conf and the munge
    # socket, so both folders are traversable; the key stays 0400.
    base.chmod(0o711)
    root.chmod(0o711)
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    node = node_name()
    ctld, slurmd = free_ports(2)
    cluster = SlurmCluster(
        root,
        node,
        (ctld, slurmd),
        [root / "slurmd.pid", root / "slurmctld.pid", root / "munged.pid"],
    )
    cluster.conf.write_text(slurm_conf(root, node, ctld, slurmd))
    cluster.conf.chmod(0o644)
    try:
        _start(
            [
                BINARIES[0],
                "--force",
                f"--socket={root}/munge.socket",
                f"--key-file={key}",
                f"--log-file={root}/munged.log",
                f"--pid-file={root}/munged.pid",
                f"--seed-file={root}/munged.seed",
            ],
            "munged",
            cluster,
        )
        _start([BINARIES[1], "-f", str(cluster.conf)], "slurmctld", cluster)
        _start([BINARIES[2], "-f", str(cluster.conf)], "slurmd", cluster)
        deadline = time.monotonic() + START_TIMEOUT
        state = ""
        while time.monotonic() < deadline:
            state = cluster.run("sinfo", "-h", "-o", "%T").stdout.strip()
            if state == "idle":
                return cluster
            time.sleep(0.3)
        raise SlurmClusterError(
            f"node {node} is {state or 'not known'} after {START_TIMEOUT:g} s; "
            f"slurmctld.log:\n{cluster.log('slurmctld.log')}\nslurmd.log:\n{cluster.log('slurmd.log')}"
        )
    except BaseException:
        cluster.close()
        raise
