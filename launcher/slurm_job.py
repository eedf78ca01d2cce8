"""`fab train` for a `scheduler=slurm` hosts line: one run as one Slurm job.

The job goes through `sbatch` on the login host (or this machine for `localhost`), whose run
directory sits on the file system the nodes share. The launcher then watches one job instead
of N processes: its queue state, then each task's status.json and log (mirrored from the
login host like an SSH host's) and the disk of that run folder, and at the end srun's own
report of which task failed, on which node, with which exit code. Stopping is `scancel`; a
restart is a new submission of the same script on the same run directory, resumed from the
trainer's backup.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher import commands
from launcher.attempts import AttemptedJob, StoppedByUser
from launcher.contact import RECONNECTED, Reconnects, with_contact
from launcher.display import LogTail, Output, WorkerRow, read_status
from launcher.failure import WorkerView, stall_failure, start_failure
from launcher.hostdisk import DiskWatch, HostDisk, local_disk, parse_disk
from launcher.options import WatchOptions
from launcher.record import stopped_by_user
from launcher.remote import HostError, HostShell
from launcher.signals import signals_ignored
from launcher.slurm import (
    FORGOTTEN,
    RUNNING,
    JobInfo,
    SlurmSpec,
    TaskFailure,
    env_file_path,
    job_command,
    parse_allocation,
    parse_job,
    parse_job_id,
    parse_srun_failures,
    submit_command,
)
from launcher.slurm_queue import (
    UNKNOWN_TICKS,
    JobTrace,
    TaskFailed,
    cancel_and_wait,
    failure_tail,
    fetch_job_files,
    job_outcome,
)
from launcher.sync import DiskNotices, LocalWriteError, Mirror
from launcher.watch import QuietClock
from launcher.worker import ProcessState, reset_worker
from runformat import (
    BACKUP_DIR,
    status_path,
    worker_log_path,
    worker_log_rel,
)
from runformat.paths import SLURM_ALLOCATION, slurm_output
from trainer.slurm_env import SlurmEnvError, task_addresses


@dataclass(frozen=True)
class _TaskMark:
    """A task as the quiet clock tracks it: by index, never ended while the job is watched."""

    index: int
    ended: bool = False


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
        self.disk = DiskNotices()  # this machine's disk
        # The run folder's disk, as the login host sees it: every task writes there.
        self.run_disk = DiskWatch(goes_on="every worker trains on, its monitoring waits for room")
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

    @property
    def stopping(self) -> str:  # type: ignore[override]
        return f"cancelling Slurm job {self.job_id or '(not submitted)'}"

    again = "submitting the job again"

    def _start(self) -> None:
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
        """One round trip: the job's state and, over SSH, the run folder's free space and
        listing (statvfs here for a run folder on this machine)."""
        cmd, remote = job_command(self.job_id), self.mirror is not None
        if remote:
            asked = f"{cmd}; {commands.disk_command(self.run_dir)}"
            cmd = commands.and_listing(asked, self.run_dir)
        result = self.shell.run(cmd, timeout=60)
        if self.reconnects.news(self.shell):
            self._warn(f"[slurm] {self.host.label}: {RECONNECTED}")
        text, listing = commands.split_listing(result.stdout)
        self._disk_news(parse_disk(text, self.run_dir) if remote else local_disk(self.run_dir))
        if remote:
            self._mirror(listing)
        return parse_job(text, self.job_id)

    def _disk_news(self, disk: HostDisk | None) -> None:
        """Say when the run folder fills up or has room again; record it on every task."""
        notice = self.run_disk.seen(disk, time.monotonic())
        if notice is not None:
            self._warn(f"[slurm] {notice}")
        changed = False
        for entry in self.cluster.get("hosts") or []:
            record = self.run_disk.changed(entry.get("disk"))
            if record is not None:
                entry["disk"] = record
                changed = True
        if changed:
            self.save()

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
                self._stop()
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
        self.user_stopped = self.user_stopped or stopped_by_user(self.local_dir)
        return self.user_stopped

    def _status(self, task: int) -> dict[str, Any] | None:
        return read_status(status_path(self.local_dir, task))

    def _deadline_failure(self) -> TaskFailed | None:
        """A task that did not start training in time, or went silent in its phase, by the
        SSH workers' rules; the clock starts when the job runs (the queue is Slurm's)."""
        if self.running_since is None:
            return None
        now = time.monotonic()
        disk = self.run_disk.trouble(now)  # the one run folder every task writes into
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
                    disk=disk,
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
        disk = "disk full" if self.run_disk.full else ""
        self.out.table(
            [
                WorkerRow(i, self.node(i), self._status(i), disk=disk)
                for i in range(self.spec.workers)
            ]
        )

    def _print_logs(self, final: bool = False) -> None:
        if self.slurm_tail is not None:
            lines = self.slurm_tail.flush() if final else self.slurm_tail.new_lines()
            # The script's line about the run folder is for the launcher (JobTrace.end_disk).
            told = [line for line in lines if parse_disk(line, self.run_dir) is None]
            self.out.lines([f"[slurm] {line}" for line in told])
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
        """What the ended job means: None when every task finished, else who failed and how
        (a run folder full now or lately first)."""
        statuses = [self._status(i) for i in range(self.spec.workers)]
        trace = JobTrace(self.run_dir, self.host.label, statuses, self._output())
        trouble = self.run_disk.trouble(time.monotonic())
        codes, failure = job_outcome(info, trace, self.node, trouble)
        self.exit_codes = {str(i): c for i, c in codes.items()}
        return failure

    def _can_restart(self, failure: TaskFailed) -> bool:
        """Never after a node that does not see the run folder: a new job would meet it."""
        if failure.unseen:
            if self.restarts < self.watch.max_restarts:
                self.out.line("not submitting again: a new job would not see the run folder either")
            return False
        return super()._can_restart(failure)

    def _output(self) -> str | None:
        """The job's own output as mirrored here; None when the login host has none (not
        known, "", while this machine's disk refuses the mirror)."""
        try:
            return (self.local_dir / slurm_output(self.job_id)).read_text(errors="replace")
        except OSError:
            return "" if self.disk.error is not None else None

    def _srun_report(self) -> list[TaskFailure]:
        return parse_srun_failures(self._output() or "")

    def _stop(self, bring_home: bool = True) -> None:
        """scancel a job Slurm has not ended, and wait for its end; then the last mirror."""
        if not self.job_id or (self.info is not None and self.info.ended):
            return
        with signals_ignored():
            info = cancel_and_wait(self.shell, self.job_id, self.watch.grace + 120)
            if info is not None:
                self.info = info
                self.slurm.update(state=info.state, reason=info.reason)
            if bring_home:
                self._sync_final()
            if self.failure is not None:
                report = {f.task: f.exit_code for f in self._srun_report()}
                for i in range(self.spec.workers):
                    self.exit_codes[str(i)] = report.get(i)

    def _exit_code(self, failure: TaskFailed) -> int | None:
        return failure.exit_code

    def _end_attempt(self, failure: TaskFailed | None, **extra: Any) -> None:
        super()._end_attempt(failure, job_id=self.job_id, **extra)

    def _reset(self, note: str) -> None:
        """The same script is submitted again on the same run directory; the backup resumes it."""
        self.quiet.clear()
        self.run_disk.clear()
        self.nodes = []  # the next job may run on other nodes: filled again from its allocation
        for i in range(self.spec.workers):
            reset_worker(self.shell, self.run_dir, self.local_dir, i, note, self.mirror)

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

    def _report(self, failure: TaskFailed) -> list[str]:
        lines = [f"FAILED: {failure.line()}"]
        if failure.log_tail:
            task = failure.task
            where = worker_log_rel(task) if task is not None else slurm_output(self.job_id)
            lines += [f"last lines of {where}:", *(f"  {line}" for line in failure.log_tail)]
        return [*lines, f"Slurm job {self.job_id} ended; logs are in {self.local_dir}"]

    def _drop_backups(self) -> None:
        super()._drop_backups()
        if self.mirror is not None:
            self.shell.run(f"rm -rf {commands.q(self.run_dir + '/' + BACKUP_DIR)}", timeout=30)

    def _bring_home(self) -> list[str]:
        """What the last pass could not write here, after one more try."""
        if self.mirror is None or self.disk.error is None:
            return []
        try:
            return self._mirror()
        except HostError as exc:
            return [f"{self.host.label}: {exc.message}"]
