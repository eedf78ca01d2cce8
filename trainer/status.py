"""This worker's status.json: whole-file writes, so a reader never sees half a file."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from runformat import Phase, StatusRecord, record_keys, write_json_atomic

STATUS_KEYS = frozenset(record_keys(StatusRecord))


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
        """Change fields and write the file; a field the run format does not know is a bug."""
        unknown = set(changes) - STATUS_KEYS
        if unknown:
            raise KeyError(f"status.json has no field {', '.join(sorted(unknown))}")
        with self._lock:
            self.fields.update(changes, updated=time.time())
            write_json_atomic(self.path, self.fields)

    @property
    def phase(self) -> str | None:
        return self.fields.get("phase")

    def enter(self, phase: Phase, **changes: Any) -> None:
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
    return StatusRecord(
        index=index,
        role=role,
        host=host,
        pid=pid,
        state="starting",
        phase="starting",
        phase_since=now,
        epoch=0,
        epochs=epochs,
        step=0,
        started=now,
        updated=now,
    ).to_dict()
