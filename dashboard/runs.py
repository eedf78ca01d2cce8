"""Find runs and read their JSON files into typed records, with warnings instead of exceptions.

The files are written by other programs, copied over SSH and read while they change, so any
of them may be missing, half-synced, hand-edited or hostile. Every loader here returns what
it could read plus a list of warnings; nothing here raises on bad input. Paths that come
from outside (a run name in the URL, a file to download) are resolved and refused unless
they stay inside the runs folder and the run directory.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_VAR = "TFCLUSTER_RUNS"
ACTIVE_STATES = frozenset({"starting", "running"})
# A run id is YYYYmmdd-HHMMSS-xxxx; accept any plain folder name but never a path.
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_MAX_JSON_BYTES = 4 << 20


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
    return isinstance(name, str) and bool(_RUN_NAME.match(name)) and ".." not in name


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


def read_json(path: Path | None, warnings: list[str]) -> dict[str, Any] | None:
    """A JSON object from path, or None with a warning (a missing file is not a warning)."""
    if path is None:
        return None
    try:
        with open(path, "rb") as handle:
            raw = handle.read(_MAX_JSON_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as error:
        warnings.append(f"{path.name}: cannot be read ({error.strerror or error})")
        return None
    if len(raw) > _MAX_JSON_BYTES:
        warnings.append(f"{path.name}: larger than {_MAX_JSON_BYTES >> 20} MB; ignored")
        return None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        warnings.append(f"{path.name}: not valid JSON (half-written or damaged); ignored")
        return None
    if not isinstance(data, dict):
        warnings.append(f"{path.name}: expected a JSON object, found {type(data).__name__}")
        return None
    return data


def _num(data: Mapping[str, Any], key: str) -> float | None:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if value == value and abs(value) != float("inf") else None


def _int(data: Mapping[str, Any], key: str) -> int | None:
    value = _num(data, key)
    return int(value) if value is not None else None


def _str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class Host:
    """One line of the hosts file as the launcher recorded it."""

    index: int
    role: str
    name: str
    addr: str | None = None
    tf_port: int | None = None
    local: bool = False

    @property
    def address(self) -> str:
        if self.addr and self.tf_port:
            return f"{self.addr}:{self.tf_port}"
        return self.addr or ""


@dataclass(frozen=True)
class Failure:
    index: int | None
    host: str | None
    reason: str
    log_tail: tuple[str, ...] = ()


@dataclass(frozen=True)
class Attempt:
    """One start of the whole job (`fab train --max-restarts`); failure None if it did not fail."""

    number: int
    started: float | None = None
    ended: float | None = None
    failure: Failure | None = None


@dataclass(frozen=True)
class ClusterInfo:
    """cluster.json: what the launcher knows about the run as a whole."""

    run_id: str | None = None
    created: float | None = None
    finished: float | None = None
    state: str | None = None
    hosts: tuple[Host, ...] = ()
    dataset: str | None = None
    epochs: int | None = None
    exit_codes: dict[int, int | None] = field(default_factory=dict)
    failure: Failure | None = None
    restarts: int = 0
    trainer_args: tuple[str, ...] = ()
    attempts: tuple[Attempt, ...] = ()

    @property
    def earlier_failures(self) -> list[Attempt]:
        """Attempts that failed and were followed by another: why the job restarted."""
        return [a for a in self.attempts[:-1] if a.failure is not None]


@dataclass(frozen=True)
class WorkerStatus:
    """workers/<index>/status.json: what one worker last said about itself."""

    index: int
    role: str | None = None
    host: str | None = None
    pid: int | None = None
    state: str | None = None
    phase: str | None = None
    epoch: int | None = None
    epochs: int | None = None
    step: int | None = None
    steps_total: int | None = None
    loss: float | None = None
    accuracy: float | None = None
    examples_per_sec: float | None = None
    started: float | None = None
    updated: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class Metrics:
    """metrics.json: the chief's final figures."""

    test_loss: float | None = None
    test_accuracy: float | None = None
    examples_seen: int | None = None
    wall_time_sec: float | None = None
    epochs: int | None = None
    workers: int | None = None
    global_batch_size: int | None = None
    dataset: str | None = None


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
        if self.cluster:
            for host in self.cluster.hosts:
                if host.index == index:
                    return host
        return None

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
    hosts = []
    raw_hosts = data.get("hosts")
    if raw_hosts is not None and not isinstance(raw_hosts, list):
        warnings.append("cluster.json: 'hosts' is not a list; ignored")
        raw_hosts = []
    for position, item in enumerate(raw_hosts or []):
        if not isinstance(item, dict):
            warnings.append(f"cluster.json: host #{position} is not an object; ignored")
            continue
        index = _int(item, "index")
        index = position if index is None or index < 0 else index
        hosts.append(
            Host(
                index=index,
                role=_str(item, "role") or ("chief" if index == 0 else "worker"),
                name=_str(item, "name") or _str(item, "addr") or "?",
                addr=_str(item, "addr"),
                tf_port=_int(item, "tf_port"),
                local=item.get("local") is True,
            )
        )
    exit_codes: dict[int, int | None] = {}
    raw_codes = data.get("exit_codes")
    if isinstance(raw_codes, dict):
        for key, value in raw_codes.items():
            if str(key).isdigit():
                code = value if isinstance(value, int) and not isinstance(value, bool) else None
                exit_codes[int(key)] = code
    failure = parse_failure(data.get("failure"))
    attempts = []
    raw_attempts = data.get("attempts")
    if raw_attempts is not None and not isinstance(raw_attempts, list):
        warnings.append("cluster.json: 'attempts' is not a list; ignored")
        raw_attempts = []
    for position, item in enumerate(raw_attempts or []):
        if not isinstance(item, dict):
            warnings.append(f"cluster.json: attempt #{position + 1} is not an object; ignored")
            continue
        attempts.append(
            Attempt(
                number=_int(item, "attempt") or position + 1,
                started=_num(item, "started"),
                ended=_num(item, "ended"),
                failure=parse_failure(item.get("failure")),
            )
        )
    args = data.get("trainer_args")
    return ClusterInfo(
        run_id=_str(data, "run_id"),
        created=_num(data, "created"),
        finished=_num(data, "finished"),
        state=_str(data, "state"),
        hosts=tuple(sorted(hosts, key=lambda h: h.index)),
        dataset=_str(data, "dataset"),
        epochs=_int(data, "epochs"),
        exit_codes=exit_codes,
        failure=failure,
        restarts=_int(data, "restarts") or 0,
        trainer_args=tuple(str(a) for a in args) if isinstance(args, list) else (),
        attempts=tuple(attempts),
    )


def parse_failure(raw: object) -> Failure | None:
    """A `failure` object of cluster.json (top level or of an attempt), None if there is none."""
    if not isinstance(raw, dict):
        return None
    tail = raw.get("log_tail")
    return Failure(
        index=_int(raw, "index"),
        host=_str(raw, "host"),
        reason=_str(raw, "reason") or "unknown reason",
        log_tail=tuple(str(line) for line in tail) if isinstance(tail, list) else (),
    )


def parse_status(index: int, data: Mapping[str, Any]) -> WorkerStatus:
    return WorkerStatus(
        index=index,
        role=_str(data, "role"),
        host=_str(data, "host"),
        pid=_int(data, "pid"),
        state=_str(data, "state"),
        phase=_str(data, "phase"),
        epoch=_int(data, "epoch"),
        epochs=_int(data, "epochs"),
        step=_int(data, "step"),
        steps_total=_int(data, "steps_total"),
        loss=_num(data, "loss"),
        accuracy=_num(data, "accuracy"),
        examples_per_sec=_num(data, "examples_per_sec"),
        started=_num(data, "started"),
        updated=_num(data, "updated"),
        error=_str(data, "error"),
    )


def parse_metrics(data: Mapping[str, Any]) -> Metrics:
    return Metrics(
        test_loss=_num(data, "test_loss"),
        test_accuracy=_num(data, "test_accuracy"),
        examples_seen=_int(data, "examples_seen"),
        wall_time_sec=_num(data, "wall_time_sec"),
        epochs=_int(data, "epochs"),
        workers=_int(data, "workers"),
        global_batch_size=_int(data, "global_batch_size"),
        dataset=_str(data, "dataset"),
    )


def worker_indices(run_dir: Path) -> list[int]:
    """Indices of the workers/<n>/ folders (plain numbers only)."""
    try:
        names = os.listdir(run_dir / "workers")
    except OSError:
        return []
    return sorted(int(name) for name in names if name.isdigit() and len(name) < 6)


def load_run(run_dir: Path) -> Run:
    """Read cluster.json, every status.json and metrics.json of one run directory."""
    warnings: list[str] = []
    if not run_dir.is_dir():
        return Run(run_dir.name, run_dir, None, {}, None, [f"run {run_dir.name} is gone"])
    cluster_data = read_json(run_file(run_dir, "cluster.json", warnings), warnings)
    cluster = parse_cluster(cluster_data, warnings) if cluster_data is not None else None
    if cluster_data is None and not warnings:
        warnings.append("cluster.json is missing: the launcher has not written it (yet)")
    workers = {}
    found = worker_indices(run_dir)
    for index in found:
        status_warnings: list[str] = []
        status_path = run_file(run_dir, f"workers/{index}/status.json", status_warnings)
        data = read_json(status_path, status_warnings)
        warnings.extend(f"worker {index} {w}" for w in status_warnings)
        if data is not None:
            workers[index] = parse_status(index, data)
    metrics_data = read_json(run_file(run_dir, "metrics.json", warnings), warnings)
    metrics = parse_metrics(metrics_data) if metrics_data is not None else None
    return Run(run_dir.name, run_dir, cluster, workers, metrics, warnings, tuple(found))


def list_runs(runs_dir: Path) -> list[str]:
    """Names of the run folders, newest first (run ids sort by time)."""
    try:
        entries = list(os.scandir(runs_dir))
    except OSError:
        return []
    names = []
    for entry in entries:
        try:
            if entry.is_dir() and _RUN_NAME.match(entry.name):
                names.append(entry.name)
        except OSError:
            continue
    return sorted(names, reverse=True)


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
