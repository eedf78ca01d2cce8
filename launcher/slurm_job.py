"""`fab train | status | stop | fetch | export` for a `scheduler=slurm` hosts line.

The job goes through `sbatch` on the login host (or this machine for `localhost`), whose run
directory sits on the file system the nodes share. The launcher then watches one job instead
of N processes: its queue state, then each task's status.json and log (mirrored from the
login host like an SSH host's), and at the end srun's own report of which task failed, on
which node, with which exit code. Stopping is `scancel`; a restart is a new submission of
the same script on the same run directory, resumed from the trainer's backup.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launcher import commands
from launcher.attempts import AttemptedJob, StoppedByUser
from launcher.contact import RECONNECTED, Reconnects, with_contact
from launcher.deploy import PROJECT_ROOT, tree_hash
from launcher.display import LogTail, Output, WorkerRow, read_status
from launcher.exits import describe_exit
from launcher.failure import WorkerView, may_restart, stall_failure, start_failure
from launcher.hosts import Host, parse_line
from launcher.job import launcher_identity, log_tail
from launcher.options import WatchOptions, arg_value, int_or_none
from launcher.probe import default_python, probe_host
from launcher.record import ending, may_finish
from launcher.remote import HostError, HostShell, open_shell
from launcher.signals import signals_ignored
from launcher.slurm import (
    FORGOTTEN,
    JOB_CAUSES,
    RUNNING,
    JobInfo,
    SlurmSpec,
    TaskFailure,
    cancel_command,
    env_file_path,
    first_cause,
    job_command,
    parse_allocation,
    parse_job,
    parse_job_id,
    parse_srun_failures,
    render_sbatch,
    submit_command,
)
from launcher.summary import summary
from launcher.sync import DiskNotices, LocalWriteError, Mirror
from launcher.tasks import (
    Settings,
    UserError,
    close_record,
    failed_hosts,
    host_entry,
    mark_stopped,
)
from launcher.watch import QuietClock
from launcher.worker import ProcessState
from runformat import (
    ACTIVE_WORKER_STATES,
    BACKUP_DIR,
    CLUSTER_JSON,
    LAUNCHER_LOG,
    MAX_STATUS_BYTES,
    WORKER_STATES,
    ClusterRecord,
    new_run_id,
    parse_json_object,
    status_path,
    status_rel,
    worker_dir,
    worker_log_path,
    worker_log_rel,
    write_bytes_atomic,
)
from runformat.paths import SLURM_ALLOCATION, SLURM_SCRIPT, slurm_output
from trainer.slurm_env import SlurmEnvError, task_addresses

SLURM_COMMANDS = ("sbatch", "scontrol", "scancel", "srun")
UNKNOWN_TICKS = 5  # ticks a job may be unknown to scontrol and sacct before it counts as gone
_MARK = "--listing--"
_ENDED_TASK = frozenset(WORKER_STATES) - ACTIVE_WORKER_STATES


@dataclass(frozen=True)
class _TaskMark:
    """A task as the quiet clock tracks it: by index, never ended while the job is watched."""

    index: int
    ended: bool = False


@dataclass
class TaskFailed:
    """Why the job failed: a task (with its node), or the job as a whole (task None)."""

    task: int | None
    where: str
    reason: str
    exit_code: int | None = None
    log_tail: list[str] = field(default_factory=list)

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


def code_dir_word(host: Host, workdir: str, code: str) -> str:
    """The shell word of the folder the tasks start in: this checkout, or the deployed tree."""
    if host.local:
        return commands.q(str(PROJECT_ROOT))
    return commands.home_path(f"{workdir}/code/{code}")


def script_for(
    host: Host,
    spec: SlurmSpec,
    run_id: str,
    workdir: str,
    code: str,
    python: str,
    args: Sequence[str],
    env_names: Sequence[str] = (),
) -> str:
    return render_sbatch(
        spec, run_id, code_dir_word(host, workdir, code), python, host.tf_port, args, env_names
    )


def login_of(cluster: ClusterRecord) -> tuple[Host, str, str]:
    """The submitting host, the run directory it sees and the job id, from cluster.json."""
    info = cluster.slurm
    host = parse_line(CLUSTER_JSON, 0, 0, str(info.get("line", "")))
    return host, str(info.get("run_dir", "")), str(info.get("job_id") or "")


def query(shell: HostShell, job_id: str) -> JobInfo | None:
    result = shell.run(job_command(job_id), timeout=60)
    return parse_job(result.stdout, job_id)


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


class SlurmJob(AttemptedJob[TaskFailed]):
    """One run as a Slurm job: submit, show the queue, watch the tasks, end or resubmit."""

    def __init__(
        self,
        shell: HostShell,
        spec: SlurmSpec,
        run_dir: str,
        local_dir: Path,
        cluster: dict[str, Any],
        out: Output,
        env: dict[str, str],
        entry: dict[str, Any],
        watch: WatchOptions,
    ) -> None:
        self.shell = shell
        self.host = shell.host
        self.spec = spec
        self.run_dir = run_dir
        self.local_dir = local_dir
        self.cluster = cluster
        self.out = out
        self.env = env
        self.entry = entry  # the login line as host_entry records it; tasks copy it
        self.watch = watch
        self.restarts = 0
        self.attempts: list[dict[str, Any]] = []
        # Every task of the job writes into the login host's one run directory.
        tasks = frozenset(range(spec.workers))
        self.mirror = None if self.host.local else Mirror(shell, run_dir, local_dir, tasks)
        self.job_id = ""
        self.info: JobInfo | None = None
        self.nodes: list[str] = []
        self.failure: TaskFailed | None = None
        self.exit_codes: dict[str, int | None] = {}
        self.tails = [LogTail(worker_log_path(local_dir, i)) for i in range(spec.workers)]
        self.slurm_tail: LogTail | None = None
        self.running_since: float | None = None
        self.clock = time.monotonic
        self.quiet = QuietClock(time.monotonic)
        self.disk = DiskNotices()
        self.user_stopped = False
        self.env_removed = False
        self.reconnects = Reconnects()  # the login shell's, already warned about

    @property
    def slurm(self) -> dict[str, Any]:
        return self.cluster["slurm"]  # type: ignore[no-any-return]

    def save(self, **changes: Any) -> bool:
        """Write cluster.json as every job does, keeping a `stopped` that `fab stop` wrote
        there meanwhile."""
        if self._stopped_by_user() and changes.get("state") != "stopped":
            self.user_stopped = True
            changes["state"] = "stopped"
        return super().save(**changes)

    def prefix(self, task: int) -> str:
        return f"[{task} {self.node(task)}]"

    def _start_attempt(self) -> None:
        self._new_attempt()
        self._submit()

    def _host_failure(self, exc: HostError) -> TaskFailed:
        return TaskFailed(None, self.host.label, exc.message)

    def _submit(self) -> None:
        if self.env:
            content = commands.env_file_content(self.env).encode()
            self.shell.write_file(env_file_path(self.run_dir), content, 0o600)
        result = self.shell.run(submit_command(self.run_dir), timeout=120)
        try:
            self.job_id = parse_job_id(result.stdout)
        except ValueError:
            why = result.stderr.strip().splitlines() or [result.stdout.strip() or "no output"]
            raise HostError(self.host, f"sbatch refused the job: {why[-1]}") from None
        self.slurm_tail = LogTail(self.local_dir / slurm_output(self.job_id))
        self.running_since = None
        self.info = None
        self.slurm["job_ids"].append(self.job_id)
        self.slurm.update(job_id=self.job_id, state="PENDING", reason="", submitted=time.time())
        self.out.line(
            f"submitted Slurm job {self.job_id} ({self.spec.workers} task(s) on "
            f"{self.spec.nodes} node(s)) from {self.host.label}"
        )
        self.save(state="starting", attempts=self.attempts)

    def _tick(self) -> JobInfo | None:
        """One round trip: the job's state and, over SSH, the run directory's listing."""
        cmd = job_command(self.job_id)
        if self.mirror is not None:
            cmd = f"{cmd}; echo {_MARK}; {commands.listing_command(self.run_dir)}"
        result = self.shell.run(cmd, timeout=60)
        if self.reconnects.news(self.shell):
            self._warn(f"[slurm] {self.host.label}: {RECONNECTED}")
        text, _, listing = result.stdout.partition(_MARK + "\n")
        if self.mirror is not None:
            self._mirror(listing)
        return parse_job(text, self.job_id)

    def _mirror(self, listing: str | None = None) -> list[str]:
        """Mirror the run directory and the job's own files; what this machine's disk refused.

        The job runs on the cluster, not on this disk: a full disk warns once, and every later
        pass tries again (the mirror resumes where it stopped).
        """
        assert self.mirror is not None
        try:
            self.mirror.sync(listing)
            self._fetch_job_files()
        except LocalWriteError as exc:
            notice = self.disk.refused(exc)
            if notice is not None:
                self._warn(notice)
            return [str(exc)]
        notice = self.disk.took()
        if notice is not None:
            self.out.line(notice)
        return []

    def _warn(self, text: str) -> None:
        self.out.line(f"WARNING: {text}")

    def _fetch_job_files(self) -> None:
        fetch_job_files(self.shell, self.run_dir, self.local_dir, self.job_id, not self.nodes)

    def _watch(self) -> None:
        unknown = 0
        while True:
            # The job runs on the cluster whatever happens to this machine's SSH session to
            # the login host: a dropped connection is a pause in watching, not a failure.
            info = with_contact(self._tick, "[slurm]", self.watch.contact_timeout, self._warn)
            self._print_logs()
            if info is None:
                unknown += 1
                if unknown >= UNKNOWN_TICKS:  # forgotten by scontrol, no accounting: it ended
                    info = JobInfo(self.job_id, FORGOTTEN)
            else:
                unknown = 0
            if info is not None:
                self._seen(info)
            if self._stopped_by_user():
                raise StoppedByUser
            if info is not None and info.ended:
                self._sync_final()
                self.failure = self._ended(info)
                return
            late = self._deadline_failure()
            if late is not None:
                self.failure = late
                self.out.line(
                    f"cancelling Slurm job {self.job_id}: worker {late.task} {late.reason}"
                )
                self._cancel()
                return
            self._progress()
            time.sleep(self.watch.interval)

    def _seen(self, info: JobInfo) -> None:
        before = self.info
        self.info = info
        if before is None or (before.state, before.reason) != (info.state, info.reason):
            self.out.line(f"[slurm] job {self.job_id} {info.describe()}")
            self.slurm.update(state=info.state, reason=info.reason, nodelist=info.nodelist)
            self.save()
        if info.state == RUNNING and self.running_since is None:
            self.running_since = time.monotonic()
            self.slurm.setdefault("started", time.time())
            self.save(state="running")
        if not self.nodes:
            self._fill_hosts()

    def _fill_hosts(self) -> None:
        """Once the job has written its allocation: one cluster.json host per task."""
        try:
            text = (self.local_dir / SLURM_ALLOCATION).read_text(encoding="utf-8")
        except OSError:
            return
        alloc = parse_allocation(text)
        if alloc is None or alloc[0] != self.job_id:
            return
        try:
            addresses = task_addresses(alloc[1], alloc[2], self.host.tf_port)
        except SlurmEnvError as exc:
            self.out.line(f"[slurm] cannot read the allocation: {exc}")
            return
        self.nodes = addresses
        hosts = []
        for i, address in enumerate(addresses):
            node, port = address.rsplit(":", 1)
            hosts.append(
                {
                    **self.entry,
                    "index": i,
                    "role": "chief" if i == 0 else "worker",
                    "name": node,
                    "addr": node,
                    "tf_port": int(port),
                    "slurm_task": i,
                }
            )
        self.save(hosts=hosts, tf_config_cluster={"worker": addresses})
        self.out.line(
            f"[slurm] job {self.job_id} tasks: "
            + ", ".join(f"{i}={a}" for i, a in enumerate(addresses))
        )

    def _stopped_by_user(self) -> bool:
        """`fab stop` from another terminal marks cluster.json stopped before it cancels."""
        if self.user_stopped or self.cluster.get("state") == "stopped":
            return self.user_stopped
        try:
            state = json.loads((self.local_dir / CLUSTER_JSON).read_text()).get("state")
        except (OSError, ValueError, AttributeError):
            return False
        self.user_stopped = state == "stopped"
        return self.user_stopped

    def _status(self, task: int) -> dict[str, Any] | None:
        return read_status(status_path(self.local_dir, task))

    def _deadline_failure(self) -> TaskFailed | None:
        """A task that did not start training in time, or went silent in its phase, by the
        SSH workers' rules; the clock starts when the job runs (the queue is Slurm's)."""
        if self.running_since is None:
            return None
        now = time.monotonic()
        views = []
        for task in range(self.spec.workers):
            status = self._status(task)
            mark = _TaskMark(task)
            views.append(
                WorkerView(
                    task,
                    self.node(task),
                    ProcessState.ALIVE,
                    status=status,
                    quiet_since=self.quiet.since(mark, status),
                )
            )
        found = None
        if now - self.running_since > self.watch.start_timeout:
            found = start_failure(views, self.watch.start_timeout)
        found = found or stall_failure(views, now, self.watch)
        return TaskFailed(found.index, found.host, found.reason) if found else None

    def node(self, task: int) -> str:
        return self.nodes[task].rsplit(":", 1)[0] if task < len(self.nodes) else "?"

    def _progress(self) -> None:
        """The workers' table once the job runs; until then `_seen` reports the queue."""
        if self.info is None or self.info.state != RUNNING or not self.nodes:
            return
        self.out.table(
            [WorkerRow(i, self.node(i), self._status(i)) for i in range(self.spec.workers)]
        )

    def _print_logs(self, final: bool = False) -> None:
        if self.slurm_tail is not None:
            lines = self.slurm_tail.flush() if final else self.slurm_tail.new_lines()
            self.out.lines([f"[slurm] {line}" for line in lines])
        for i, tail in enumerate(self.tails):
            lines = tail.flush() if final else tail.new_lines()
            self.out.worker_output(i, self.prefix(i), lines)

    def _sync_final(self) -> None:
        if self.mirror is not None:
            try:
                self._mirror()
            except HostError as exc:
                self.out.line(f"could not fetch the run's files from {self.host.label}: {exc}")
        if not self.nodes:
            self._fill_hosts()
        self._print_logs(final=True)

    def _ended(self, info: JobInfo) -> TaskFailed | None:
        """What the ended job means: None when every task finished, else who failed and how."""
        statuses = [self._status(i) for i in range(self.spec.workers)]
        codes, failure = job_outcome(info, statuses, self._srun_report(), self.node)
        self.exit_codes = {str(i): c for i, c in codes.items()}
        return failure

    def _srun_report(self) -> list[TaskFailure]:
        try:
            text = (self.local_dir / slurm_output(self.job_id)).read_text(errors="replace")
        except OSError:
            return []
        return parse_srun_failures(text)

    def _cancel(self) -> None:
        with signals_ignored():
            info = cancel_and_wait(self.shell, self.job_id, self.watch.grace + 120)
            if info is not None:
                self.info = info
                self.slurm.update(state=info.state, reason=info.reason)
            self._sync_final()
            if self.failure is not None:
                report = {f.task: f.exit_code for f in self._srun_report()}
                for i in range(self.spec.workers):
                    self.exit_codes[str(i)] = report.get(i)

    def _can_restart(self, failure: TaskFailed) -> bool:
        return may_restart(failure.exit_code, self.restarts, self.watch.max_restarts)

    def _end_attempt(self, failure: TaskFailed | None, **extra: Any) -> None:
        super()._end_attempt(failure, job_id=self.job_id, **extra)

    def _restart(self, failure: TaskFailed) -> None:
        """Submit the same script again on the same run directory; the backup resumes it."""
        failure.log_tail = self._tail(failure)
        self._end_attempt(failure)
        self.restarts += 1
        self.failure = None
        self.quiet.clear()
        self.nodes = []  # the next job may run on other nodes: filled again from its allocation
        self.out.line(
            f"RESTART {self.restarts}/{self.watch.max_restarts}: {failure.line()}; submitting "
            "the job again, resuming from the last completed epoch"
        )
        note = f"--- restart {self.restarts}: attempt {self.restarts + 1} ---"
        for i in range(self.spec.workers):
            result = self.shell.run(commands.reset_command(self.run_dir, i, note), timeout=30)
            if result.code != 0:
                raise HostError(self.host, f"could not prepare a restart: {result.stderr.strip()}")
            for name in commands.ATTEMPT_FILES:
                (worker_dir(self.local_dir, i) / name).unlink(missing_ok=True)
                if self.mirror is not None:
                    self.mirror.seen.pop(f"workers/{i}/{name}", None)
        self.save(restarts=self.restarts, attempts=self.attempts)

    def _tail(self, failure: TaskFailed) -> list[str]:
        return failure_tail(self.local_dir, self.job_id, failure)

    def save_end(self, **changes: Any) -> bool:
        """The final record; the first call also removes the --env file a job that never ran
        left on the login host (later calls only retry the record, e.g. on a full disk)."""
        if self.env and not self.env_removed:
            self.shell.run(f"rm -f {commands.q(env_file_path(self.run_dir))}", timeout=30)
            self.env_removed = True
        # One mirror (the login host) serves every task: its bytes are the job's, not a worker's.
        self.slurm["sync_bytes"] = self.mirror.bytes_received if self.mirror else 0
        return self.save(
            finished=time.time(),
            exit_codes=self.exit_codes,
            sync_bytes={},
            restarts=self.restarts,
            attempts=self.attempts,
            **changes,
        )

    def _end_failed(self, failure: TaskFailed) -> int:
        if self.info is not None and not self.info.ended and self.job_id:
            self._cancel()
        failure.log_tail = self._tail(failure)
        self._end_attempt(failure)
        self.save_end(state="failed", failure=failure.as_dict())
        self.out.line(f"FAILED: {failure.line()}")
        if failure.log_tail:
            where = (
                worker_log_rel(failure.task)
                if failure.task is not None
                else slurm_output(self.job_id)
            )
            self.out.line(f"last lines of {where}:")
            self.out.lines([f"  {line}" for line in failure.log_tail])
        self.out.line(f"Slurm job {self.job_id} ended; logs are in {self.local_dir}")
        return 1

    def _end_broken(self, exc: Exception) -> int:
        """An error the launcher did not expect: no job may go on unwatched, so it is
        cancelled, and the record says why (as for SSH hosts)."""
        reason = f"launcher error: {type(exc).__name__}: {exc}"
        with signals_ignored():
            self.out.line(f"{reason}; cancelling Slurm job {self.job_id or '(not submitted)'}")
            self.out.log_only(traceback.format_exc())
            if self.job_id:
                self._cancel()
            self._end_attempt(None)
            self.save_end(state="failed", failure=TaskFailed(None, "launcher", reason).as_dict())
        return 1

    def _end_stopped(self, signum: int | None) -> int:
        with signals_ignored():
            why = "`fab stop`" if signum is None else signal.Signals(signum).name
            self.out.line(f"stopped by {why}: cancelling Slurm job {self.job_id}")
            if self.job_id:
                self._cancel()
            self._end_attempt(None)
            self.save_end(state="stopped")
            self.out.line(f"stopped; logs are in {self.local_dir}")
        return 1 if signum is None else 128 + int(signum)

    def _end_finished(self) -> int:
        """Bring the rest home and write the record, waiting for room on a full local disk."""
        left = self._until_done(self._unmirrored)
        if not left:
            shutil.rmtree(self.local_dir / BACKUP_DIR, ignore_errors=True)
            if self.mirror is not None:
                self.shell.run(f"rm -rf {commands.q(self.run_dir + '/backup')}", timeout=30)
        self._end_attempt(None)
        left += self._until_done(lambda: self._save_end_problems(state="finished"))
        self.out.line(f"Slurm job {self.job_id} completed")
        if left:
            self.out.line(
                f"WARNING: every task finished, but not all of the run is here: "
                f"{'; '.join(left)}. Make room, then `fab fetch --run {self.local_dir.name}` "
                "brings the files (cluster.json keeps its last state)."
            )
            return 1
        self.out.line(summary(self.local_dir))
        return 0

    def _unmirrored(self) -> list[str]:
        """What the last pass could not write here, after one more try."""
        if self.mirror is None or self.disk.error is None:
            return []
        try:
            return self._mirror()
        except HostError as exc:
            return [f"{self.host.label}: {exc.message}"]


@dataclass(frozen=True)
class Preflight:
    """What the login host has: the python the tasks run, the absolute workdir, the
    partitions Slurm offers (name: availability), and what stops a submission."""

    python: str
    workdir: str
    facts: dict[str, Any]
    partitions: dict[str, str]
    problems: list[str]


def preflight(shell: HostShell, code: str) -> Preflight:
    """fab check's and fab train's look at the login host; changes nothing."""
    probe = probe_host(shell, code)
    host = shell.host
    assert host.slurm is not None
    problems = []
    if not probe.facts.get("tensorflow"):
        problems.append(f"TensorFlow is not installed for {probe.python} (fab deploy --venv)")
    if not host.local and not probe.facts.get("deployed"):
        problems.append("the local trainer/ is not deployed there (run fab deploy)")
    check = " ".join(f"command -v {c} >/dev/null || echo {c};" for c in SLURM_COMMANDS)
    missing = shell.run(check, timeout=30).stdout.split()
    partitions: dict[str, str] = {}
    if missing:
        problems.append(
            f"Slurm's {', '.join(missing)} not found on {host.label}: is it a Slurm login "
            "node (and is SLURM_CONF set, if your cluster needs it)?"
        )
    else:
        listed = shell.run("sinfo -h -o '%R %a'", timeout=60).stdout.split("\n")
        partitions = dict(line.split(" ", 1) for line in listed if " " in line)
    wanted = host.slurm.partition
    if partitions and wanted is not None and wanted not in partitions:
        problems.append(
            f"partition {wanted!r} does not exist; Slurm has: {', '.join(sorted(partitions))}"
        )
    return Preflight(probe.python, str(probe.facts["workdir"]), probe.facts, partitions, problems)


def check(settings: Settings, out: Output, host: Host) -> int:
    """`fab check` for a Slurm line: the login host, its Slurm commands and partitions."""
    try:
        shell = open_shell(host, settings.ssh)
    except HostError as exc:
        raise failed_hosts("check", [exc]) from None
    try:
        pre = preflight(shell, tree_hash())
    except HostError as exc:
        raise failed_hosts("check", [exc]) from None
    finally:
        shell.close()
    f = pre.facts
    code = "local" if host.local else ("current" if f.get("deployed") else "none")
    parts = ", ".join(f"{p} ({a})" for p, a in sorted(pre.partitions.items())) or "-"
    out.line(
        f"[{host.label}] Slurm login: python {f.get('python')} ({pre.python}), tensorflow "
        f"{f.get('tensorflow')}, code {code}, partitions {parts}"
    )
    if pre.problems:
        raise UserError(
            f"check failed on {host.label}:\n" + "\n".join(f"  {p}" for p in pre.problems)
        )
    assert host.slurm is not None
    out.line(f"{host.label} is ready to submit {host.slurm.workers} task(s)")
    return 0


def train(
    settings: Settings,
    out: Output,
    host: Host,
    args: list[str],
    user_env: dict[str, str],
    code: str,
    watch: WatchOptions,
) -> int:
    """Submit the run as one Slurm job and watch it to its end."""
    assert host.slurm is not None
    try:
        shell = open_shell(host, settings.ssh)
    except HostError as exc:
        raise failed_hosts("connecting", [exc]) from None
    try:
        try:
            pre = preflight(shell, code)
        except HostError as exc:
            raise failed_hosts("preflight", [exc]) from None
        if pre.problems:
            raise UserError(
                "preflight failed:\n" + "\n".join(f"  {host.label}: {p}" for p in pre.problems)
            )
        python, workdir = pre.python, pre.workdir
        run_id = new_run_id()
        local_dir = (settings.runs_dir / run_id).resolve()
        run_dir = str(local_dir) if host.local else f"{workdir}/runs/{run_id}"
        script = script_for(host, host.slurm, run_id, workdir, code, python, args, sorted(user_env))
        local_dir.mkdir(parents=True, exist_ok=False)
        out.open_log(local_dir / LAUNCHER_LOG)
        (local_dir / SLURM_SCRIPT).write_text(script, encoding="utf-8")
        if not host.local:
            made = shell.run(f"mkdir -p {commands.q(run_dir)}", timeout=30)
            if made.code != 0:
                raise UserError(f"{host.label}: cannot create {run_dir}: {made.stderr.strip()}")
            shell.write_file(f"{run_dir}/{SLURM_SCRIPT}", script.encode(), 0o644)
        entry = host_entry(host, python, run_dir)
        spec = host.slurm
        cluster = ClusterRecord(
            run_id=run_id,
            created=time.time(),
            state="starting",
            scheduler="slurm",
            slurm={
                "line": entry.line,
                "login": host.label,
                "run_dir": run_dir,
                "script": SLURM_SCRIPT,
                "workers": spec.workers,
                "tasks_per_node": spec.tasks_per_node,
                "partition": spec.partition,
                "gres": spec.gres,
                "time": spec.time,
                "job_id": None,
                "job_ids": [],
            },
            hosts_file=str(settings.hosts_file.resolve()),
            tf_config_cluster={"worker": []},
            trainer_args=tuple(args),
            dataset=arg_value(args, "--dataset"),
            epochs=int_or_none(arg_value(args, "--epochs")),
            max_restarts=watch.max_restarts,
            env=tuple(sorted(user_env)),
            launcher=launcher_identity(),
        ).to_dict()
        env = dict(user_env)
        job = SlurmJob(
            shell,
            spec,
            run_dir,
            local_dir,
            cluster,
            out,
            env,
            entry.to_dict(),
            watch,
        )
        job.save()
        where = "this machine" if host.local else f"ssh {host.ssh_target}"
        out.line(
            f"run {run_id}: {spec.workers} worker(s) as one Slurm job, run directory {local_dir}"
        )
        out.line(
            f"[slurm] submitting {run_dir}/{SLURM_SCRIPT} on {host.label} ({where}), "
            f"tasks run {python}"
        )
        if user_env:
            out.line(
                f"environment passed to workers: {', '.join(sorted(user_env))} (values hidden)"
            )
        try:
            return job.run()
        finally:
            out.close()
    finally:
        shell.close()


def _read_remote_json(shell: HostShell, path: str) -> dict[str, Any] | None:
    try:
        return parse_json_object(shell.read_range(path, 0, MAX_STATUS_BYTES), [], path)
    except OSError:
        return None


def _statuses(
    shell: HostShell, run_dir: str, local_dir: Path, cluster: ClusterRecord
) -> list[dict[str, Any] | None]:
    """Each task's status.json as the login host has it now, else the local copy."""
    workers = int(cluster.slurm.get("workers") or len(cluster.hosts))
    local = shell.host.local
    return [
        (
            read_status(Path(f"{run_dir}/{status_rel(i)}"))
            if local
            else _read_remote_json(shell, f"{run_dir}/{status_rel(i)}")
        )
        or read_status(status_path(local_dir, i))
        for i in range(workers)
    ]


def finish_record(
    shell: HostShell,
    local_dir: Path,
    cluster: ClusterRecord,
    info: JobInfo | None,
    statuses: Sequence[dict[str, Any] | None],
    out: Output,
) -> ClusterRecord | None:
    """Once Slurm says the job of a run whose launcher is gone has ended, write how it ended
    (the launcher's own reading of the job, record.ending), once; the record as it is now,
    or None while the job runs, the launcher lives or the record is closed already.

    A job neither scontrol nor sacct knows counts as ended only when its tasks say so (all
    ended) or srun reported failed tasks: an unreachable controller is not an ending.
    """
    run_dir, job_id = str(cluster.slurm.get("run_dir", "")), str(cluster.slurm.get("job_id") or "")
    data = cluster.to_dict()
    if not job_id or not may_finish(data) or (info is not None and not info.ended):
        return None
    try:
        text = shell.read_range(f"{run_dir}/{slurm_output(job_id)}", 0, 1 << 20)
    except OSError:
        text = b""
    report = parse_srun_failures(text.decode(errors="replace"))
    if info is None:
        told = all(st is not None and st.get("state") in _ENDED_TASK for st in statuses)
        if not (report or told):
            return None
        info = JobInfo(job_id, FORGOTTEN)
    names = {h.index: h.name for h in cluster.hosts}
    codes, failure = job_outcome(info, statuses, report, lambda i: names.get(i, "?"))
    if failure is not None:
        failure.log_tail = failure_tail(local_dir, job_id, failure)
    changes = ending(data, codes, failure.as_dict() if failure else None, job_id=job_id)
    changes["slurm"] = {**cluster.slurm, "state": info.state, "reason": info.reason}
    return close_record(local_dir, data, changes, out, f"Slurm job {job_id} has ended")


def status(settings: Settings, out: Output, local_dir: Path, cluster: ClusterRecord) -> int:
    """The job's queue state, then each task like `fab status` shows a worker; a run whose
    launcher died is recorded as ended once Slurm says its job ended."""
    host, run_dir, job_id = login_of(cluster)
    shell = open_shell(host, settings.ssh)
    try:
        info = query(shell, job_id) if job_id else None
        statuses = _statuses(shell, run_dir, local_dir, cluster)
        cluster = finish_record(shell, local_dir, cluster, info, statuses, out) or cluster
        out.line(f"run {cluster.run_id}: {cluster.state}  ({local_dir})")
        state = info.describe() if info else "not known to Slurm any more"
        out.line(f"Slurm job {job_id or '-'} on {host.label}: {state}")
        rows = []
        now = time.time()
        entries = {h.index: h for h in cluster.hosts}
        for i, st in enumerate(statuses):
            upd = st.get("updated") if st else None
            ago = f"{now - upd:.0f} s ago" if isinstance(upd, (int, float)) else "-"
            node = entries[i].name if i in entries else "-"
            rows.append(WorkerRow(i, node, st, updated=ago))
        out.show_table(rows)
        failure = cluster.failure
        if failure is not None:
            out.line(f"failure: {failure.who} {failure.reason}")
    finally:
        shell.close()
    return 0


def stop(
    settings: Settings, out: Output, local_dir: Path, cluster: ClusterRecord, grace: float
) -> int:
    """scancel the run's job and wait until Slurm says it ended. A job that had ended
    already is recorded as it ended (when its launcher is gone), never as stopped."""
    host, run_dir, job_id = login_of(cluster)
    if not job_id:
        mark_stopped(local_dir, cluster, out)
        out.line(f"run {cluster.run_id}: no Slurm job was submitted")
        return 0
    shell = open_shell(host, settings.ssh)
    try:
        before = query(shell, job_id)
        statuses = _statuses(shell, run_dir, local_dir, cluster)
        if finish_record(shell, local_dir, cluster, before, statuses, out) is not None:
            return 0
        if before is not None and before.ended:
            out.line(f"[slurm] job {job_id} not running ({before.describe()})")
            return 0
        mark_stopped(local_dir, cluster, out)
        after = cancel_and_wait(shell, job_id, grace + 120)
    finally:
        shell.close()
    was = before.describe() if before else "unknown"
    now = after.describe() if after else "gone"
    out.line(f"[slurm] job {job_id} cancelled (was {was}, now {now})")
    return 0


def fetch(
    settings: Settings,
    out: Output,
    local_dir: Path,
    cluster: ClusterRecord,
    follow: bool,
    interval: float,
) -> int:
    """Mirror the run directory from the login host (all tasks share it), once or until the
    job ends; a run whose launcher died is recorded as ended once its job ended. A full
    local disk ends it with one line, as for SSH hosts: what could not be written, and to
    fetch again once there is room."""
    host, run_dir, job_id = login_of(cluster)
    shell = open_shell(host, settings.ssh)
    full: LocalWriteError | None = None

    def sync() -> None:
        nonlocal full
        assert mirror is not None
        try:
            mirror.sync()
            if job_id:
                fetch_job_files(shell, run_dir, local_dir, job_id)
        except LocalWriteError as exc:
            full = exc
        else:
            full = None

    try:
        workers = int(cluster.slurm.get("workers") or 1)
        tasks = frozenset(range(workers))
        mirror = None if host.local else Mirror(shell, run_dir, local_dir, tasks)
        while True:
            # Slurm's word first: files mirrored after it are at least as new as the state.
            info = query(shell, job_id) if job_id else None
            if mirror is not None:
                sync()
            if not follow or info is None or info.ended:
                break
            time.sleep(interval)
        if full is not None:
            raise UserError(f"fetch incomplete: {full}; make room and fetch again")
        statuses = [read_status(status_path(local_dir, i)) for i in range(workers)]
        finish_record(shell, local_dir, cluster, info, statuses, out)
        if mirror is None:
            out.line(f"the run directory is on this machine ({local_dir}): nothing to fetch")
        else:
            out.line(f"fetched {mirror.bytes_received} bytes from {host.label} into {local_dir}")
    finally:
        shell.close()
    return 0


def export(host: Host, args: Sequence[str], code: str) -> str:
    """The sbatch script `fab train` would submit, for users who submit jobs themselves."""
    if host.slurm is None:
        raise UserError(
            f"fab export --slurm needs a scheduler=slurm line in the hosts file, e.g. "
            f"`login.cluster scheduler=slurm workers=4 partition=gpu` (line {host.line} is "
            f"{host.name})"
        )
    python = default_python(host)
    return script_for(host, host.slurm, new_run_id(), host.workdir, code, python, args)
