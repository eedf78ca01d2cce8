"""Find runs and read their JSON files into typed records, with warnings instead of exceptions.

The files are written by other programs, copied over SSH and read while they change, so any
of them may be missing, half-synced, hand-edited or hostile. Every loader here returns what
it could read plus a list of warnings; nothing here raises on bad input. Paths that come
from outside (a run name in the URL, a file to download) are resolved and refused unless
they stay inside the runs folder and the run directory.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import runformat
from dashboard import health
from dashboard.health import DiskNote
from runformat import (
    ACTIVE_RUN_STATES,
    CLUSTER_JSON,
    MAX_CLUSTER_BYTES,
    MAX_METRICS_BYTES,
    MAX_STATUS_BYTES,
    MAX_WORKERS,
    METRICS_JSON,
    WORKERS_DIR,
    ClusterRecord,
    HostEntry,
    MetricsRecord,
    StatusRecord,
    cluster_from_dict,
    metrics_from_dict,
    read_json_object,
    status_from_dict,
    status_rel,
)

ENV_VAR = "TFCLUSTER_RUNS"
ACTIVE_STATES = ACTIVE_RUN_STATES
# A run id is YYYYmmdd-HHMMSS-xxxx; accept any plain folder name but never a path.
_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def runs_dir_from(argv: Sequence[str], environ: Mapping[str, str]) -> Path:
    """The runs folder: `--runs DIR` (or --runs-dir) after `--`, else $TFCLUSTER_RUNS, else runs."""
    for index, arg in enumerate(argv):
        for flag in ("--runs", "--runs-dir"):
            if arg == flag and index + 1 < len(argv):
                return Path(argv[index + 1]).expanduser()
            if arg.startswith(flag + "="):
                return Path(arg.split("=", 1)[1]).expanduser()
    if environ.get(ENV_VAR):
        return Path(environ[ENV_VAR]).expanduser()
    return Path("runs")


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True


def plain_run_name(name: str) -> bool:
    """A bare folder name: no separators, no '..', nothing hidden."""
    return isinstance(name, str) and bool(_RUN_NAME.fullmatch(name)) and ".." not in name


def safe_run_dir(runs_dir: Path, name: str) -> Path | None:
    """runs_dir/name if name is a plain folder name whose real path stays in runs_dir."""
    if not plain_run_name(name):
        return None
    try:
        root = runs_dir.resolve(strict=True)
        candidate = (runs_dir / name).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if candidate.parent != root or not candidate.is_dir():
        return None
    return candidate


def _resolve_inside(run_dir: Path, relative: str) -> Path | None:
    """run_dir/relative after following links, or None when that leaves run_dir."""
    if not relative or os.path.isabs(relative) or ".." in Path(relative).parts:
        return None
    try:
        root = run_dir.resolve(strict=True)
        candidate = (run_dir / relative).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    return candidate if _inside(candidate, root) else None


def safe_file(run_dir: Path, relative: str) -> Path | None:
    """A regular file inside run_dir (after following links), or None."""
    candidate = _resolve_inside(run_dir, relative)
    return candidate if candidate is not None and candidate.is_file() else None


def safe_dir(run_dir: Path, relative: str) -> Path | None:
    """A folder inside run_dir (after following links), or None."""
    candidate = _resolve_inside(run_dir, relative)
    return candidate if candidate is not None and candidate.is_dir() else None


def run_file(run_dir: Path, relative: str, warnings: list[str]) -> Path | None:
    """safe_file, plus a warning when something is there but leads outside the run."""
    path = safe_file(run_dir, relative)
    if path is None and os.path.lexists(run_dir / relative):
        warnings.append(f"{relative}: refused, it is not a plain file inside the run folder")
    return path


def read_json(
    path: Path | None, warnings: list[str], limit: int = MAX_CLUSTER_BYTES
) -> dict[str, Any] | None:
    """A JSON object from path, or None with a warning (a missing file is not a warning)."""
    return None if path is None else read_json_object(path, limit, warnings)


# The run format's records, under the names the pages use.
Attempt = runformat.Attempt
Failure = runformat.Failure
Host = HostEntry
ClusterInfo = ClusterRecord
WorkerStatus = StatusRecord
Metrics = MetricsRecord


@dataclass(frozen=True)
class Program:
    """What the run ran (cluster.json `program`): the built-in trainer, or a user's script
    with its folder; its arguments are cluster.json's `trainer_args`."""

    kind: str = "trainer"
    script: str | None = None
    folder: str | None = None

    @property
    def is_script(self) -> bool:
        return self.kind == "script"


TRAINER = Program()


def program_of(cluster: object, data: Mapping[str, Any] | None, warnings: list[str]) -> Program:
    """The run's program: the record's typed field where the run format has one, else
    cluster.json's `program` object read here; the trainer when neither says."""
    raw = getattr(cluster, "program", None)
    if raw is None and data is not None:
        raw = data.get("program")
    if raw is None:
        return TRAINER
    fields = raw if isinstance(raw, Mapping) else getattr(raw, "__dict__", None)
    if not isinstance(fields, Mapping):
        warnings.append(f"{CLUSTER_JSON}: 'program' is not an object; ignored")
        return TRAINER
    values = {name: fields.get(name) for name in ("kind", "script", "folder")}
    bad = [
        name for name, value in values.items() if value is not None and not isinstance(value, str)
    ]
    if bad:
        warnings.append(f"{CLUSTER_JSON}: program {', '.join(bad)}: expected text; ignored")
    kept = {name: value for name, value in values.items() if isinstance(value, str)}
    return Program(**{"kind": "script" if kept.get("script") else "trainer", **kept})


@dataclass
class Run:
    """One run directory, read once: every field may be missing; warnings say why."""

    run_id: str
    path: Path
    cluster: ClusterInfo | None
    workers: dict[int, WorkerStatus]
    metrics: Metrics | None
    warnings: list[str] = field(default_factory=list)
    found: tuple[int, ...] = ()
    program: Program = TRAINER
    # Per worker: how far its host's clock is ahead of ours (seconds), and its disk trouble.
    clock_offsets: dict[int, float] = field(default_factory=dict)
    disks: dict[int, DiskNote] = field(default_factory=dict)

    def local_time(self, index: int, stamp: float | None) -> float | None:
        """A time written by worker `index`'s host, on our clock."""
        return None if stamp is None else stamp - self.clock_offsets.get(index, 0.0)

    @property
    def state(self) -> str:
        """cluster.json's state, else what the workers' own states add up to."""
        if self.cluster and self.cluster.state:
            return self.cluster.state
        states = {w.state for w in self.workers.values() if w.state}
        if not states:
            return "unknown"
        for state in ("failed", "running", "starting"):
            if state in states:
                return state
        return "finished" if states == {"finished"} else "unknown"

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def indices(self) -> list[int]:
        """Every worker index named by cluster.json or found under workers/."""
        hosts = {h.index for h in self.cluster.hosts} if self.cluster else set()
        return sorted(hosts | set(self.workers) | set(self.found))

    def host(self, index: int) -> Host | None:
        return self.cluster.host(index) if self.cluster else None

    @property
    def started(self) -> float | None:
        if self.cluster and self.cluster.created:
            return self.cluster.created
        times = [w.started for w in self.workers.values() if w.started]
        return min(times) if times else None

    def duration(self, now: float | None = None) -> float | None:
        """Seconds from start to finish (or to now while it runs)."""
        start = self.started
        if start is None:
            return None
        end = self.cluster.finished if self.cluster else None
        if end is None:
            updates = [w.updated for w in self.workers.values() if w.updated]
            end = (time.time() if now is None else now) if self.active else max(updates, default=0)
        return max(0.0, end - start) if end else None

    @property
    def dataset(self) -> str | None:
        return (self.cluster.dataset if self.cluster else None) or (
            self.metrics.dataset if self.metrics else None
        )


def parse_cluster(data: Mapping[str, Any], warnings: list[str]) -> ClusterInfo:
    return cluster_from_dict(data, warnings)


def worker_indices(run_dir: Path) -> list[int]:
    """Indices of the workers/<n>/ folders (plain numbers only)."""
    try:
        names = os.listdir(run_dir / WORKERS_DIR)
    except OSError:
        return []
    return sorted(
        i for i in (int(n) for n in names if n.isdigit() and len(n) < 6) if i < MAX_WORKERS
    )


def load_run(run_dir: Path) -> Run:
    """Read cluster.json, every status.json and metrics.json of one run directory."""
    warnings: list[str] = []
    if not run_dir.is_dir():
        return Run(run_dir.name, run_dir, None, {}, None, [f"run {run_dir.name} is gone"])
    cluster_data = read_json(run_file(run_dir, CLUSTER_JSON, warnings), warnings)
    cluster = parse_cluster(cluster_data, warnings) if cluster_data is not None else None
    if cluster_data is None and not warnings:
        warnings.append(f"{CLUSTER_JSON} is missing: the launcher has not written it (yet)")
    workers = {}
    found = worker_indices(run_dir)
    hosts = health.host_fields(cluster_data)
    offsets: dict[int, float] = {}
    disks: dict[int, DiskNote] = {}
    for index in found:
        status_warnings: list[str] = []
        status_path = run_file(run_dir, status_rel(index), status_warnings)
        data = read_json(status_path, status_warnings, MAX_STATUS_BYTES)
        if data is not None and status_path is not None:
            workers[index] = status_from_dict(index, data, status_warnings)
            offsets[index] = health.estimated_offset(workers[index].updated, _changed(status_path))
            note = health.disk_note(data.get("disk"))
            if note is not None:
                disks[index] = note
        warnings.extend(f"worker {index} {w}" for w in status_warnings)
    for index, host in hosts.items():
        measured = health.measured_offset(host)
        if measured is not None:
            offsets[index] = measured
        note = health.disk_note(host.get("disk"))
        if note is not None:
            disks[index] = note
    metrics_data = read_json(run_file(run_dir, METRICS_JSON, warnings), warnings, MAX_METRICS_BYTES)
    metrics = metrics_from_dict(metrics_data, warnings) if metrics_data is not None else None
    program = program_of(cluster, cluster_data, warnings)
    offsets = {index: offset for index, offset in offsets.items() if offset}
    return Run(
        run_dir.name,
        run_dir,
        cluster,
        workers,
        metrics,
        warnings,
        tuple(found),
        program,
        offsets,
        disks,
    )


def _changed(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def list_runs(runs_dir: Path) -> list[str]:
    """Names of the run folders, newest first (run ids sort by time)."""
    try:
        entries = list(os.scandir(runs_dir))
    except OSError:
        return []
    names = []
    for entry in entries:
        try:
            if entry.is_dir() and _RUN_NAME.fullmatch(entry.name):
                names.append(entry.name)
        except OSError:
            continue
    return sorted(names, reverse=True)


def runs_signature(runs_dir: Path) -> tuple[tuple[str, int], ...]:
    """Every run name with its cluster.json's change time: what the run list shows."""
    signature = []
    for name in list_runs(runs_dir):
        try:
            changed = os.stat(runs_dir / name / CLUSTER_JSON).st_mtime_ns
        except OSError:
            changed = 0
        signature.append((name, changed))
    return tuple(signature)


def load_runs(runs_dir: Path) -> list[Run]:
    """Every run under runs_dir, newest first; runs that vanish meanwhile are skipped."""
    runs = []
    for name in list_runs(runs_dir):
        path = safe_run_dir(runs_dir, name)
        if path is not None:
            runs.append(load_run(path))
    return runs


def tail_lines(path: Path, lines: int = 200, max_bytes: int = 256 << 10) -> list[str]:
    """The last lines of a text file, reading at most max_bytes from its end."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            handle.seek(max(0, size - max_bytes))
            data = handle.read(max_bytes)
    except OSError:
        return []
    text = data.decode("utf-8", "replace").splitlines()
    if size > max_bytes and text:
        text = text[1:]
    return text[-lines:]
