"""status.json and metrics.json: whole-file writes, so a reader never sees half a file."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


def worker_dir(run_dir: Path, index: int) -> Path:
    """Where worker `index` keeps its status, events and log inside the run directory."""
    return run_dir / "workers" / str(index)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write to a temporary file beside `path`, then rename it over `path` in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


class StatusFile:
    """This worker's status.json: every update rewrites the whole file atomically."""

    def __init__(self, path: Path, fields: dict[str, Any]) -> None:
        self.path = path
        self.fields = dict(fields)

    def update(self, **changes: Any) -> None:
        self.fields.update(changes, updated=time.time())
        write_json_atomic(self.path, self.fields)


def initial_status(
    index: int, role: str, host: str, pid: int, epochs: int, now: float
) -> dict[str, Any]:
    """The fields of a worker that has just started (docs/run-format.md)."""
    return {
        "index": index,
        "role": role,
        "host": host,
        "pid": pid,
        "state": "starting",
        "epoch": 0,
        "epochs": epochs,
        "step": 0,
        "steps_total": None,
        "loss": None,
        "accuracy": None,
        "examples_per_sec": None,
        "started": now,
        "updated": now,
        "error": None,
    }
