"""The commands behind `fab check | deploy | train | status | stop | fetch | export`.

Each checks its options, finds the backend that runs the hosts (launcher/registry.py: from
the hosts file for a new run, from cluster.json for an existing one) and talks to it only
through launcher/backend.py; the run's record is built, shown and closed here, the same for
every backend. Errors a user can fix are UserErrors: one message and an exit code.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from launcher import commands, registry
from launcher.backend import Backend, Launch, Run
from launcher.contact import DEFAULT_CONTACT_TIMEOUT, QUICK_CONTACT_TIMEOUT
from launcher.deploy import (
    PROJECT_ROOT,
    deploy_code,
    deploy_venv,
    file_sha256,
    install_requirements,
    stage_file,
    tree_archive,
    tree_hash,
)
from launcher.display import Output, ago
from launcher.errors import UserError, failed_hosts
from launcher.hosts import Host, load_hosts
from launcher.options import TrainOptions
from launcher.program import (
    PROGRAM_KEY,
    Program,
    ProgramError,
    build_program,
    describe,
    program_record,
)
from launcher.record import close_record, mark_stopped, new_record, open_run
from launcher.remote import open_shell
from launcher.results import HostResults
from launcher.settings import Settings
from runformat import LAUNCHER_LOG, ClusterRecord, new_run_id


def backend_of_hosts(settings: Settings, hosts: Sequence[Host]) -> Backend:
    """The backend a hosts file asks for: its first line's scheduler= (ssh when none)."""
    name = hosts[0].scheduler
    for other in hosts[1:]:
        if other.scheduler != name:
            raise UserError(
                f"{settings.hosts_file} line {other.line}: scheduler={other.scheduler}, but line "
                f"{hosts[0].line} has scheduler={name}: one run has one scheduler"
            )
    where = f"{settings.hosts_file} line {hosts[0].line}"
    return _load(name, f"{where}: scheduler={name}: cannot load its backend")


def backend_of_run(local_dir: Path, cluster: ClusterRecord) -> Backend:
    """The backend that started a run, from its record."""
    name = cluster.scheduler or registry.DEFAULT
    return _load(
        name, f"{local_dir}: the run was started by backend {name!r}, which cannot be loaded"
    )


def _load(name: str, failure: str) -> Backend:
    """The registered backend `name`; a UserError starting with `failure` when there is none."""
    try:
        return registry.load(name)  # type: ignore[no-any-return]
    except (KeyError, ImportError, AttributeError) as exc:
        raise UserError(f"{failure} ({exc}); registered: {', '.join(registry.names())}") from None


def report_each(out: Output, results: HostResults[Any, str], what: str) -> None:
    """One line per host that succeeded; then one error naming every host that failed."""
    for _, value in results.succeeded:
        out.line(value)
    if results.errors:
        raise failed_hosts(what, results.errors)


def check(settings: Settings, out: Output) -> int:
    """Preflight every host at once, change nothing, print what was found."""
    hosts = load_hosts(settings.hosts_file)
    return backend_of_hosts(settings, hosts).check(settings, out, hosts)


def deploy(
    settings: Settings,
    out: Output,
    venv: bool = False,
    mnist: str | None = None,
    requirements: str | None = None,
) -> int:
    """Ship trainer/ and runformat/ to every SSH host at once (skipped where unchanged);
    optionally a venv (with the user's own requirements too) and data."""
    user_reqs = _requirements(requirements, venv)
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
            if user_reqs is not None and requirements is not None:
                done = install_requirements(shell, workdir, requirements, user_reqs)
                parts.append(f"{requirements} {done}")
            if mnist_path is not None:
                staged = stage_file(shell, mnist_path, f"{workdir}/data/mnist.npz", mnist_sha)
                parts.append(f"mnist.npz {staged.action}")
            return f"[{host.index} {host.label}] " + ", ".join(parts)
        finally:
            shell.close()

    report_each(out, HostResults.run(remote, one), "deploy")
    out.line(f"deployed to {len(remote)} host(s) in {time.monotonic() - started:.1f} s")
    return 0


def _requirements(path: str | None, venv: bool) -> bytes | None:
    """The bytes of --requirements FILE, read before any host is touched."""
    if path is None:
        return None
    if not venv:
        raise UserError(f"--requirements {path}: installs into the hosts' venv; add --venv", 2)
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise UserError(f"--requirements {path}: cannot read: {exc.strerror or exc}", 2) from None


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


def program_of(settings: Settings, options: TrainOptions) -> Program:
    """What the workers run (the trainer, or --script), checked before any host is touched."""
    max_restarts = options.watch.max_restarts
    if max_restarts < 0:
        raise UserError(f"--max-restarts {max_restarts}: expected 0 or more", 2)
    try:
        return build_program(
            options.script,
            dict(options.trainer),
            options.extra_args,
            max_restarts,
            options.folder,
            runs_dir=Path(os.path.abspath(settings.runs_dir)),
        )
    except ProgramError as exc:
        raise UserError(str(exc), 2) from None


def train(settings: Settings, out: Output, options: TrainOptions) -> int:
    """Preflight, then start every worker at once and watch the job to its end."""
    hosts = load_hosts(settings.hosts_file)
    env = _worker_env(options.env)
    program = program_of(settings, options)
    backend = backend_of_hosts(settings, hosts)
    run_id = new_run_id()
    local_dir = (settings.runs_dir / run_id).resolve()
    launch = Launch(run_id, local_dir, program, env, tree_hash(), options)
    with backend.reserve(settings, out, hosts, launch) as reserved:
        local_dir.mkdir(parents=True, exist_ok=False)
        out.open_log(local_dir / LAUNCHER_LOG)
        try:
            record = new_record(
                settings, run_id, backend.name, reserved.hosts, reserved.tf_config_cluster,
                options, program.args, list(env), reserved.details,
            )  # fmt: skip
            record[PROGRAM_KEY] = program_record(program)
            out.info(f"run {run_id}: {reserved.summary}, run directory {local_dir}")
            for line in reserved.describe():
                out.info(line)
            out.info(describe(program))
            if env:
                out.info(f"environment passed to workers: {', '.join(sorted(env))} (values hidden)")
            return reserved.run(record, out)
        finally:
            out.close()


def export_slurm(settings: Settings, out: Output, options: TrainOptions) -> int:
    """Print the sbatch script `fab train` would submit for the hosts file's Slurm line."""
    hosts = load_hosts(settings.hosts_file)
    program = program_of(settings, options)
    slurm = registry.load("slurm")
    out.stream.write(slurm.export(hosts[0], program, tree_hash()))
    return 0


def _open(settings: Settings, out: Output, run: str | None, timeout: float) -> tuple[Backend, Run]:
    local_dir, cluster = open_run(settings, run)
    return backend_of_run(local_dir, cluster), Run(settings, out, local_dir, cluster, timeout)


def _close_if_ended(
    backend: Backend, run: Run, ending: dict[str, Any] | None, why: str, release: bool = True
) -> Run:
    """Write how the run ended when its launcher is gone and the backend says it ended, then
    let go of what it held; the run as it is now."""
    if ending is None:
        return run
    record = close_record(run.local_dir, run.record.to_dict(), ending, run.out, why)
    run = dataclasses.replace(run, record=record)
    if release:
        backend.release(run)
    return run


def status(
    settings: Settings,
    out: Output,
    run: str | None = None,
    contact_timeout: float = QUICK_CONTACT_TIMEOUT,
) -> int:
    """Per-worker state, step, last update and whether its process lives; a run whose
    launcher died is recorded as ended once every worker has ended."""
    backend, r = _open(settings, out, run, contact_timeout)
    look = backend.look(r)
    r = _close_if_ended(backend, r, look.ending, look.ended_because)
    cluster, now = r.record, time.time()
    out.line(f"run {cluster.run_id}: {cluster.state}  ({r.local_dir})")
    out.lines(look.notes)
    rows = []
    for row in look.rows:
        upd = row.status.get("updated") if isinstance(row.status, dict) else None
        entry = cluster.host(row.index)
        offset = entry.clock_offset if entry is not None else None
        full = (
            entry is not None and (entry.disk or {}).get("full") is True and row.process == "alive"
        )
        disk = "disk full" if full else row.disk
        rows.append(dataclasses.replace(row, updated=ago(now, upd, offset), disk=disk))
    out.show_table(rows)
    out.lines(look.problems)
    for attempt in cluster.earlier_failures:
        assert attempt.failure is not None
        out.line(
            f"restarted after attempt {attempt.number}: {attempt.failure.who} "
            f"{attempt.failure.reason}"
        )
    if cluster.failure is not None:
        out.line(f"failure: {cluster.failure.who} {cluster.failure.reason}")
    return 0


def stop(
    settings: Settings,
    out: Output,
    run: str | None = None,
    grace: float = 5.0,
    contact_timeout: float = QUICK_CONTACT_TIMEOUT,
) -> int:
    """Stop every worker of a run, then let go of what it holds. A run whose workers all
    ended is recorded as finished or failed, never as stopped."""
    backend, r = _open(settings, out, run, contact_timeout)
    look = backend.look(r)
    if look.ending is not None:
        r = _close_if_ended(backend, r, look.ending, look.ended_because, release=False)
    else:
        mark_stopped(r.local_dir, r.record, out)
    said = backend.stop(r, look, grace)
    backend.release(r)
    out.lines(said)
    return 0


def fetch(
    settings: Settings,
    out: Output,
    run: str | None = None,
    follow: bool = False,
    interval: float = 2.0,
    contact_timeout: float | None = None,
) -> int:
    """Mirror the hosts' copies of a run into the local run directory, once or until every
    worker has ended; a run whose launcher died is recorded as ended once it has."""
    timeout = contact_timeout or (DEFAULT_CONTACT_TIMEOUT if follow else QUICK_CONTACT_TIMEOUT)
    backend, r = _open(settings, out, run, timeout)
    with backend.mirror(r) as mirror:
        while True:
            # The backend's word first: files mirrored after it are at least as new.
            look = backend.look(r)
            mirror.sync()
            if not follow or not look.running:
                break
            time.sleep(interval)
        full = mirror.disk_errors()
        if full:
            raise UserError("fetch incomplete: " + "; ".join(full) + "; make room and fetch again")
        _close_if_ended(backend, r, look.ending, look.ended_because)
        out.line(mirror.summary())
    return 0
