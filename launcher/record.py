"""The run's record (cluster.json): built once for every backend, marked stopped, and
finished when its launcher is no longer there to do it.

The launcher writes the final state when it sees the job end. If it was killed (or its
machine slept through the end), the workers still finish on their own and leave their exit
codes on their hosts (a Slurm job's end is Slurm's word and srun's report): `fab status`,
`fab fetch` and `fab stop` then finish the record from those, and `fab stop` never turns a
run that ended into a stopped one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from launcher import registry
from launcher.display import Output, log_tail
from launcher.errors import UserError
from launcher.exits import job_exit_code
from launcher.failure import WorkerView, exit_failure
from launcher.hostdisk import HostDisk, disk_change
from launcher.hosts import Host, HostsFileError, parse_line
from launcher.options import TrainOptions, arg_value, int_or_none
from launcher.runs import find_run, read_cluster
from launcher.settings import Settings
from launcher.worker import ProcessState
from runformat import (
    ACTIVE_RUN_STATES,
    CLUSTER_JSON,
    ClusterRecord,
    HostEntry,
    cluster_from_dict,
    worker_log_path,
    write_json_atomic,
)


def launcher_identity() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def run_dir_for(host: Host, workdir: str, run_id: str, local_dir: Path) -> str:
    """Where a host's workers write the run: straight into the local run directory on this
    machine, else `<workdir>/runs/<run-id>` on the host."""
    return str(local_dir) if host.local else f"{workdir}/runs/{run_id}"


def host_entry(
    host: Host, python: str, run_dir: str, clock_offset: float | None = None
) -> HostEntry:
    """A host as cluster.json records it; `line` lets status/stop/fetch rebuild it;
    `clock_offset` (seconds its clock is ahead, measured by the preflight) puts its times
    on ours."""
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
        clock_offset=None if clock_offset is None else round(clock_offset, 3),
    )


def new_record(
    settings: Settings,
    run_id: str,
    scheduler: str,
    hosts: Sequence[HostEntry],
    tf_config_cluster: dict[str, Any],
    options: TrainOptions,
    args: Sequence[str],
    env_names: Sequence[str],
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The record of a run about to start, whatever backend runs it."""
    return ClusterRecord(
        run_id=run_id,
        created=time.time(),
        state="starting",
        scheduler=None if scheduler == registry.DEFAULT else scheduler,
        slurm=details or {},
        hosts_file=str(settings.hosts_file.resolve()),
        hosts=tuple(hosts),
        tf_config_cluster=tf_config_cluster,
        trainer_args=tuple(args),
        dataset=arg_value(args, "--dataset"),
        epochs=int_or_none(arg_value(args, "--epochs")),
        max_restarts=options.watch.max_restarts,
        env=tuple(sorted(env_names)),
        launcher=launcher_identity(),
    ).to_dict()


def open_run(settings: Settings, run: str | None) -> tuple[Path, ClusterRecord]:
    """The named (or latest) run's directory and record."""
    try:
        local_dir = find_run(settings.runs_dir, run)
        return local_dir, read_cluster(local_dir)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def hosts_of_run(cluster: ClusterRecord, local_dir: Path) -> list[tuple[Host, str]]:
    """Rebuild the run's hosts and their run directories from cluster.json (the run is defined
    by it, not by today's hosts file). A host entry without its hosts-file `line` or run
    directory (an older run) is rebuilt from its name, address and port."""
    out = []
    for entry in cluster.hosts:
        spec = entry.line or _line_of(entry)
        try:
            host = parse_line(CLUSTER_JSON, 0, entry.index, spec)
        except HostsFileError as exc:
            raise UserError(f"{CLUSTER_JSON}: host {entry.index}: {exc.reason}") from None
        workdir = entry.workdir or host.workdir
        run_dir = entry.run_dir or run_dir_for(host, workdir, str(cluster.run_id), local_dir)
        out.append((host, run_dir))
    return out


def _line_of(entry: HostEntry) -> str:
    """A hosts-file line for a host entry that did not record one."""
    options = {"addr": entry.addr, "tf_port": entry.tf_port, "workdir": entry.workdir}
    if entry.ssh and not entry.local:
        target, _, port = entry.ssh.rpartition(":")
        options["port"] = port if target and port.isdigit() else None
    words = [entry.name] + [f"{key}={value}" for key, value in options.items() if value]
    return " ".join(words)


def stopped_by_user(local_dir: Path) -> bool:
    """`fab stop` from another terminal marks cluster.json stopped before it stops workers."""
    try:
        state = json.loads((local_dir / CLUSTER_JSON).read_text()).get("state")
    except (OSError, ValueError, AttributeError):
        return False
    return bool(state == "stopped")


def write_record(local_dir: Path, data: dict[str, Any], out: Output) -> bool:
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
        write_record(local_dir, stopped.to_dict(), out)


def close_record(
    local_dir: Path, data: dict[str, Any], changes: dict[str, Any], out: Output, why: str
) -> ClusterRecord:
    """Write the ending of a run whose launcher is gone (`ending`), say so, and return the
    record as it is now."""
    data.update(changes)
    if write_record(local_dir, data, out):
        out.line(f"{why} and its launcher is gone: the run is {changes['state']} now")
    return cluster_from_dict(data, [])


def launcher_alive(cluster: Mapping[str, Any]) -> bool:
    """True if the run's launcher still runs on this machine (it will finish the record)."""
    who = cluster.get("launcher")
    if not isinstance(who, dict) or who.get("host") != socket.gethostname():
        return False
    pid = who.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"fab" in cmdline


def may_finish(cluster: Mapping[str, Any]) -> bool:
    """True for an open record whose launcher is gone: only then may `fab status`, `fetch`
    or `stop` write how the run ended (a live launcher writes it itself)."""
    return cluster.get("state") in ACTIVE_RUN_STATES and not launcher_alive(cluster)


def ending(
    cluster: Mapping[str, Any],
    exit_codes: Mapping[int, int | None],
    failure: Mapping[str, Any] | None,
    **attempt: Any,
) -> dict[str, Any]:
    """The changes that close a record: end time, exit codes (None: not known), finished or
    failed (with `failure`), and the last attempt closed with `attempt`'s extra fields."""
    now = time.time()
    changes: dict[str, Any] = {
        "finished": now,
        "exit_codes": {str(i): c for i, c in sorted(exit_codes.items())},
        "state": "finished" if failure is None else "failed",
        "failure": None if failure is None else dict(failure),
    }
    attempts = [dict(a) for a in cluster.get("attempts") or [] if isinstance(a, dict)]
    if attempts and attempts[-1].get("ended") is None:
        attempts[-1].update(ended=now, failure=changes["failure"], **attempt)
        changes["attempts"] = attempts
    return changes


def finished_record(
    cluster: Mapping[str, Any],
    exit_codes: Mapping[int, int | None],
    local_dir: Path,
    disks: Mapping[int, HostDisk] | None = None,
) -> dict[str, Any] | None:
    """The changes that finish an open record once every worker has an exit code, or None
    (the record is closed already, a worker has none yet, or its launcher still runs).

    `disks`: each worker's run-folder disk (hostdisk.closing_disk). The failure is decided
    and worded as the live watch decides and words it (failure.exit_failure): a worker whose
    disk was full comes first and its reason puts the disk first; `hosts[i].disk` records
    what the watch would have recorded.
    """
    hosts = cluster.get("hosts") or []
    if not may_finish(cluster):
        return None
    if len(exit_codes) != len(hosts) or any(c is None for c in exit_codes.values()):
        return None
    disks = disks or {}
    failure = None
    if job_exit_code(exit_codes, len(hosts)) != 0:
        failure = _failure(hosts, exit_codes, disks, local_dir)
    changes = ending(cluster, exit_codes, failure)
    recorded = _disk_records(hosts, disks)
    if recorded is not None:
        changes["hosts"] = recorded
    return changes


def _failure(
    hosts: Sequence[Mapping[str, Any]],
    exit_codes: Mapping[int, int | None],
    disks: Mapping[int, HostDisk],
    local_dir: Path,
) -> dict[str, Any]:
    names = {h.get("index"): str(h.get("name", "?")) for h in hosts}
    views = []
    for index, code in sorted(exit_codes.items()):
        disk = disks.get(index)
        trouble = disk.message() if disk is not None and disk.full else None
        views.append(
            WorkerView(index, names.get(index, "?"), ProcessState.EXITED, code, disk=trouble)
        )
    found = exit_failure(views)
    assert found is not None, "a worker that did not exit 0 is a failure"
    found.log_tail = log_tail(worker_log_path(local_dir, found.index))
    return found.as_dict()


def _disk_records(
    hosts: Sequence[Mapping[str, Any]], disks: Mapping[int, HostDisk]
) -> list[dict[str, Any]] | None:
    """The hosts with the `disk` records that changed, or None when none did."""
    out, changed = [], False
    for host in hosts:
        entry = dict(host)
        disk = disks.get(entry.get("index", -1))
        record = disk_change(disk, entry.get("disk")) if disk is not None else None
        if record is not None:
            entry["disk"], changed = record, True
        out.append(entry)
    return out if changed else None
