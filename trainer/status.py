"""This worker's status.json: whole-file writes, so a reader never sees half a file, and
best-effort ones, so that a full disk never ends training (trainer.guard).

One writer (the trainer) keeps every field and rewrites the file. Two writers (the wrapper
of a user's program and the ClusterProgress callback inside it) share the file: each update
takes a lock on the worker's folder, reads the file, changes only its own fields and writes
it back, so neither clobbers the other. The wrapper owns the identity, the start and the end
(index, role, host, pid, started, state starting/finished/failed, exit_code, error, log_tail)
and the `system` sample; the callback owns the running fields (phase training, evaluating,
saving; epoch, epochs, step, steps_total, loss, accuracy, examples_per_sec). Until the
callback writes them, the wrapper fills some of them from the progress Keras prints
(`set_if`: checked and written under one lock, so never over the callback's).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from runformat import MAX_STATUS_BYTES, Phase, StatusRecord, record_keys, write_json_atomic
from trainer.guard import BestEffort

STATUS_KEYS = frozenset(record_keys(StatusRecord))
Expected = Mapping[str, Any] | Callable[[Mapping[str, Any]], bool]
"""What a conditional update expects of the file: values of some fields, or a test of them."""


class _Moved(Exception):
    """The file no longer holds what a conditional update expected."""


class StatusFile:
    """This worker's status.json: every update rewrites the whole file atomically.

    Updates never raise on a disk that refuses them: the change is kept in `fields` and the
    next update that gets through writes it. The training loop and the system monitor's
    heartbeat both update it, hence the lock. `shared`: another process writes the file too
    (see the module's docstring).
    """

    def __init__(self, path: Path, fields: dict[str, Any], shared: bool = False) -> None:
        self.path = path
        self.fields = dict(fields)
        self.shared = shared
        self.writes = BestEffort(path.name)
        self._lock = threading.Lock()
        self._entered: set[str] = set()

    def write_now(self) -> None:
        """Write the fields as they are, raising OSError: the first write, which proves that the
        run folder is usable before anything starts."""
        with self._lock:
            self.fields.setdefault("updated", time.time())
            write_json_atomic(self.path, self.fields)

    def update(self, **changes: Any) -> bool:
        """Change fields and write the file (best effort: False if the write was skipped or
        failed); a field the run format does not know is a bug. The last update (phase
        `ended`) is tried even while failing writes rest: it is the one that must land."""
        return self._update(changes, touch=True, force=changes.get("phase") == "ended")

    def beat(self, **changes: Any) -> bool:
        """A heartbeat (a new system sample): refreshes `updated` outside training only, so
        that a hung step still shows as silence. One writer leaves the file alone in training
        (its progress windows write the sample); a shared file takes the sample anyway."""
        if not self.shared and self.phase == "training":
            return False
        return self._update(changes, touch=None)

    def _update(
        self,
        changes: dict[str, Any],
        touch: bool | None,
        force: bool = False,
        expected: Expected | None = None,
    ) -> bool:
        unknown = set(changes) - STATUS_KEYS
        if unknown:
            raise KeyError(f"status.json has no field {', '.join(sorted(unknown))}")
        with self._lock:
            if self.shared:
                merge = functools.partial(self._merge_and_write, changes, touch, expected)
                return self.writes.run(merge, self.path, force)
            _check(self.fields, expected)
            self._apply(changes, touch)
            write = functools.partial(write_json_atomic, self.path, self.fields)
            return self.writes.run(write, self.path, force)

    def _apply(self, changes: dict[str, Any], touch: bool | None) -> None:
        self.fields.update(changes)
        if touch or (touch is None and self.fields.get("phase") != "training"):
            self.fields["updated"] = time.time()

    def _merge_and_write(
        self, changes: dict[str, Any], touch: bool | None, expected: Expected | None
    ) -> None:
        with _folder_lock(self.path.parent):
            self.fields.update(_read(self.path))
            _check(self.fields, expected)
            self._apply(changes, touch)
            write_json_atomic(self.path, self.fields)

    def set_if(self, expected: Expected, **changes: Any) -> bool | None:
        """Change fields only if the file holds `expected`, checked under the same lock as the
        write. A shared file: the wrapper moves `starting` to `running`, or writes the progress
        Keras printed, only while the callback has not said more. True: written; False: the
        file holds something else; None: the write was skipped or failed (trainer.guard)."""
        try:
            return self._update(changes, touch=True, expected=expected) or None
        except _Moved:
            return False

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
            now = time.time()
            elapsed = now - self.fields.get("started", now)
            with contextlib.suppress(OSError, ValueError):
                print(
                    f"trainer: worker {self.fields.get('index')} {phase} "
                    f"({elapsed:.1f} s after start)",
                    flush=True,
                )


def _check(fields: Mapping[str, Any], expected: Expected | None) -> None:
    if expected is None:
        return
    if callable(expected):
        holds = expected(fields)
    else:
        holds = all(fields.get(k) == v for k, v in expected.items())
    if not holds:
        raise _Moved


def _read(path: Path) -> dict[str, Any]:
    """The file's fields as another writer left them; nothing if it is missing or damaged."""
    try:
        with open(path, "rb") as handle:
            data = json.loads(handle.read(MAX_STATUS_BYTES))
    except FileNotFoundError:
        return {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on the worker's folder, shared by every process that writes its
    status.json (flock on the folder itself: no lock file to create on a full disk). Without
    a folder or flock (some network file systems) the write goes on unlocked."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def initial_status(
    index: int, role: str, host: str, pid: int, epochs: int | None, now: float
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
        epoch=0 if epochs is not None else None,
        epochs=epochs,
        step=0 if epochs is not None else None,
        started=now,
        updated=now,
    ).to_dict()
