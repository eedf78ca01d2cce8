"""Workers as processes on SSH hosts, or on this machine for `localhost` lines.

Every host is reached at once (threads); a failure on any names every failing host. A new
run takes each host's tf_port lock first, so that two runs never share a port; each worker
then runs detached in its own process group, its run directory mirrored home by byte offset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from launcher import commands
from launcher.backend import Launch, Look, Run
from launcher.bundle import human_size
from launcher.contact import QUICK_CONTACT_TIMEOUT, with_contact
from launcher.deploy import PROJECT_ROOT, DeployResult, Lazy, ship_folder, tree_hash
from launcher.display import Output, WorkerRow, read_status
from launcher.errors import UserError, failed_hosts
from launcher.hostdisk import HostDisk, closing_disk, parse_disk
from launcher.hosts import Host
from launcher.job import Job
from launcher.netcheck import Peer, check_network, clock_cell, clock_warning
from launcher.options import Verbosity
from launcher.probe import ProbeResult, free_needed, host_problems, probe_host
from launcher.program import Program, Trainer, entry, folder_on_host
from launcher.record import finished_record, host_entry, hosts_of_run, run_dir_for
from launcher.remote import HostError, HostShell, open_shell
from launcher.results import HostResults
from launcher.sessions import Sessions
from launcher.settings import Settings
from launcher.sync import LocalWriteError, Mirror
from launcher.tf_config import cluster_spec, tf_config_json
from launcher.worker import Poll, ProcessState, Worker
from runformat import MAX_STATUS_BYTES, STATUS_JSON, HostEntry, parse_json_object, status_rel

T = TypeVar("T")
SESSIONS: Sessions[HostShell] = Sessions()  # status, stop, fetch: a connection per host


def _prefix(host: Host) -> str:
    return f"[{host.index} {host.label}]"


def _warn(out: Output) -> Callable[[str], None]:
    return lambda text: out.line(f"WARNING: {text}")


def connect_all(hosts: Sequence[Host], settings: Settings) -> list[HostShell]:
    """Open every host at once; any failure closes the others and names every failing host."""
    results = HostResults.run(hosts, lambda h: open_shell(h, settings.ssh))
    if results.errors:
        close_all(results.values)
        raise failed_hosts("connecting", results.errors)
    return results.values


def close_all(shells: Sequence[HostShell]) -> None:
    for s in shells:
        s.close()


def host_mirrors(
    hosts: Sequence[Host], shells: Sequence[HostShell], run_dirs: Sequence[str], local_dir: Any
) -> dict[int, Mirror]:
    """One Mirror per SSH host and run directory, keyed by the first worker there: two workers
    on one host share a run directory, and each byte of it needs to travel only once."""
    groups: dict[tuple[str | None, str], list[int]] = {}
    for pos, (host, run_dir) in enumerate(zip(hosts, run_dirs, strict=True)):
        if not host.local:
            groups.setdefault((host.ssh_target, run_dir), []).append(pos)
    return {
        hosts[pos[0]].index: Mirror(
            shells[pos[0]], run_dir, local_dir, frozenset(hosts[p].index for p in pos)
        )
        for (_, run_dir), pos in groups.items()
    }


def _locks(shells: Sequence[HostShell], workdirs: Sequence[str], launch: Launch,
           run_dirs: Sequence[str]) -> list[str]:  # fmt: skip
    """Take every host's tf_port lock; returns the refusals (empty when all were taken)."""

    def one(i: int) -> str:
        h = shells[i].host
        cmd = commands.lock_command(workdirs[i], h.tf_port, launch.run_id, run_dirs[i], h.index)
        return shells[i].run(cmd, timeout=30).stdout.strip()

    results = HostResults.run(list(range(len(shells))), one, host=lambda i: shells[i].host)
    refusals = []
    for i, r in results:
        h = shells[i].host
        if isinstance(r, HostError) or not r.startswith(("acquired", "taken-over")):
            holder = r.removeprefix("held ") if not isinstance(r, HostError) else str(r)
            refusals.append(
                f"worker {h.index} ({h.label}): tf_port {h.tf_port} is locked by run {holder}, "
                "which is still running; wait for it or `fab stop` it"
            )
    return refusals


def _unlock(shells: Sequence[HostShell], workdirs: Sequence[str], run_id: str) -> None:
    HostResults.run(
        list(range(len(shells))),
        lambda i: shells[i].run(
            commands.unlock_command(workdirs[i], shells[i].host.tf_port, run_id), timeout=30
        ),
        host=lambda i: shells[i].host,
    )


def ship_program(
    program: Program, shells: Sequence[HostShell], workdirs: Sequence[str]
) -> str | None:
    """Ship a script's folder to every SSH host at once, content-addressed (0 bytes where it
    is there already; packed only if some host lacks it); one line saying so, or None when
    nothing ships (the trainer, or local workers only, which run the folder in place)."""
    bundle = program.bundle
    first: dict[tuple[str | None, str], int] = {}  # two workers on one host: one copy
    for i, s in enumerate(shells):
        if not s.host.local:
            first.setdefault((s.host.ssh_target, workdirs[i]), i)
    remote = list(first.values())
    if bundle is None or not remote:
        return None
    archive = Lazy(bundle.archive)
    results = HostResults.run(
        remote,
        lambda i: ship_folder(shells[i], workdirs[i], bundle.digest, archive)[0],
        host=lambda i: shells[i].host,
    )
    if results.errors:
        raise failed_hosts("shipping the script's folder", results.errors)
    done: list[DeployResult] = [r for _, r in results.succeeded]
    sent = sum(r.sent_bytes for r in done)
    fresh = sum(1 for r in done if r.action == "sent")
    return (
        f"script folder {bundle.digest} ({len(bundle.files)} file(s), {human_size(bundle.size)}): "
        f"{sent} bytes sent to {fresh} host(s), unchanged on {len(done) - fresh}"
    )


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def check_table(settings: Settings, out: Output, hosts: Sequence[Host]) -> int:
    """Preflight every host at once, change nothing, print a table; non-zero names the bad."""
    code = tree_hash()
    opened = HostResults.run(hosts, lambda h: open_shell(h, settings.ssh))
    shells = opened.values
    try:
        answers = HostResults.run(shells, lambda s: probe_host(s, code))
        probed: dict[int, ProbeResult | HostError] = {s.host.index: a for s, a in answers}
        probed.update({h.index: e for h, e in opened.failed})
        ready = answers.succeeded
        free = {a.host.index for _, a in ready if a.facts.get("port_free")}
        network = check_network([Peer(s, a.python) for s, a in ready], hosts, listeners=free)
    finally:
        close_all(shells)
    everyone = [p.facts for p in answers.values]
    rows = [
        [
            *("#", "host", "ssh", "python", "tensorflow", "tf_port", "free MB", "code"),
            *("clock", "network", "resolves"),
        ]
    ]
    problems: list[str] = []
    warnings: list[str] = []
    for host in hosts:
        r = probed[host.index]
        if isinstance(r, ProbeResult):
            f = r.facts
            deployed = (
                "local"
                if host.local
                else ("current" if f.get("deployed") else ("old" if f.get("current") else "none"))
            )
            offset, uncertainty = f.get("clock_offset"), f.get("clock_uncertainty")
            rows.append(
                [
                    str(host.index),
                    host.label,
                    "local" if host.local else "ok",
                    str(f.get("python")),
                    str(f.get("tensorflow")),
                    f"{host.tf_port} {'free' if f.get('port_free') else 'IN USE'}",
                    str(f.get("free_mb")),
                    deployed,
                    clock_cell(offset, uncertainty),
                    network.network_cell(host.index),
                    network.resolve_cell(host.index),
                ]
            )
            for p in host_problems(r, everyone, host.local, need_code=False):
                problems.append(f"worker {host.index} ({host.label}): {p}")
            if offset is not None and (late := clock_warning(offset, uncertainty or 0.0)):
                warnings.append(f"worker {host.index} ({host.label}): {late}")
        else:
            rows.append([str(host.index), host.label, "FAILED", *["-"] * 8])
            problems.append(f"worker {host.index} ({host.label}): {r.message}")
    problems += network.problems
    out.lines(_table(rows))
    for warning in warnings:
        out.line(f"warning: {warning}")
    if problems:
        bad = sorted({p.split(":")[0].split(" cannot ")[0] for p in problems})
        raise UserError(
            "check failed on " + ", ".join(bad) + ":\n" + "\n".join(f"  {p}" for p in problems)
        )
    out.line(f"all {len(hosts)} host(s) ready")
    return 0


@dataclass
class SshReserved:
    """Connected, probed and locked hosts of a new run, and the workers it starts there."""

    launch: Launch
    workers: list[Worker]
    hosts: Sequence[HostEntry]
    tf_config_cluster: dict[str, Any]
    details: dict[str, Any]
    shipped: str | None = None  # how the script's folder reached the SSH hosts

    @property
    def summary(self) -> str:
        return f"{len(self.workers)} worker(s)"

    def describe(self) -> list[str]:
        lines = [self.shipped] if self.shipped else []
        for w in self.workers:
            where = "local process" if w.host.local else f"ssh {w.host.ssh_target}"
            if not w.host.local:
                where += f", its {w.run_dir} mirrored here"
            lines.append(f"{w.prefix} {w.host.role} {w.host.tf_address} ({where}) {w.python}")
        return lines

    def run(self, record: dict[str, Any], out: Output) -> int:
        job = Job(self.workers, self.launch.local_dir, record, out, self.launch.options.watch)
        job.save()
        return job.run()


class SshBackend:
    """SSH hosts and local processes (a hosts-file line without scheduler=)."""

    name = "ssh"
    worker = Worker  # how a worker's process is started, polled and stopped

    def check(self, settings: Settings, out: Output, hosts: Sequence[Host]) -> int:
        return check_table(settings, out, hosts)

    @contextmanager
    def reserve(
        self, settings: Settings, out: Output, hosts: Sequence[Host], launch: Launch
    ) -> Iterator[SshReserved]:
        shells = connect_all(hosts, settings)
        try:
            results = HostResults.run(shells, lambda s: probe_host(s, launch.code))
            if results.errors:
                raise failed_hosts("preflight", results.errors)
            probes = results.values
            workdirs = [str(p.facts["workdir"]) for p in probes]
            run_dirs = [
                run_dir_for(h, wd, launch.run_id, launch.local_dir)
                for h, wd in zip(hosts, workdirs, strict=True)
            ]
            # Locks first: "another run holds this port" says more than "the port is in use".
            refusals = _locks(shells, workdirs, launch, run_dirs)
            everyone = [p.facts for p in probes]
            need = free_needed(launch.options.watch.max_restarts)
            problems = [
                f"worker {p.host.index} ({p.host.label}): {msg}"
                for p in probes
                for msg in host_problems(p, everyone, p.host.local, need_mb=need)
            ]
            if not refusals and not problems:
                # Last, so that nothing holds a tf_port: every worker's host listens on its own.
                peers = [Peer(s, p.python) for s, p in zip(shells, probes, strict=True)]
                problems = check_network(peers, hosts).problems
            if refusals or problems:
                _unlock(shells, workdirs, launch.run_id)
                if refusals:
                    raise UserError("refusing to start:\n" + "\n".join(f"  {m}" for m in refusals))
                raise UserError("preflight failed:\n" + "\n".join(f"  {m}" for m in problems))
            try:
                shipped = ship_program(launch.program, shells, workdirs)
                workers = self._workers(hosts, shells, probes, run_dirs, launch)
                entries = [
                    host_entry(w.host, w.python, w.run_dir, p.facts.get("clock_offset"))
                    for w, p in zip(workers, probes, strict=True)
                ]
                yield SshReserved(launch, workers, entries, cluster_spec(hosts), {}, shipped)
            finally:
                _unlock(shells, workdirs, launch.run_id)
        finally:
            close_all(shells)

    def _workers(self, hosts: Sequence[Host], shells: Sequence[HostShell],
                 probes: Sequence[ProbeResult], run_dirs: Sequence[str],
                 launch: Launch) -> list[Worker]:  # fmt: skip
        mirrors = host_mirrors(hosts, shells, run_dirs, launch.local_dir)
        program, workers = launch.program, []
        for host, shell, probe, run_dir in zip(hosts, shells, probes, run_dirs, strict=True):
            env = {"PYTHONUNBUFFERED": "1"}
            if launch.options.verbosity is not Verbosity.VERBOSE:
                env["TF_CPP_MIN_LOG_LEVEL"] = "2"  # TensorFlow's info and warnings stay out
            tfc = tf_config_json(hosts, host.index)
            if tfc is not None:
                env["TF_CONFIG"] = tfc
            env.update(launch.env)
            workdir = str(probe.facts["workdir"])
            folder = (
                None
                if isinstance(program, Trainer)
                else folder_on_host(program, workdir, host.local)
            )
            module, given = entry(program, folder)
            args = list(given)
            mnist = probe.facts.get("mnist")
            if isinstance(program, Trainer) and not host.local and "--data" not in args and mnist:
                args += ["--data", str(mnist)]
            code = str(PROJECT_ROOT) if host.local else f"{workdir}/code/{launch.code}"
            workers.append(
                self.worker(
                    host=host,
                    shell=shell,
                    python=probe.python,
                    code_dir=code,
                    run_dir=run_dir,
                    local_dir=launch.local_dir,
                    trainer_args=args,
                    env=env,
                    mirror=mirrors.get(host.index),
                    module=module,
                )
            )
        return workers

    def _on_host(self, run: Run, host: Host, action: Callable[[HostShell], T],
                 timeout: float | None = None) -> T:  # fmt: skip
        """Do `action` over the host's connection for this run (opened by the first pass over
        the run, closed when the command drops it); while the host cannot be reached, retry
        with back-off (a network blip must not make status, stop or fetch fail)."""

        def once() -> T:
            shell = SESSIONS.shell(run, host.index, lambda: open_shell(host, run.settings.ssh))
            return action(shell)

        limit = run.contact_timeout if timeout is None else timeout
        return with_contact(once, _prefix(host), limit, _warn(run.out))

    def look(self, run: Run) -> Look:
        pairs = hosts_of_run(run.record, run.local_dir)

        Seen = tuple[Poll, dict[str, Any] | None, HostDisk | None]

        def one(shell: HostShell, host: Host, run_dir: str) -> Seen:
            """Its poll, its status.json and its run folder's disk (closing_disk)."""
            said = shell.run(commands.look_command(run_dir, host.index), 30).stdout
            now, ended = commands.split_look(said)
            poll = Poll.parse(now)
            disk = closing_disk(parse_disk(now, run_dir), parse_disk(ended, run_dir))
            try:
                raw = shell.read_range(f"{run_dir}/{status_rel(host.index)}", 0, MAX_STATUS_BYTES)
            except OSError:
                return poll, None, disk
            return poll, parse_json_object(raw, [], STATUS_JSON), disk

        results = HostResults.run(
            pairs,
            lambda pair: self._on_host(run, pair[0], lambda s: one(s, pair[0], pair[1])),
            host=lambda pair: pair[0],
        )
        rows, problems, polls, disks = [], [], {}, {}
        for (host, _), r in results:
            local = read_status(run.local_dir / status_rel(host.index))
            if isinstance(r, HostError):
                rows.append(WorkerRow(host.index, host.label, local, process="unreachable"))
                problems.append(f"worker {host.index} ({host.label}) unreachable: {r.message}")
                continue
            polls[host.index] = r[0]
            if r[2] is not None:
                disks[host.index] = r[2]
            rows.append(WorkerRow(host.index, host.label, r[1] or local, process=r[0].describe()))
        running = len(polls) < len(pairs) or any(
            p.state in (ProcessState.ALIVE, ProcessState.PENDING) for p in polls.values()
        )
        codes = {i: p.exit_code for i, p in polls.items() if p.state is ProcessState.EXITED}
        ending = None
        if len(codes) == len(pairs):
            ending = finished_record(run.record.to_dict(), codes, run.local_dir, disks)
        return Look(rows, running, [], problems, ending, "every worker has ended")

    def stop(self, run: Run, look: Look, grace: float) -> list[str]:
        before = {row.index: row.process for row in look.rows}

        def one(pair: tuple[Host, str]) -> str:
            host, run_dir = pair
            was = before.get(host.index) or "unknown"
            if was not in ("alive", "frozen", "pending", "gone", "unreachable", "unknown"):
                return f"{_prefix(host)} not running ({was})"
            cmd = commands.stop_command(run_dir, host.index, grace)
            said = self._on_host(run, host, lambda s: s.run(cmd, timeout=grace + 30).stdout)
            if said.strip() == "stopped":
                return f"{_prefix(host)} stopped (was {was})"
            return f"{_prefix(host)} not running ({was})"

        results = HostResults.run(
            hosts_of_run(run.record, run.local_dir), one, host=lambda pair: pair[0]
        )
        if results.errors:
            run.out.lines([value for _, value in results.succeeded])
            raise failed_hosts("stop", results.errors)
        return [value for _, value in results.succeeded]

    def release(self, run: Run) -> None:
        """Release the run's tf_port locks; a host only drops a lock once its worker is dead."""
        cluster, out = run.record, run.out

        def one(pair: tuple[Host, str]) -> str:
            host, _ = pair
            entry = cluster.host(host.index)
            workdir = (entry.workdir if entry else None) or host.workdir
            cmd = commands.unlock_command(workdir, host.tf_port, str(cluster.run_id))
            action: Callable[[HostShell], str] = lambda s: s.run(cmd, 30).stdout  # noqa: E731
            return self._on_host(run, host, action, QUICK_CONTACT_TIMEOUT)

        pairs = hosts_of_run(cluster, run.local_dir)
        for (host, _), said in HostResults.run(pairs, one, host=lambda pair: pair[0]):
            if isinstance(said, HostError):
                out.line(f"WARNING: {_prefix(host)} could not release its tf_port lock: {said}")
            elif said.strip() == "kept":
                out.line(f"{_prefix(host)} keeps its tf_port lock: a process of the worker lives")

    @contextmanager
    def mirror(self, run: Run) -> Iterator[SshMirroring]:
        pairs = [(h, d) for h, d in hosts_of_run(run.record, run.local_dir) if not h.local]
        opened = HostResults.run(
            [h for h, _ in pairs],
            lambda h: with_contact(
                lambda: open_shell(h, run.settings.ssh), _prefix(h), run.contact_timeout,
                _warn(run.out),
            ),
        )  # fmt: skip
        try:
            if opened.errors:
                raise failed_hosts("fetch", opened.errors)
            hosts, dirs = [h for h, _ in pairs], [d for _, d in pairs]
            mirrors = host_mirrors(hosts, opened.values, dirs, run.local_dir)
            yield SshMirroring(run, list(mirrors.values()))
        finally:
            close_all(opened.values)


@dataclass
class SshMirroring:
    run: Run
    mirrors: list[Mirror]

    def sync(self) -> None:
        out, timeout = self.run.out, self.run.contact_timeout

        def one(m: Mirror) -> int:
            try:
                return with_contact(m.sync, _prefix(m.shell.host), timeout, _warn(out))
            except LocalWriteError:
                return 0  # kept in m.disk_error: reported by disk_errors

        synced = HostResults.run(self.mirrors, one, host=lambda m: m.shell.host)
        for m in self.mirrors:
            for refused in m.take_refused():
                out.line(f"WARNING: {_prefix(m.shell.host)} refused {refused}")
        if synced.errors:
            raise failed_hosts("fetch", synced.errors)

    def disk_errors(self) -> list[str]:
        return [str(m.disk_error) for m in self.mirrors if m.disk_error is not None]

    def summary(self) -> str:
        total = sum(m.bytes_received for m in self.mirrors)
        return f"fetched {total} bytes from {len(self.mirrors)} host(s) into {self.run.local_dir}"


BACKEND = SshBackend()
