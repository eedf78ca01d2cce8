"""status.json and metrics.json: whole-file writes, so a reader never sees half a file."""

from __future__ import annotations

import json
import os
import threading
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
    """This worker's status.json: every update rewrites the whole file atomically.

    The training loop and the system monitor's heartbeat both update it, hence the lock.
    """

    def __init__(self, path: Path, fields: dict[str, Any]) -> None:
        self.path = path
        self.fields = dict(fields)
        self._lock = threading.Lock()
        self._entered: set[str] = set()

    def update(self, **changes: Any) -> None:
        with self._lock:
            self.fields.update(changes, updated=time.time())
            write_json_atomic(self.path, self.fields)

    @property
    def phase(self) -> str | None:
        return self.fields.get("phase")

    def enter(self, phase: str, **changes: Any) -> None:
        """Move to `phase` (docs/run-format.md); `phase_since` changes only when it does."""
        if phase != self.phase:
            changes.update(phase=phase, phase_since=time.time())
        self.update(**changes)
        if phase not in self._entered:
            # Once per phase, so worker.log shows where a slow start spent its time.
            self._entered.add(phase)
            elapsed = self.fields["updated"] - self.fields.get("started", self.fields["updated"])
            print(
                f"trainer: worker {self.fields.get('index')} {phase} ({elapsed:.1f} s after start)",
                flush=True,
            )


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
        "phase": "starting",
        "phase_since": now,
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
