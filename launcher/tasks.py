"""The commands behind `fab check | deploy | train | status | stop | fetch`.

Each acts on all hosts at once (threads), gathers per-host failures into one message that
names every failing host, and returns an exit code; fabfile.py only maps options onto these.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from launcher import commands
from launcher.contact import DEFAULT_CONTACT_TIMEOUT, QUICK_CONTACT_TIMEOUT, with_contact
from launcher.deploy import (
    PROJECT_ROOT,
    deploy_code,
    deploy_venv,
    file_sha256,
    stage_file,
    tree_archive,
    tree_hash,
)
from launcher.display import Output, WorkerRow, read_status
from launcher.hosts import Host, HostsFileError, load_hosts, parse_line
from launcher.job import Job, launcher_identity
from launcher.netcheck import Peer, check_network, clock_cell, clock_warning
from launcher.options import TrainOptions, Verbosity, arg_value, int_or_none
from launcher.probe import ProbeResult, host_problems, probe_host
from launcher.record import finished_record
from launcher.remote import HostError, HostShell, SshSettings, open_shell
from launcher.results import HostResults
from launcher.runs import find_run, read_cluster
from launcher.sync import LocalWriteError, Mirror
from launcher.tf_config import cluster_spec, tf_config_json
from launcher.worker import Poll, ProcessState, Worker
from runformat import (
    ACTIVE_RUN_STATES,
    CLUSTER_JSON,
    LAUNCHER_LOG,
    MAX_STATUS_BYTES,
    RUNS_DIR,
    STATUS_JSON,
    ClusterRecord,
    HostEntry,
    cluster_from_dict,
    new_run_id,
    parse_json_object,
    status_path,
    status_rel,
    write_json_atomic,
)

T = TypeVar("T")


class UserError(Exception):
    """A failure to report as a message and an exit code, without a traceback."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Settings:
    hosts_file: Path
    ssh: SshSettings
    runs_dir: Path = Path(RUNS_DIR)


def failed_hosts(what: str, errors: Sequence[HostError]) -> UserError:
    lines = "\n".join(f"  {e}" for e in errors)
    return UserError(f"{what} failed on {len(errors)} host(s):\n{lines}")


def report_each(out: Output, results: HostResults[Any, str], what: str) -> None:
    """One line per host that succeeded; then one error naming every host that failed."""
    for _, value in results.succeeded:
        out.line(value)
    if results.errors:
        raise failed_hosts(what, results.errors)


def connect_all(hosts: Sequence[Host], ssh: SshSettings) -> list[HostShell]:
    """Open every host at once; any failure closes the others and names every failing host."""
    results = HostResults.run(hosts, lambda h: open_shell(h, ssh))
    if results.errors:
        close_all(results.values)
        raise failed_hosts("connecting", results.errors)
    return results.values


def close_all(shells: Sequence[HostShell]) -> None:
    for s in shells:
        s.close()


def probe_all(shells: Sequence[HostShell], code: str) -> tuple[list[ProbeResult], list[HostError]]:
    results = HostResults.run(shells, lambda s: probe_host(s, code))
    return results.values, results.errors


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def check(settings: Settings, out: Output) -> int:
    """Preflight every host at once, change nothing, print a table; non-zero names the bad."""
    hosts = load_hosts(settings.hosts_file)
    if hosts[0].slurm is not None:
        from launcher import slurm_job

        return slurm_job.check(settings, out, hosts[0])
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


def deploy(settings: Settings, out: Output, venv: bool = False, mnist: str | None = None) -> int:
    """Ship trainer/ and runformat/ to every SSH host at once (skipped where unchanged);
    optionally a venv and data."""
    hosts = load_hosts(settings.hosts_file)
    remote = [h for h in hosts if not h.local]
    for h in hosts:
        if h.local:
            out.line(f"[{h.index} {h.label}] local: runs the trainer from {PROJECT_ROOT}")
    if not remote:
        return 0
    mnist_path = Path(mnist) if mnist else None
    if mnist_path is not None and not mnist_path.is_file():
        raise UserError(f"--mnist {mnist}: no such file")
    mnist_sha = file_sha256(mnist_path) if mnist_path else ""
    code = tree_hash()
    archive = tree_archive()
    started = time.monotonic()

    def one(host: Host) -> str:
        shell = open_shell(host, settings.ssh)
        try:
            parts = []
            res, workdir = deploy_code(shell, host.workdir, code, archive)
            parts.append(f"code {code} {res.action} ({res.sent_bytes} bytes)")
            if venv:
                python = host.python or "python3"
                parts.append(f"venv {deploy_venv(shell, workdir, python, code)}")
            if mnist_path is not None:
                staged = stage_file(shell, mnist_path, f"{workdir}/data/mnist.npz", mnist_sha)
                parts.append(f"mnist.npz {staged.action}")
            return f"[{host.index} {host.label}] " + ", ".join(parts)
        finally:
            shell.close()

    report_each(out, HostResults.run(remote, one), "deploy")
    out.line(f"deployed to {len(remote)} host(s) in {time.monotonic() - started:.1f} s")
    return 0


def _worker_env(names: Sequence[str]) -> dict[str, str]:
    """`NAME` takes the value from this environment, `NAME=VALUE` sets it; never printed."""
    env: dict[str, str] = {}
    for item in names:
        name, sep, value = item.partition("=")
        try:
            commands.check_env_name(name)
        except ValueError as exc:
            raise UserError(f"--env {name!r}: {exc}") from None
        if not sep:
            if name not in os.environ:
                raise UserError(f"--env {name}: {name} is not set in this environment")
            value = os.environ[name]
        env[name] = value
    return env


def host_entry(host: Host, python: str, run_dir: str) -> HostEntry:
    """A host as cluster.json records it; `line` lets status/stop/fetch rebuild it."""
    spec = " ".join([host.name, *(f"{k}={v}" for k, v in host.options.items() if k != "user")])
    if "user" in host.options and "@" not in host.name:
        spec += f" user={host.options['user']}"
    return HostEntry(
        index=host.index,
        role=host.role,
        name=host.label,
        ssh=host.ssh_target,
        local=host.local,
        addr=host.addr,
        tf_port=host.tf_port,
        workdir=host.workdir,
        python=python,
        run_dir=run_dir,
        line=spec,
    )


def _locks(
    shells: Sequence[HostShell], workdirs: Sequence[str], run_id: str, run_dirs: Sequence[str]
) -> list[str]:
    """Take every host's tf_port lock; returns the refusals (empty when all were taken)."""

    def one(i: int) -> str:
        h = shells[i].host
        cmd = commands.lock_command(workdirs[i], h.tf_port, run_id, run_dirs[i], h.index)
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


def train(settings: Settings, out: Output, options: TrainOptions) -> int:
    """Preflight, then start every worker at once and watch the job to its end."""
    hosts = load_hosts(settings.hosts_file)
    user_env = _worker_env(options.env)
    max_restarts = options.watch.max_restarts
    if max_restarts < 0:
        raise UserError(f"--max-restarts {max_restarts}: expected 0 or more", 2)
    args = commands.trainer_args(dict(options.trainer)) + list(options.extra_args)
    if max_restarts and "--backup" not in args:
        args.append("--backup")  # a restarted job resumes from its last completed epoch
    try:
        commands.check_trainer_args(args)  # before any host is touched
    except ValueError as exc:
        raise UserError(f"trainer options: {exc}", 2) from None
    code = tree_hash()
    if hosts[0].slurm is not None:
        from launcher import slurm_job  # it builds on this module

        return slurm_job.train(settings, out, hosts[0], args, user_env, code, options.watch)
    shells = connect_all(hosts, settings.ssh)
    try:
        probes, errors = probe_all(shells, code)
        if errors:
            raise failed_hosts("preflight", errors)
        run_id = new_run_id()
        local_dir = (settings.runs_dir / run_id).resolve()
        workdirs = [str(p.facts["workdir"]) for p in probes]
        run_dirs = [
            str(local_dir) if p.host.local else f"{wd}/runs/{run_id}"
            for p, wd in zip(probes, workdirs, strict=True)
        ]
        # Locks first: "another run holds this port" says more than "the port is in use".
        refusals = _locks(shells, workdirs, run_id, run_dirs)
        everyone = [p.facts for p in probes]
        problems = [
            f"worker {p.host.index} ({p.host.label}): {msg}"
            for p in probes
            for msg in host_problems(p, everyone, p.host.local)
        ]
        if not refusals and not problems:
            # Last, so that nothing holds a tf_port: every worker's host listens on its own.
            peers = [Peer(s, p.python) for s, p in zip(shells, probes, strict=True)]
            problems = check_network(peers, hosts).problems
        if refusals or problems:
            _unlock(shells, workdirs, run_id)
            if refusals:
                raise UserError("refusing to start:\n" + "\n".join(f"  {m}" for m in refusals))
            raise UserError("preflight failed:\n" + "\n".join(f"  {m}" for m in problems))
        launch = Launch(hosts, shells, probes, run_id, local_dir, run_dirs, args, user_env, code)
        try:
            return _run(settings, out, launch, options)
        finally:
            _unlock(shells, workdirs, run_id)
    finally:
        close_all(shells)


@dataclass(frozen=True)
class Launch:
    """A job about to start: its hosts (connected and probed), run id and directories, the
    trainer's arguments, the variables for every worker, and the code version to run."""

    hosts: Sequence[Host]
    shells: Sequence[HostShell]
    probes: Sequence[ProbeResult]
    run_id: str
    local_dir: Path
    run_dirs: Sequence[str]
    args: list[str]
    user_env: dict[str, str]
    code: str


def _workers(launch: Launch, verbosity: Verbosity) -> list[Worker]:
    hosts, args, local_dir = launch.hosts, launch.args, launch.local_dir
    mirrors = host_mirrors(hosts, launch.shells, launch.run_dirs, local_dir)
    workers = []
    for host, shell, probe, run_dir in zip(
        hosts, launch.shells, launch.probes, launch.run_dirs, strict=True
    ):
        env = {"PYTHONUNBUFFERED": "1"}
        if verbosity is not Verbosity.VERBOSE:
            env["TF_CPP_MIN_LOG_LEVEL"] = "2"  # TensorFlow's info and warnings stay out
        tfc = tf_config_json(hosts, host.index)
        if tfc is not None:
            env["TF_CONFIG"] = tfc
        env.update(launch.user_env)
        host_args = list(args)
        mnist = probe.facts.get("mnist")
        if not host.local and "--data" not in args and mnist:
            host_args += ["--data", str(mnist)]
        workdir = str(probe.facts["workdir"])
        workers.append(
            Worker(
                host=host,
                shell=shell,
                python=probe.python,
                code_dir=str(PROJECT_ROOT) if host.local else f"{workdir}/code/{launch.code}",
                run_dir=run_dir,
                local_dir=local_dir,
                trainer_args=host_args,
                env=env,
                mirror=mirrors.get(host.index),
            )
        )
    return workers


def _run(settings: Settings, out: Output, launch: Launch, options: TrainOptions) -> int:
    local_dir, args, user_env, hosts = launch.local_dir, launch.args, launch.user_env, launch.hosts
    local_dir.mkdir(parents=True, exist_ok=False)
    out.open_log(local_dir / LAUNCHER_LOG)
    workers = _workers(launch, options.verbosity)
    cluster = ClusterRecord(
        run_id=launch.run_id,
        created=time.time(),
        state="starting",
        hosts_file=str(settings.hosts_file.resolve()),
        hosts=tuple(host_entry(w.host, w.python, w.run_dir) for w in workers),
        tf_config_cluster=cluster_spec(hosts),
        trainer_args=tuple(args),
        dataset=arg_value(args, "--dataset"),
        epochs=int_or_none(arg_value(args, "--epochs")),
        max_restarts=options.watch.max_restarts,
        env=tuple(sorted(user_env)),
        launcher=launcher_identity(),
    ).to_dict()
    job = Job(workers, local_dir, cluster, out, options.watch)
    job.save()
    out.info(f"run {launch.run_id}: {len(hosts)} worker(s), run directory {local_dir}")
    for w in workers:
        where = "local process" if w.host.local else f"ssh {w.host.ssh_target}"
        if not w.host.local:
            where += f", its {w.run_dir} mirrored here"
        out.info(f"{w.prefix} {w.host.role} {w.host.tf_address} ({where}) {w.python}")
    out.info(f"trainer options: {shlex.join(args) or '(defaults)'}")
    if user_env:
        out.info(f"environment passed to workers: {', '.join(sorted(user_env))} (values hidden)")
    try:
        code_ = job.run()
    finally:
        out.close()
    return code_


def export_slurm(
    settings: Settings,
    out: Output,
    trainer_options: dict[str, object],
    extra_args: Sequence[str] = (),
) -> int:
    """Print the sbatch script `fab train` would submit for the hosts file's Slurm line."""
    from launcher import slurm_job

    hosts = load_hosts(settings.hosts_file)
    args = commands.trainer_args(trainer_options) + list(extra_args)
    out.stream.write(slurm_job.export(hosts[0], args, tree_hash()))
    return 0


def host_mirrors(
    hosts: Sequence[Host], shells: Sequence[HostShell], run_dirs: Sequence[str], local_dir: Path
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


def hosts_of_run(cluster: ClusterRecord) -> list[tuple[Host, str]]:
    """Rebuild the run's hosts and their run directories from cluster.json (the run is defined
    by it, not by today's hosts file). A host entry without its hosts-file `line` (an older
    run) is rebuilt from its name, address and port."""
    out = []
    for entry in cluster.hosts:
        spec = entry.line or _line_of(entry)
        try:
            host = parse_line(CLUSTER_JSON, 0, entry.index, spec)
        except HostsFileError as exc:
            raise UserError(f"{CLUSTER_JSON}: host {entry.index}: {exc.reason}") from None
        workdir = entry.workdir or host.workdir
        out.append((host, entry.run_dir or f"{workdir}/runs/{cluster.run_id}"))
    return out


def _line_of(entry: HostEntry) -> str:
    """A hosts-file line for a host entry that did not record one."""
    options = {"addr": entry.addr, "tf_port": entry.tf_port, "workdir": entry.workdir}
    if entry.ssh and not entry.local:
        target, _, port = entry.ssh.rpartition(":")
        options["port"] = port if target and port.isdigit() else None
    words = [entry.name] + [f"{key}={value}" for key, value in options.items() if value]
    return " ".join(words)


def _open_run(settings: Settings, run: str | None) -> tuple[Path, ClusterRecord]:
    try:
        local_dir = find_run(settings.runs_dir, run)
        return local_dir, read_cluster(local_dir)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _poll(shell: HostShell, run_dir: str, index: int) -> Poll:
    return Poll.parse(shell.run(commands.poll_command(run_dir, index), timeout=30).stdout)


def _prefix(host: Host) -> str:
    return f"[{host.index} {host.label}]"


def _warn(out: Output) -> Callable[[str], None]:
    return lambda text: out.line(f"WARNING: {text}")


def _on_host(
    host: Host, settings: Settings, out: Output, timeout: float, action: Callable[[HostShell], T]
) -> T:
    """Connect, do `action`, close; while the host cannot be reached, retry with back-off for
    up to `timeout` seconds (a network blip must not make status, stop or fetch fail)."""

    def once() -> T:
        shell = open_shell(host, settings.ssh)
        try:
            return action(shell)
        finally:
            shell.close()

    return with_contact(once, _prefix(host), timeout, _warn(out))


def _write_record(local_dir: Path, data: dict[str, Any], out: Output) -> bool:
    """Write cluster.json; on a full or failing disk say so, and go on (stop must still stop)."""
    try:
        write_json_atomic(local_dir / CLUSTER_JSON, data)
    except OSError as exc:
        out.line(
            f"WARNING: cannot write {local_dir / CLUSTER_JSON}: {exc.strerror or exc}; "
            "the run's record is not updated"
        )
        return False
    return True


def mark_stopped(local_dir: Path, cluster: ClusterRecord, out: Output) -> None:
    """Record an open run as stopped by the user (`fab stop`); a closed record stays as it
    is. Written before the workers are stopped, so a launcher still watching ends it so."""
    if cluster.state in ACTIVE_RUN_STATES:
        stopped = dataclasses.replace(cluster, state="stopped", finished=time.time())
        _write_record(local_dir, stopped.to_dict(), out)


def _finish_record(
    local_dir: Path, cluster: ClusterRecord, polls: dict[int, Poll], out: Output
) -> ClusterRecord | None:
    """Once every worker has an exit code and the launcher is gone, record how the run ended;
    the record as it is now, or None when it stays open."""
    codes = {i: p.exit_code for i, p in polls.items() if p.state is ProcessState.EXITED}
    data = cluster.to_dict()
    changes = finished_record(data, codes, local_dir) if len(codes) == len(polls) else None
    if changes is None:
        return None
    return close_record(local_dir, data, changes, out, "every worker has ended")


def close_record(
    local_dir: Path, data: dict[str, Any], changes: dict[str, Any], out: Output, why: str
) -> ClusterRecord:
    """Write the ending of a run whose launcher is gone (record.ending), say so, and return
    the record as it is now."""
    data.update(changes)
    if _write_record(local_dir, data, out):
        out.line(f"{why} and its launcher is gone: the run is {changes['state']} now")
    return cluster_from_dict(data, [])


def _release_locks(
    cluster: ClusterRecord, pairs: Sequence[tuple[Host, str]], settings: Settings, out: Output
) -> None:
    """Release the run's tf_port locks; a host only drops a lock once its worker is dead."""

    def one(pair: tuple[Host, str]) -> str:
        host, _ = pair
        entry = cluster.host(host.index)
        workdir = (entry.workdir if entry else None) or host.workdir
        cmd = commands.unlock_command(workdir, host.tf_port, str(cluster.run_id))
        return _on_host(host, settings, out, QUICK_CONTACT_TIMEOUT, lambda s: s.run(cmd, 30).stdout)

    for (host, _), said in HostResults.run(pairs, one, host=lambda pair: pair[0]):
        if isinstance(said, HostError):
            out.line(f"WARNING: {_prefix(host)} could not release its tf_port lock: {said}")
        elif said.strip() == "kept":
            out.line(f"{_prefix(host)} keeps its tf_port lock: a process of the worker lives")


def _polls(
    pairs: Sequence[tuple[Host, str]], settings: Settings, out: Output, timeout: float
) -> dict[int, Poll]:
    """Every worker's poll that could be had, by index."""
    results = HostResults.run(
        pairs,
        lambda pair: _on_host(
            pair[0], settings, out, timeout, lambda s: _poll(s, pair[1], pair[0].index)
        ),
        host=lambda pair: pair[0],
    )
    return {host.index: poll for (host, _), poll in results.succeeded}


def status(
    settings: Settings,
    out: Output,
    run: str | None = None,
    contact_timeout: float = QUICK_CONTACT_TIMEOUT,
) -> int:
    """Per-worker state, step, last update and whether its process group is alive; a run
    whose launcher died is recorded as ended once every worker has ended."""
    local_dir, cluster = _open_run(settings, run)
    if cluster.scheduler == "slurm":
        from launcher import slurm_job

        return slurm_job.status(settings, out, local_dir, cluster)
    pairs = hosts_of_run(cluster)

    def look(shell: HostShell, host: Host, run_dir: str) -> tuple[Poll, dict[str, Any] | None]:
        alive = _poll(shell, run_dir, host.index)
        try:
            raw = shell.read_range(f"{run_dir}/{status_rel(host.index)}", 0, MAX_STATUS_BYTES)
        except OSError:
            return alive, None
        return alive, parse_json_object(raw, [], STATUS_JSON)

    results = HostResults.run(
        pairs,
        lambda pair: _on_host(
            pair[0], settings, out, contact_timeout, lambda s: look(s, pair[0], pair[1])
        ),
        host=lambda pair: pair[0],
    )
    polls = {host.index: r[0] for (host, _), r in results.succeeded}
    if len(polls) == len(pairs) and (done := _finish_record(local_dir, cluster, polls, out)):
        cluster = done
        _release_locks(cluster, pairs, settings, out)
    out.line(f"run {cluster.run_id}: {cluster.state}  ({local_dir})")
    now = time.time()
    rows = []
    unreachable = []
    for (host, _), r in results:
        st = read_status(status_path(local_dir, host.index))
        if isinstance(r, HostError):
            rows.append(WorkerRow(host.index, host.label, st, process="unreachable"))
            unreachable.append(f"worker {host.index} ({host.label}) unreachable: {r.message}")
            continue
        poll, remote = r
        st = remote if remote is not None else st
        upd = st.get("updated") if isinstance(st, dict) else None
        ago = f"{now - upd:.0f} s ago" if isinstance(upd, (int, float)) else "-"
        rows.append(WorkerRow(host.index, host.label, st, process=poll.describe(), updated=ago))
    out.show_table(rows)
    out.lines(unreachable)
    for attempt in cluster.earlier_failures:
        earlier = attempt.failure
        assert earlier is not None
        out.line(f"restarted after attempt {attempt.number}: {earlier.who} {earlier.reason}")
    if cluster.failure is not None:
        failure = cluster.failure
        out.line(f"failure: {failure.who} {failure.reason}")
    return 0


def stop(
    settings: Settings,
    out: Output,
    run: str | None = None,
    grace: float = 5.0,
    contact_timeout: float = QUICK_CONTACT_TIMEOUT,
) -> int:
    """Stop every worker of a run (TERM, CONT, grace, KILL of each process group, so frozen
    ones too), then release the run's locks. A run whose workers all ended is recorded as
    finished or failed, never as stopped."""
    local_dir, cluster = _open_run(settings, run)
    if cluster.scheduler == "slurm":
        from launcher import slurm_job

        return slurm_job.stop(settings, out, local_dir, cluster, grace)
    pairs = hosts_of_run(cluster)
    before = _polls(pairs, settings, out, contact_timeout)
    ended = len(before) == len(pairs) and _finish_record(local_dir, cluster, before, out)
    if not ended:
        mark_stopped(local_dir, cluster, out)

    def one(pair: tuple[Host, str]) -> str:
        host, run_dir = pair
        poll = before.get(host.index)
        if poll is not None and poll.state is ProcessState.EXITED:
            return f"{_prefix(host)} not running ({poll.describe()})"
        cmd = commands.stop_command(run_dir, host.index, grace)
        said = _on_host(
            host, settings, out, contact_timeout, lambda s: s.run(cmd, timeout=grace + 30).stdout
        )
        was = poll.describe() if poll is not None else "unknown"
        if said.strip() == "stopped":
            return f"{_prefix(host)} stopped (was {was})"
        return f"{_prefix(host)} not running ({was})"

    results = HostResults.run(pairs, one, host=lambda pair: pair[0])
    _release_locks(cluster, pairs, settings, out)
    report_each(out, results, "stop")
    return 0


def fetch(
    settings: Settings,
    out: Output,
    run: str | None = None,
    follow: bool = False,
    interval: float = 2.0,
    contact_timeout: float | None = None,
) -> int:
    """Mirror every SSH host's copy of a run into the local run directory, once or following;
    a run whose launcher died is recorded as ended once every worker has ended."""
    local_dir, cluster = _open_run(settings, run)
    if cluster.scheduler == "slurm":
        from launcher import slurm_job

        return slurm_job.fetch(settings, out, local_dir, cluster, follow, interval)
    timeout = contact_timeout or (DEFAULT_CONTACT_TIMEOUT if follow else QUICK_CONTACT_TIMEOUT)
    everyone = hosts_of_run(cluster)
    pairs = [(h, run_dir) for h, run_dir in everyone if not h.local]
    opened = HostResults.run(
        [h for h, _ in pairs],
        lambda h: with_contact(
            lambda: open_shell(h, settings.ssh), _prefix(h), timeout, _warn(out)
        ),
    )
    shells = opened.values
    try:
        if opened.errors:
            raise failed_hosts("fetch", opened.errors)
        run_dirs = [run_dir for _, run_dir in pairs]
        mirrors = list(host_mirrors([h for h, _ in pairs], shells, run_dirs, local_dir).values())

        def sync(m: Mirror) -> int:
            try:
                return with_contact(m.sync, _prefix(m.shell.host), timeout, _warn(out))
            except LocalWriteError:
                return 0  # kept in m.disk_error: reported below

        while True:
            synced = HostResults.run(mirrors, sync, host=lambda m: m.shell.host)
            for m in mirrors:
                for refused in m.take_refused():
                    out.line(f"WARNING: {_prefix(m.shell.host)} refused {refused}")
            if synced.errors:
                raise failed_hosts("fetch", synced.errors)
            polls = _polls(everyone, settings, out, timeout)
            running = (ProcessState.ALIVE, ProcessState.PENDING)
            done = len(polls) == len(everyone) and all(
                p.state not in running for p in polls.values()
            )
            if not follow or done:
                break
            time.sleep(interval)
        if done and follow:
            HostResults.run(mirrors, sync, host=lambda m: m.shell.host)
        full = [str(m.disk_error) for m in mirrors if m.disk_error is not None]
        if full:
            raise UserError("fetch incomplete: " + "; ".join(full) + "; make room and fetch again")
        record = _finish_record(local_dir, cluster, polls, out) if done else None
        if record is not None:
            _release_locks(record, everyone, settings, out)
        total = sum(m.bytes_received for m in mirrors)
        out.line(f"fetched {total} bytes from {len(mirrors)} host(s) into {local_dir}")
    finally:
        close_all(shells)
    return 0
