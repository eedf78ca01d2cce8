"""Names of the files and folders in a run directory (docs/run-format.md).

Relative names are POSIX strings, because the launcher builds remote paths from them as well
as local ones; `Path` helpers are given for the local side.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

PROJECT = "tfcluster"
"""This project's folder name in a user's cache (user_cache_dir)."""

RUNS_DIR = "runs"
"""The local folder that holds one folder per run id."""

CLUSTER_JSON = "cluster.json"
LAUNCHER_LOG = "launcher.log"
METRICS_JSON = "metrics.json"
MODEL_FILE = "model.h5"
TENSORBOARD_DIR = "tensorboard"
TENSORBOARD_SPLITS = ("train", "validation")
BACKUP_DIR = "backup"
ARTIFACTS_DIR = "artifacts"
"""Chief only: what a user's own program saves for download (mirrored from the chief alone)."""
WORKERS_DIR = "workers"

STATUS_JSON = "status.json"
WORKER_LOG = "worker.log"
EVENTS_DIR = "events"
PGID_FILE = "pgid"
EXIT_CODE_FILE = "exit_code"
EXIT_DISK_FILE = "exit_disk"
"""Beside exit_code when a worker failed: its run folder's disk at that moment, one line
`disk FREE_KB w|ro` (the poll's own disk line), so that a full folder is named as the cause
even once it was emptied."""

SLURM_SCRIPT = "job.sbatch"
"""A Slurm run's batch script, as submitted (`fab export --slurm` prints the same)."""
SLURM_ALLOCATION = "allocation"
"""Written by a Slurm job itself: its id, node list and tasks per node, one per line."""
SLURM_OUTPUT_PATTERN = "slurm-%j.out"
"""sbatch's --output for the batch script's own output (srun's report of failed tasks)."""


def slurm_output(job_id: str) -> str:
    """The batch output file of one Slurm job (SLURM_OUTPUT_PATTERN with its id)."""
    return SLURM_OUTPUT_PATTERN.replace("%j", job_id)


EVENT_FILE_PREFIX = "events.out.tfevents."
"""Event files are named `events.out.tfevents.<secs>.<host>...` (TensorFlow's own naming)."""

EVENT_FILE_VERSION = "brain.Event:2"
"""The `file_version` of an event file's first record, as TensorFlow 2 writes it."""


def event_file_name(wall_time: float, host: str, pid: int, suffix: str) -> str:
    """`events.out.tfevents.<secs>.<host>.<pid>.<suffix>`: a new event file named as
    TensorFlow names its own, so that TensorBoard and the mirror treat it like any other."""
    return f"{EVENT_FILE_PREFIX}{int(wall_time)}.{host}.{pid}.{suffix}"


TEMP_SUFFIX = ".tmp"
"""Temporary files of the atomic writer end in this; mirroring skips them."""


def worker_rel(index: int) -> str:
    """`workers/<index>`: the worker's folder, relative to the run directory."""
    return f"{WORKERS_DIR}/{index}"


def status_rel(index: int) -> str:
    return f"{worker_rel(index)}/{STATUS_JSON}"


def worker_log_rel(index: int) -> str:
    return f"{worker_rel(index)}/{WORKER_LOG}"


def events_rel(index: int) -> str:
    return f"{worker_rel(index)}/{EVENTS_DIR}"


def tensorboard_rel(split: str) -> str:
    """`tensorboard/train` or `tensorboard/validation`: the chief's Keras TensorBoard logs."""
    return f"{TENSORBOARD_DIR}/{split}"


def worker_dir(run_dir: Path, index: int) -> Path:
    """Where worker `index` keeps its status, events and log inside a local run directory."""
    return run_dir / WORKERS_DIR / str(index)


def status_path(run_dir: Path, index: int) -> Path:
    return worker_dir(run_dir, index) / STATUS_JSON


def events_dir(run_dir: Path, index: int) -> Path:
    return worker_dir(run_dir, index) / EVENTS_DIR


def worker_log_path(run_dir: Path, index: int) -> Path:
    return worker_dir(run_dir, index) / WORKER_LOG


def user_cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """This project's folder in the user's cache ($XDG_CACHE_HOME, else ~/.cache): files
    derived once per machine and rebuilt when lost (the digits split, the dashboard's
    compressed Plotly.js)."""
    base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / PROJECT
