"""A Slurm job as the launcher handles it from the login host: the batch script, the queue,
scancel, the job's own files, and what an ended job means (which task failed, and how).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launcher import commands
from launcher.deploy import PROJECT_ROOT
from launcher.display import log_tail
from launcher.exits import describe_exit
from launcher.hostdisk import HostDisk, local_disk, parse_disk
from launcher.hosts import Host, parse_line
from launcher.program import Program, Trainer, entry, folder_on_host
from launcher.remote import HostShell
from launcher.slurm import (
    FORGOTTEN,
    JOB_CAUSES,
    JobInfo,
    SlurmSpec,
    TaskFailure,
    cancel_command,
    first_cause,
    job_command,
    parse_job,
    render_sbatch,
)
from launcher.sync import LocalWriteError
from runformat import (
    ACTIVE_WORKER_STATES,
    CLUSTER_JSON,
    WORKER_STATES,
    ClusterRecord,
    worker_log_path,
    write_bytes_atomic,
)
from runformat.paths import SLURM_ALLOCATION, slurm_output

SLURM_COMMANDS = ("sbatch", "scontrol", "scancel", "srun")
UNKNOWN_TICKS = 5  # ticks a job may be unknown to scontrol and sacct before it counts as gone
ENDED_TASK = frozenset(WORKER_STATES) - ACTIVE_WORKER_STATES


@dataclass
class TaskFailed:
    """Why the job failed: a task (with its node), or the job as a whole (task None)."""

    task: int | None
    where: str
    reason: str
    exit_code: int | None = None
    log_tail: list[str] = field(default_factory=list)
    retry: bool = True  # False when a restart would meet the same cause (a full run folder)

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.task,
            "host": self.where,
            "reason": self.reason,
            "exit_code": self.exit_code,
            "log_tail": self.log_tail,
        }

    def line(self) -> str:
        who = (
            f"worker {self.task} (task {self.task} on {self.where})"
            if self.task is not None
            else self.where
        )
        return f"{who} {self.reason}"


def code_dir_word(host: Host, workdir: str, code: str, folder: str = "") -> str:
    """The shell word of the folder the tasks start in: this checkout, or the deployed tree."""
    base = str(PROJECT_ROOT) if host.local else f"{workdir}/code/{code}"
    path = f"{base}/{folder}" if folder else base
    return commands.q(path) if host.local else commands.home_path(path)


def script_for(
    host: Host,
    spec: SlurmSpec,
    run_id: str,
    workdir: str,
    code: str,
    python: str,
    program: Program,
    env_names: Sequence[str] = (),
) -> str:
    """The batch script of a run; each task becomes a worker through trainer.slurm_env,
    which runs the trainer, or the wrapper of a script shipped to the login host's
    `<workdir>/programs/<hash>` (the nodes share it)."""
    folder = code_dir_word(host, workdir, code)
    if isinstance(program, Trainer):
        _, args = entry(program)
        return render_sbatch(spec, run_id, folder, python, host.tf_port, args, env_names)
    _, args = entry(program, folder_on_host(program, workdir, host.local))
    return render_sbatch(
        spec, run_id, folder, python, host.tf_port, args, env_names, program=program.script
    )


def login_of(cluster: ClusterRecord) -> tuple[Host, str, str]:
    """The submitting host, the run directory it sees and the job id, from cluster.json."""
    info = cluster.slurm
    host = parse_line(CLUSTER_JSON, 0, 0, str(info.get("line", "")))
    return host, str(info.get("run_dir", "")), str(info.get("job_id") or "")


def query(shell: HostShell, job_id: str) -> JobInfo | None:
    result = shell.run(job_command(job_id), timeout=60)
    return parse_job(result.stdout, job_id)


def query_with_disk(
    shell: HostShell, job_id: str, run_dir: str
) -> tuple[JobInfo | None, HostDisk | None]:
    """The job's state and the disk of the run folder its tasks share, in one round trip."""
    if shell.host.local:
        return query(shell, job_id), local_disk(run_dir)
    result = shell.run(f"{job_command(job_id)}; {commands.disk_command(run_dir)}", timeout=60)
    return parse_job(result.stdout, job_id), parse_disk(result.stdout, run_dir)


def cancel_and_wait(shell: HostShell, job_id: str, limit: float) -> JobInfo | None:
    """scancel (TERM to every task, KILL after the cluster's KillWait), then wait for the end."""
    shell.run(cancel_command(job_id), timeout=60)
    deadline = time.monotonic() + limit
    info = query(shell, job_id)
    while info is not None and not info.ended and time.monotonic() < deadline:
        time.sleep(0.5)
        info = query(shell, job_id)
    return info


def fetch_job_files(
    shell: HostShell, run_dir: str, local_dir: Path, job_id: str, allocation: bool = True
) -> None:
    """The job's own files from the login host: the mirror takes only what workers and the
    chief write, while the batch output (only ever appended to) and the allocation come from
    Slurm itself. A local disk that refuses them raises LocalWriteError, as the mirror does;
    the next call resumes where this one stopped."""
    out = local_dir / slurm_output(job_id)
    have = out.stat().st_size if out.exists() else 0
    try:
        new = shell.read_range(f"{run_dir}/{out.name}", have, 1 << 20)
    except OSError:
        new = b""
    if new:
        try:
            with open(out, "ab") as f:
                f.write(new)
        except OSError as exc:
            raise LocalWriteError(out, exc) from exc
    if not allocation:
        return
    try:
        alloc = shell.read_range(f"{run_dir}/{SLURM_ALLOCATION}", 0, 4096)
    except OSError:
        return
    try:
        write_bytes_atomic(local_dir / SLURM_ALLOCATION, alloc)
    except OSError as exc:
        raise LocalWriteError(local_dir / SLURM_ALLOCATION, exc) from exc


def job_outcome(
    info: JobInfo,
    statuses: Sequence[dict[str, Any] | None],
    report: Sequence[TaskFailure],
    node: Callable[[int], str],
) -> tuple[dict[int, int | None], TaskFailed | None]:
    """What an ended job means, from Slurm's state, each task's status.json and srun's
    report: every task's exit code as far as known (None: not known), and None when every
    task finished, else who failed and how."""
    finished = [st is not None and st.get("state") == "finished" for st in statuses]
    if info.state == "COMPLETED" or (info.state == FORGOTTEN and all(finished)):
        return dict.fromkeys(range(len(statuses)), 0), None
    codes: dict[int, int | None] = {i: 0 if done else None for i, done in enumerate(finished)}
    for f in report:
        codes[f.task] = f.exit_code
    cause = first_cause(report)
    state = f"Slurm job {info.job_id} {info.describe()}"
    # Slurm itself ended the step (time limit, node failure, scancel): no task to blame.
    by_slurm = info.state in JOB_CAUSES and (cause is None or cause.collateral)
    if cause is not None and not by_slurm:
        why = f"{describe_exit(cause.exit_code)}; {state}"
        return codes, TaskFailed(cause.task, cause.node, why, cause.exit_code)
    failed = [i for i, st in enumerate(statuses) if st and st.get("state") == "failed"]
    if failed and not by_slurm:
        err = statuses[failed[0]].get("error") or "failed"  # type: ignore[union-attr]
        return codes, TaskFailed(failed[0], node(failed[0]), f"{err}; {state}")
    return codes, TaskFailed(
        None,
        f"Slurm job {info.job_id}",
        f"ended {info.describe()}; see {slurm_output(info.job_id)} in the run directory",
    )


def failure_tail(local_dir: Path, job_id: str, failure: TaskFailed) -> list[str]:
    """The last lines of the failed task's log, or of the job's own output."""
    if failure.task is not None:
        return log_tail(worker_log_path(local_dir, failure.task))
    return log_tail(local_dir / slurm_output(job_id))
