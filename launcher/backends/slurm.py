"""Workers as the tasks of one Slurm job, submitted with sbatch on a login host (or this
machine for `localhost`), whose run directory the nodes share; see launcher/slurm_job.py.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher import commands
from launcher.backend import Launch, Look, Run
from launcher.bundle import BundleError, human_size
from launcher.deploy import Lazy, ship_folder, tree_hash
from launcher.display import Output, WorkerRow, read_status
from launcher.errors import UserError, failed_hosts
from launcher.hostdisk import HostDisk
from launcher.hosts import Host
from launcher.probe import default_python, disk_problem, free_needed, probe_host
from launcher.program import Program
from launcher.record import (
    ending,
    host_entry,
    may_finish,
    run_dir_for,
)
from launcher.remote import HostError, HostShell, open_shell
from launcher.settings import Settings
from launcher.slurm import FORGOTTEN, JobInfo
from launcher.slurm_job import SlurmJob
from launcher.slurm_queue import (
    ENDED_TASK,
    SLURM_COMMANDS,
    JobTrace,
    cancel_and_wait,
    failure_tail,
    fetch_job_files,
    job_outcome,
    login_of,
    query,
    query_with_disk,
    script_for,
)
from launcher.sync import LocalWriteError, Mirror
from runformat import (
    MAX_STATUS_BYTES,
    ClusterRecord,
    HostEntry,
    new_run_id,
    parse_json_object,
    status_path,
    status_rel,
)
from runformat.paths import SLURM_SCRIPT, slurm_output


@dataclass(frozen=True)
class Preflight:
    """What the login host has: the python the tasks run, the absolute workdir, the
    partitions Slurm offers (name: availability), and what stops a submission."""

    python: str
    workdir: str
    facts: dict[str, Any]
    partitions: dict[str, str]
    problems: list[str]


def preflight(shell: HostShell, code: str, need_mb: int) -> Preflight:
    """fab check's and fab train's look at the login host; changes nothing. Its runs folder
    is the one the tasks share: it must take writes and have `need_mb` free."""
    probe = probe_host(shell, code)
    host = shell.host
    assert host.slurm is not None
    problems = []
    if not probe.facts.get("tensorflow"):
        problems.append(f"TensorFlow is not installed for {probe.python} (fab deploy --venv)")
    if not host.local and not probe.facts.get("deployed"):
        problems.append("the local trainer/ is not deployed there (run fab deploy)")
    disk = disk_problem(probe.facts, need_mb)
    if disk is not None:
        problems.append(disk)
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


def job_ending(
    shell: HostShell,
    local_dir: Path,
    cluster: ClusterRecord,
    info: JobInfo | None,
    statuses: Sequence[dict[str, Any] | None],
    disk: HostDisk | None = None,
) -> dict[str, Any] | None:
    """Once Slurm says the job of a run whose launcher is gone has ended, the changes that
    close the record (the launcher's own reading of the job, slurm_queue.job_outcome, with
    `disk`, the run folder now, as its watch); None while the job runs, the launcher lives or
    the record is closed already.

    A job neither scontrol nor sacct knows counts as ended only when its tasks say so (all
    ended) or srun reported failed tasks: an unreachable controller is not an ending.
    """
    run_dir, job_id = str(cluster.slurm.get("run_dir", "")), str(cluster.slurm.get("job_id") or "")
    data = cluster.to_dict()
    if not job_id or not may_finish(data) or (info is not None and not info.ended):
        return None
    try:
        raw: bytes | None = shell.read_range(f"{run_dir}/{slurm_output(job_id)}", 0, 1 << 20)
    except OSError:
        raw = None  # no output: the job wrote nothing this host sees
    text = None if raw is None else raw.decode(errors="replace")
    trace = JobTrace(run_dir, shell.host.label, statuses, text)
    if info is None:
        told = all(st is not None and st.get("state") in ENDED_TASK for st in statuses)
        if not (trace.report or told):
            return None
        info = JobInfo(job_id, FORGOTTEN)
    names = {h.index: h.name for h in cluster.hosts}
    full_now = disk if disk is not None and disk.full else None
    trouble = full_now.message() if full_now is not None else None
    codes, failure = job_outcome(info, trace, lambda i: names.get(i, "?"), trouble)
    if failure is not None:
        failure.log_tail = failure_tail(local_dir, job_id, failure)
    changes = ending(data, codes, failure.as_dict() if failure else None, job_id=job_id)
    changes["slurm"] = {**cluster.slurm, "state": info.state, "reason": info.reason}
    full = full_now or trace.end_disk()
    if failure is not None and full is not None and data.get("hosts"):
        # As the watch records it: the one run folder every task writes into.
        changes["hosts"] = [{**h, "disk": full.record()} for h in data["hosts"]]
    return changes


def ship_to_login(shell: HostShell, workdir: str, launch: Launch) -> str | None:
    """A script's folder to the login host's `<workdir>/programs/<hash>` (the nodes share the
    workdir, as they share the code); a local login runs the folder in place."""
    bundle = launch.program.bundle
    if bundle is None or shell.host.local:
        return None
    try:
        result, _ = ship_folder(shell, workdir, bundle.digest, Lazy(bundle.archive))
    except HostError as exc:
        raise failed_hosts("shipping the script's folder", [exc]) from None
    except BundleError as exc:  # a file changed while it was being packed
        raise UserError(f"--script: {exc}") from None
    return (
        f"script folder {bundle.digest} ({len(bundle.files)} file(s), {human_size(bundle.size)}): "
        f"{result.sent_bytes} bytes sent to {shell.host.label} ({result.action})"
    )


@dataclass
class SlurmReserved:
    """The login host, checked, for a new run: the job it submits and watches."""

    shell: HostShell
    launch: Launch
    python: str
    workdir: str
    run_dir: str
    entry: dict[str, Any]  # the login line as host_entry records it; tasks copy it
    hosts: Sequence[HostEntry]
    tf_config_cluster: dict[str, Any]
    details: dict[str, Any]
    shipped: str | None = None  # how the script's folder reached the login host

    @property
    def summary(self) -> str:
        assert self.shell.host.slurm is not None
        return f"{self.shell.host.slurm.workers} worker(s) as one Slurm job"

    def describe(self) -> list[str]:
        host = self.shell.host
        where = "this machine" if host.local else f"ssh {host.ssh_target}"
        return ([self.shipped] if self.shipped else []) + [
            f"[slurm] submitting {self.run_dir}/{SLURM_SCRIPT} on {host.label} ({where}), "
            f"tasks run {self.python}"
        ]

    def run(self, record: dict[str, Any], out: Output) -> int:
        host, launch, run_dir = self.shell.host, self.launch, self.run_dir
        spec = host.slurm
        assert spec is not None
        script = script_for(
            host, spec, launch.run_id, self.workdir, launch.code, self.python, launch.program,
            sorted(launch.env),
        )  # fmt: skip
        (launch.local_dir / SLURM_SCRIPT).write_text(script, encoding="utf-8")
        if not host.local:
            made = self.shell.run(f"mkdir -p {commands.q(run_dir)}", timeout=30)
            if made.code != 0:
                raise UserError(f"{host.label}: cannot create {run_dir}: {made.stderr.strip()}")
            self.shell.write_file(f"{run_dir}/{SLURM_SCRIPT}", script.encode(), 0o644)
        job = SlurmJob(
            self.shell, spec, run_dir, launch.local_dir, record, out, dict(launch.env), self.entry,
            launch.options.watch,
        )  # fmt: skip
        job.save()
        return job.run()


class SlurmBackend:
    """A `scheduler=slurm` line: one Slurm job whose tasks are the workers."""

    name = "slurm"

    def check(self, settings: Settings, out: Output, hosts: Sequence[Host]) -> int:
        """The login host, its Slurm commands and partitions."""
        host = hosts[0]
        try:
            shell = open_shell(host, settings.ssh)
        except HostError as exc:
            raise failed_hosts("check", [exc]) from None
        try:
            pre = preflight(shell, tree_hash(), free_needed())
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

    @contextmanager
    def reserve(
        self, settings: Settings, out: Output, hosts: Sequence[Host], launch: Launch
    ) -> Iterator[SlurmReserved]:
        host = hosts[0]
        spec = host.slurm
        assert spec is not None
        try:
            shell = open_shell(host, settings.ssh)
        except HostError as exc:
            raise failed_hosts("connecting", [exc]) from None
        try:
            try:
                need = free_needed(launch.options.watch.max_restarts)
                pre = preflight(shell, launch.code, need)
            except HostError as exc:
                raise failed_hosts("preflight", [exc]) from None
            if pre.problems:
                raise UserError(
                    "preflight failed:\n" + "\n".join(f"  {host.label}: {p}" for p in pre.problems)
                )
            run_dir = run_dir_for(host, pre.workdir, launch.run_id, launch.local_dir)
            entry = host_entry(host, pre.python, run_dir)
            details: dict[str, Any] = {
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
            }
            shipped = ship_to_login(shell, pre.workdir, launch)
            yield SlurmReserved(
                shell, launch, pre.python, pre.workdir, run_dir, entry.to_dict(), (),
                {"worker": []}, details, shipped,
            )  # fmt: skip
        finally:
            shell.close()

    @contextmanager
    def _login(self, run: Run) -> Iterator[tuple[HostShell, str, str]]:
        host, run_dir, job_id = login_of(run.record)
        shell = open_shell(host, run.settings.ssh)
        try:
            yield shell, run_dir, job_id
        finally:
            shell.close()

    def look(self, run: Run) -> Look:
        """The job's queue state and the disk of its run folder, then each task like a
        worker."""
        with self._login(run) as (shell, run_dir, job_id):
            info, disk = query_with_disk(shell, job_id, run_dir) if job_id else (None, None)
            statuses = _statuses(shell, run_dir, run.local_dir, run.record)
            changes = job_ending(shell, run.local_dir, run.record, info, statuses, disk)
        state = info.describe() if info else "not known to Slurm any more"
        running = info is not None and not info.ended
        full = "disk full" if running and disk is not None and disk.full else ""
        entries = {h.index: h for h in run.record.hosts}
        rows = [
            WorkerRow(i, entries[i].name if i in entries else "-", st, disk=full)
            for i, st in enumerate(statuses)
        ]
        notes = [f"Slurm job {job_id or '-'} on {shell.host.label}: {state}"]
        if full and disk is not None:
            notes.append(f"the run folder: {disk.message()}")
        return Look(rows, running, notes, [], changes, f"Slurm job {job_id} has ended")

    def stop(self, run: Run, look: Look, grace: float) -> list[str]:
        """scancel the run's job and wait until Slurm says it ended."""
        _, _, job_id = login_of(run.record)
        if not job_id:
            return [f"run {run.record.run_id}: no Slurm job was submitted"]
        with self._login(run) as (shell, _, _):
            before = query(shell, job_id)
            if before is not None and before.ended:
                return [f"[slurm] job {job_id} not running ({before.describe()})"]
            after = cancel_and_wait(shell, job_id, grace + 120)
        was = before.describe() if before else "unknown"
        now = after.describe() if after else "gone"
        return [f"[slurm] job {job_id} cancelled (was {was}, now {now})"]

    def release(self, run: Run) -> None:
        """Slurm holds the job's nodes itself: nothing to let go of here."""

    def export(self, host: Host, program: Program, code: str) -> str:
        """`fab export --slurm`: the script `fab train` would submit."""
        return export(host, program, code)

    @contextmanager
    def mirror(self, run: Run) -> Iterator[SlurmMirroring]:
        with self._login(run) as (shell, run_dir, job_id):
            yield SlurmMirroring(run, shell, run_dir, job_id)


class SlurmMirroring:
    """The run directory from the login host (all tasks share it), and the job's own files."""

    def __init__(self, run: Run, shell: HostShell, run_dir: str, job_id: str) -> None:
        self.run, self.shell, self.run_dir, self.job_id = run, shell, run_dir, job_id
        tasks = frozenset(range(int(run.record.slurm.get("workers") or 1)))
        local = shell.host.local
        self.mirror = None if local else Mirror(shell, run_dir, run.local_dir, tasks)
        self.full: LocalWriteError | None = None

    def sync(self) -> None:
        if self.mirror is None:
            return
        try:
            self.mirror.sync()
            if self.job_id:
                fetch_job_files(self.shell, self.run_dir, self.run.local_dir, self.job_id)
        except LocalWriteError as exc:
            self.full = exc
        else:
            self.full = None

    def disk_errors(self) -> list[str]:
        return [] if self.full is None else [str(self.full)]

    def summary(self) -> str:
        local_dir = self.run.local_dir
        if self.mirror is None:
            return f"the run directory is on this machine ({local_dir}): nothing to fetch"
        host = self.shell.host.label
        return f"fetched {self.mirror.bytes_received} bytes from {host} into {local_dir}"


def export(host: Host, program: Program, code: str) -> str:
    """The sbatch script `fab train` would submit, for users who submit jobs themselves."""
    if host.slurm is None:
        raise UserError(
            f"fab export --slurm needs a scheduler=slurm line in the hosts file, e.g. "
            f"`login.cluster scheduler=slurm workers=4 partition=gpu` (line {host.line} is "
            f"{host.name})"
        )
    python = default_python(host)
    return script_for(host, host.slurm, new_run_id(), host.workdir, code, python, program)


BACKEND = SlurmBackend()
