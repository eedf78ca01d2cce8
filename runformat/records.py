"""Typed, lenient records of cluster.json, status.json and metrics.json.

The files are written by other programs, copied over SSH and read while they change, so any
of them may be missing, half-synced, hand-edited or hostile. Loading never raises on what is
in a file: a missing or unknown field is fine, a field of the wrong type becomes its default
plus a one-line warning naming the file, and a file too big, too deeply nested, not JSON or
not an object is a warning and no record. Writing goes through `to_dict`, so what the trainer
and the launcher write is exactly what these records read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

from runformat.jsonfields import (
    Fields,
    Warnings,
    as_dict,
    objects,
    read_json_object,
    shown,
)
from runformat.paths import CLUSTER_JSON, METRICS_JSON, STATUS_JSON

ProgramKind = Literal["trainer", "script"]
PROGRAM_KINDS: tuple[str, ...] = get_args(ProgramKind)
T = TypeVar("T")

MAX_CLUSTER_BYTES = 4 << 20
MAX_STATUS_BYTES = 1 << 20
MAX_METRICS_BYTES = 1 << 20
MAX_WORKERS = 1024
"""The most workers a cluster.json may describe; more hosts are cut off with a warning."""
MAX_LOG_TAIL = 200
"""Lines of a failure's log tail kept when reading."""


# --- cluster.json -----------------------------------------------------------------------------


@dataclass(frozen=True)
class HostEntry:
    """One worker's host as the launcher recorded it in cluster.json.

    `line` is the hosts-file line it came from, so that status/stop/fetch reach the run's
    hosts after the hosts file changed; runs written without it still load.
    """

    index: int
    role: str
    name: str
    ssh: str | None = None
    local: bool = False
    addr: str | None = None
    tf_port: int | None = None
    workdir: str | None = None
    python: str | None = None
    run_dir: str | None = None
    line: str | None = None
    slurm_task: int | None = None
    clock_offset: float | None = None  # seconds the host's clock was ahead of the launcher's
    disk: dict[str, Any] | None = None  # {"full", "path", "free_mb", "message"} while full

    @property
    def address(self) -> str:
        """`addr:tf_port`, the worker's TensorFlow address."""
        if self.addr and self.tf_port:
            return f"{self.addr}:{self.tf_port}"
        return self.addr or ""

    def to_dict(self) -> dict[str, Any]:
        return as_dict(self)


@dataclass(frozen=True)
class Failure:
    """Why a run (or one attempt of it) failed: the worker that caused it and its log tail
    (Slurm runs also record the task's exit code)."""

    index: int | None
    host: str | None
    reason: str
    log_tail: tuple[str, ...] = ()
    exit_code: int | None = None
    network: tuple[str, ...] = ()  # pairs of workers that could not reach each other after it

    @property
    def who(self) -> str:
        """`worker 1 (alice@gpu-b)`, or `the launcher` for a failure of the launcher itself."""
        if self.index is None:
            return "the launcher"
        return f"worker {self.index} ({self.host})"

    def to_dict(self) -> dict[str, Any]:
        return as_dict(self)


@dataclass(frozen=True)
class Attempt:
    """One start of the whole job (`fab train --max-restarts`); failure None if it did not fail."""

    number: int
    started: float | None = None
    ended: float | None = None
    failure: Failure | None = None

    def to_dict(self) -> dict[str, Any]:
        return as_dict(self, {"number": "attempt"})


@dataclass(frozen=True)
class Program:
    """cluster.json `program`: what every worker ran. `trainer` is the built-in trainer
    (`python -m trainer`); `script` is a user's own program, `script` (a path relative to
    `folder`) run from inside its shipped folder, whose local path was `folder`. Its
    arguments are the record's `trainer_args` either way. Runs written before this field
    existed ran the trainer."""

    kind: ProgramKind = "trainer"
    script: str | None = None
    folder: str | None = None

    @property
    def is_script(self) -> bool:
        return self.kind == "script"

    def to_dict(self) -> dict[str, Any]:
        data = as_dict(self)
        return {key: value for key, value in data.items() if value is not None}


@dataclass(frozen=True)
class ClusterRecord:
    """cluster.json: what the launcher knows about the run as a whole."""

    run_id: str | None = None
    created: float | None = None
    finished: float | None = None
    state: str | None = None
    scheduler: str | None = None
    slurm: dict[str, Any] = field(default_factory=dict)
    hosts_file: str | None = None
    hosts: tuple[HostEntry, ...] = ()
    tf_config_cluster: dict[str, Any] = field(default_factory=dict)
    program: Program = field(default_factory=Program)
    trainer_args: tuple[str, ...] = ()
    dataset: str | None = None
    epochs: int | None = None
    exit_codes: dict[int, int | None] = field(default_factory=dict)
    failure: Failure | None = None
    restarts: int = 0
    max_restarts: int = 0
    attempts: tuple[Attempt, ...] = ()
    env: tuple[str, ...] = ()
    launcher: dict[str, Any] = field(default_factory=dict)
    sync_bytes: dict[int, int | None] = field(default_factory=dict)

    @property
    def earlier_failures(self) -> list[Attempt]:
        """Attempts that failed and were followed by another: why the job restarted."""
        return [a for a in self.attempts[:-1] if a.failure is not None]

    def host(self, index: int) -> HostEntry | None:
        return next((h for h in self.hosts if h.index == index), None)

    def to_dict(self) -> dict[str, Any]:
        data = as_dict(self)
        data["hosts"] = [h.to_dict() for h in self.hosts]
        data["attempts"] = [a.to_dict() for a in self.attempts]
        return data


def parse_failure(raw: object, where: str, warnings: Warnings) -> Failure | None:
    """A `failure` object of cluster.json (top level or of an attempt), None if there is none."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        warnings.append(f"{where}: 'failure' is {shown(raw)}, expected an object; ignored")
        return None
    f = Fields(raw, f"{where} failure", warnings)
    return Failure(
        index=f.integer("index"),
        host=f.text("host"),
        reason=f.text("reason") or "unknown reason",
        log_tail=f.strings("log_tail")[-MAX_LOG_TAIL:],
        exit_code=f.integer("exit_code"),
        network=f.strings("network")[:MAX_WORKERS],
    )


def parse_program(raw: object, where: str, warnings: Warnings) -> Program:
    """cluster.json `program`; missing means the trainer. A `kind` this reader does not know,
    or a script without its `script`, is a warning and reads as the trainer's default."""
    if raw is None:
        return Program()
    if not isinstance(raw, dict):
        warnings.append(f"{where}: 'program' is {shown(raw)}, expected an object; ignored")
        return Program()
    f = Fields(raw, f"{where} program", warnings)
    kind = f.text("kind") or "trainer"
    if kind not in PROGRAM_KINDS:
        warnings.append(
            f"{f.where}: 'kind' is {kind[:40]!r}, expected {' or '.join(PROGRAM_KINDS)}; ignored"
        )
        return Program()
    script, folder = f.text("script"), f.text("folder")
    if kind == "script" and not script:
        if raw.get("script") in (None, ""):  # a wrong type was named by f.text already
            warnings.append(f"{f.where}: kind 'script' without 'script' (the file it ran); ignored")
        return Program()
    return Program(kind="script", script=script, folder=folder) if kind == "script" else Program()


def _host(position: int, item: dict[str, Any], where: str, warnings: Warnings) -> HostEntry:
    f = Fields(item, f"{where} host #{position}", warnings)
    index = f.integer("index")
    if index is not None and not 0 <= index < MAX_WORKERS:
        f._bad("index", index, f"0 to {MAX_WORKERS - 1}")
        index = None
    index = position if index is None else index
    addr = f.text("addr")
    return HostEntry(
        index=index,
        role=f.text("role") or ("chief" if index == 0 else "worker"),
        name=f.text("name") or addr or "?",
        ssh=f.text("ssh"),
        local=f.flag("local"),
        addr=addr,
        tf_port=f.integer("tf_port"),
        workdir=f.text("workdir"),
        python=f.text("python"),
        run_dir=f.text("run_dir"),
        line=f.text("line"),
        slurm_task=f.integer("slurm_task"),
        clock_offset=f.num("clock_offset"),
        disk=dict(item["disk"]) if isinstance(item.get("disk"), dict) else None,
    )


def cluster_from_dict(
    data: Mapping[str, Any], warnings: Warnings, where: str = CLUSTER_JSON
) -> ClusterRecord:
    """A ClusterRecord from a parsed cluster.json; problems go to `warnings`."""
    f = Fields(data, where, warnings)
    hosts = [
        _host(position, item, where, warnings)
        for position, item in objects(f.items("hosts"), "host", where, warnings, 0, MAX_WORKERS)
    ]
    attempts = []
    for position, item in objects(f.items("attempts"), "attempt", where, warnings, 1):
        a = Fields(item, f"{where} attempt #{position + 1}", warnings)
        attempts.append(
            Attempt(
                number=a.integer("attempt") or position + 1,
                started=a.num("started"),
                ended=a.num("ended"),
                failure=parse_failure(item.get("failure"), a.where, warnings),
            )
        )
    return ClusterRecord(
        run_id=f.text("run_id"),
        created=f.num("created"),
        finished=f.num("finished"),
        state=f.text("state"),
        scheduler=f.text("scheduler"),
        slurm=f.mapping("slurm") or {},
        hosts_file=f.text("hosts_file"),
        hosts=tuple(sorted(hosts, key=lambda h: h.index)),
        tf_config_cluster=f.mapping("tf_config_cluster") or {},
        program=parse_program(data.get("program"), where, warnings),
        trainer_args=f.strings("trainer_args"),
        dataset=f.text("dataset"),
        epochs=f.integer("epochs"),
        exit_codes=f.int_map("exit_codes", nullable=True, below=MAX_WORKERS),
        failure=parse_failure(data.get("failure"), where, warnings),
        restarts=f.integer("restarts", 0) or 0,
        max_restarts=f.integer("max_restarts", 0) or 0,
        attempts=tuple(attempts),
        env=f.strings("env"),
        launcher=f.mapping("launcher") or {},
        sync_bytes=f.int_map("sync_bytes", nullable=True, below=MAX_WORKERS),
    )


# --- workers/<i>/status.json ------------------------------------------------------------------


@dataclass(frozen=True)
class SystemSample:
    """status.json `system`: the latest sample of this worker's process and host."""

    time: float | None = None
    cpu_percent: float | None = None
    memory_mb: float | None = None
    host_cpu_percent: float | None = None
    host_memory_percent: float | None = None
    net_sent_mbps: float | None = None
    net_recv_mbps: float | None = None
    cpu_wait_percent: float | None = None
    gpu_util_percent: tuple[float, ...] | None = None
    gpu_memory_mb: tuple[float, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return as_dict(self)


@dataclass(frozen=True)
class StatusRecord:
    """workers/<index>/status.json: what one worker last said about itself.

    `epoch` counts the epochs completed so far; `phase` and `phase_since` say what the worker
    is doing and since when (older runs have neither: None). `exit_code` is the program's
    (negative: killed by that signal) once it ended; `log_tail` its last stderr lines when it
    failed.
    """

    index: int
    role: str | None = None
    host: str | None = None
    pid: int | None = None
    state: str | None = None
    phase: str | None = None
    phase_since: float | None = None
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
    exit_code: int | None = None
    log_tail: tuple[str, ...] = ()
    system: SystemSample | None = None

    def to_dict(self) -> dict[str, Any]:
        return as_dict(self)


def system_from_dict(raw: object, where: str, warnings: Warnings) -> SystemSample | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        warnings.append(f"{where}: 'system' is {shown(raw)}, expected an object; ignored")
        return None
    f = Fields(raw, f"{where} system", warnings)
    return SystemSample(
        time=f.num("time"),
        cpu_percent=f.num("cpu_percent"),
        memory_mb=f.num("memory_mb"),
        host_cpu_percent=f.num("host_cpu_percent"),
        host_memory_percent=f.num("host_memory_percent"),
        net_sent_mbps=f.num("net_sent_mbps"),
        net_recv_mbps=f.num("net_recv_mbps"),
        cpu_wait_percent=f.num("cpu_wait_percent"),
        gpu_util_percent=f.numbers("gpu_util_percent"),
        gpu_memory_mb=f.numbers("gpu_memory_mb"),
    )


def status_from_dict(
    index: int, data: Mapping[str, Any], warnings: Warnings, where: str = STATUS_JSON
) -> StatusRecord:
    """A StatusRecord for worker `index` from a parsed status.json."""
    f = Fields(data, where, warnings)
    return StatusRecord(
        index=index,
        role=f.text("role"),
        host=f.text("host"),
        pid=f.integer("pid"),
        state=f.text("state"),
        phase=f.text("phase"),
        phase_since=f.num("phase_since"),
        epoch=f.integer("epoch"),
        epochs=f.integer("epochs"),
        step=f.integer("step"),
        steps_total=f.integer("steps_total"),
        loss=f.num("loss"),
        accuracy=f.num("accuracy"),
        examples_per_sec=f.num("examples_per_sec"),
        started=f.num("started"),
        updated=f.num("updated"),
        error=f.text("error"),
        exit_code=f.integer("exit_code"),
        log_tail=f.strings("log_tail")[-MAX_LOG_TAIL:],
        system=system_from_dict(data.get("system"), where, warnings),
    )


# --- metrics.json -----------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricsRecord:
    """metrics.json: the chief's final figures."""

    test_loss: float | None = None
    test_accuracy: float | None = None
    examples_seen: int | None = None
    wall_time_sec: float | None = None
    train_time_sec: float | None = None
    steps_per_sec: float | None = None
    train_cpu_sec: float | None = None
    epochs: int | None = None
    workers: int | None = None
    global_batch_size: int | None = None
    dataset: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return as_dict(self)


def metrics_from_dict(
    data: Mapping[str, Any], warnings: Warnings, where: str = METRICS_JSON
) -> MetricsRecord:
    f = Fields(data, where, warnings)
    return MetricsRecord(
        test_loss=f.num("test_loss"),
        test_accuracy=f.num("test_accuracy"),
        examples_seen=f.integer("examples_seen"),
        wall_time_sec=f.num("wall_time_sec"),
        train_time_sec=f.num("train_time_sec"),
        steps_per_sec=f.num("steps_per_sec"),
        train_cpu_sec=f.num("train_cpu_sec"),
        epochs=f.integer("epochs"),
        workers=f.integer("workers"),
        global_batch_size=f.integer("global_batch_size"),
        dataset=f.text("dataset"),
    )


# --- loading files ----------------------------------------------------------------------------


def _load(
    path: Path, limit: int, name: str, parse: Callable[[dict, Warnings, str], T]
) -> tuple[T | None, Warnings]:
    warnings: Warnings = []
    data = read_json_object(path, limit, warnings, name)
    return (parse(data, warnings, name) if data is not None else None), warnings


def load_cluster(path: Path, name: str = CLUSTER_JSON) -> tuple[ClusterRecord | None, Warnings]:
    """cluster.json as a record (None if missing or unreadable) and the warnings."""
    return _load(path, MAX_CLUSTER_BYTES, name, cluster_from_dict)


def load_status(
    path: Path, index: int, name: str = STATUS_JSON
) -> tuple[StatusRecord | None, Warnings]:
    """A worker's status.json as a record (None if missing or unreadable) and the warnings."""
    return _load(
        path, MAX_STATUS_BYTES, name, lambda data, w, n: status_from_dict(index, data, w, n)
    )


def load_metrics(path: Path, name: str = METRICS_JSON) -> tuple[MetricsRecord | None, Warnings]:
    return _load(path, MAX_METRICS_BYTES, name, metrics_from_dict)


def record_keys(record_type: type) -> tuple[str, ...]:
    """The JSON keys a record type reads and writes (docs/run-format.md is checked against them)."""
    renamed: dict[tuple[type, str], str] = {(Attempt, "number"): "attempt"}
    return tuple(renamed.get((record_type, f.name), f.name) for f in fields(record_type))
