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
    parse_srun_failures,
    render_sbatch,
)
from launcher.sync import LocalWriteError
from runformat import (
    ACTIVE_WORKER_STATES,
    CLUSTER_JSON,
    WORKER_STATES,
    ClusterRecord,
    worker_log_path,
    worker_log_rel,
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
    unseen: bool = False  # a node does not see the run folder: a new job would meet it too

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
        new: bytes | None = shell.read_range(f"{run_dir}/{out.name}", have, 1 << 20)
    except OSError:
        new = None  # not there (yet): no local file either, whose absence says so
    if new or (new is not None and not out.exists()):
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


@dataclass(frozen=True)
class JobTrace:
    """What a job left in its run folder, as the login host sees it: each task's status.json
    and the job's own output (`slurm-<id>.out`; None when there is no such file there: the
    job wrote nothing the login host can see)."""

    run_dir: str
    login: str  # the login host's label: whose view of the run folder this is
    statuses: Sequence[dict[str, Any] | None]
    output: str | None

    @property
    def report(self) -> list[TaskFailure]:
        return parse_srun_failures(self.output or "")

    def end_disk(self) -> HostDisk | None:
        """The run folder, full, as the job's script found it after its tasks failed."""
        disk = parse_disk(self.output or "", self.run_dir)
        return disk if disk is not None and disk.full else None


def job_outcome(
    info: JobInfo,
    trace: JobTrace,
    node: Callable[[int], str],
    disk: str | None = None,
) -> tuple[dict[int, int | None], TaskFailed | None]:
    """What an ended job means, from Slurm's state and what it left (`trace`: each task's
    status.json, srun's report): every task's exit code as far as known (None: not known),
    and None when every task finished, else who failed and how.

    A full run folder comes first in the failure, and no new job is submitted: `disk` as the
    watcher saw it (full now or lately; `fab status` for a launcher that is gone), else as the
    job itself saw it once its tasks had failed. The live watch and a record closed after its
    launcher died say it in these same words.
    """
    codes, failure = _outcome(info, trace, node)
    end = trace.end_disk()
    trouble = disk or (end.message() if end is not None else None)
    if failure is not None and trouble is not None:
        # What a user must fix comes first; a restart would meet the same full folder.
        failure.reason = f"{trouble}; {failure.reason}"
        failure.retry = False
    return codes, failure


def _outcome(
    info: JobInfo, trace: JobTrace, node: Callable[[int], str]
) -> tuple[dict[int, int | None], TaskFailed | None]:
    statuses, report = trace.statuses, trace.report
    finished = [st is not None and st.get("state") == "finished" for st in statuses]
    # srun ends 0 when it could start no task at all: the job says COMPLETED.
    launched = not any(f.launch_failed for f in report)
    if (info.state == "COMPLETED" and launched) or (info.state == FORGOTTEN and all(finished)):
        return dict.fromkeys(range(len(statuses)), 0), None
    codes: dict[int, int | None] = {i: 0 if done else None for i, done in enumerate(finished)}
    for f in report:
        codes[f.task] = f.exit_code
    state = f"Slurm job {info.job_id} {info.describe()}"
    if info.state == "FAILED" and trace.output is None and info.node:
        return codes, unseen_folder(info, trace)
    cause = first_cause(report)
    # Slurm itself ended the step (time limit, node failure, scancel): no task to blame.
    by_slurm = info.state in JOB_CAUSES and (cause is None or cause.collateral)
    if cause is not None and cause.launch_failed:
        where = cause.node or node(cause.task)
        if NO_OUTPUT not in cause.what:
            return codes, TaskFailed(
                cause.task, where, f"could not be started ({cause.what}); {state}"
            )
        log = f"{trace.run_dir}/{worker_log_rel(cause.task)}"
        why = (
            f"could not be started ({cause.what}): {where} cannot open {log}, so it does not "
            f"see the run folder {trace.login} sees ({UNSHARED}); {state}"
        )
        return codes, TaskFailed(cause.task, where, why, unseen=True)
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


# srun's words for a task whose node could not open its output file (slurmd's log: "Could
# not open stdout file"): here the task's worker.log in the run folder.
NO_OUTPUT = "could not connect IO"
UNSHARED = (
    "a node-local folder or another mount? workdir must be on a file system that the login "
    "node and every node share"
)


def unseen_folder(info: JobInfo, trace: JobTrace) -> TaskFailed:
    """A job that failed on its node without writing anything into the run folder the login
    host sees (not even its output, which Slurm opens first): that node does not see it."""
    why = f", {info.reason}" if info.reason else ""
    return TaskFailed(
        None,
        f"Slurm job {info.job_id}",
        f"could not start on {info.node}: it wrote nothing into {trace.run_dir}, the run "
        f"folder {trace.login} sees, so {info.node} does not see that folder ({UNSHARED}); "
        f"Slurm says {info.describe()}{why}",
        unseen=True,
    )


def failure_tail(local_dir: Path, job_id: str, failure: TaskFailed) -> list[str]:
    """The last lines of the failed task's log, or of the job's own output."""
    if failure.task is not None:
        return log_tail(worker_log_path(local_dir, failure.task))
    return log_tail(local_dir / slurm_output(job_id))
