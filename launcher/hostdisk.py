"""A worker host's disk where its run lives: how full, whether it takes writes, and what the
launcher says and records about it while the job goes on.

The free space arrives with every poll (commands.disk_command on an SSH host or a Slurm login
node, whose run folder the tasks share; statvfs here); the job goes on whatever it says (the
trainer only skips its monitoring while the disk is full), but the table, cluster.json
`hosts[i].disk` and a failure's first line name it. A worker's shell (a Slurm job's script)
writes the same line when its program failed, for a record closed after the launcher died.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from launcher.commands import DISK_MARK

FULL_MB = 1.0  # less than this is full: a status.json and an exit code need a few KB
REMEMBER_SEC = 60.0  # a worker that fails this soon after its disk was full failed of it


@dataclass(frozen=True)
class HostDisk:
    """The file system of a run folder as one poll saw it."""

    path: str
    free_mb: float | None  # None: not known (the folder is not there yet)
    writable: bool = True

    @property
    def full(self) -> bool:
        """Full or refusing writes: either way the worker's files cannot be written."""
        return not self.writable or (self.free_mb is not None and self.free_mb < FULL_MB)

    def message(self) -> str:
        """`no space left in /path (0 MB free)`, `/path is not writable (read-only?)`."""
        if not self.writable:
            return f"{self.path} is not writable (a read-only file system or its permissions)"
        return f"no space left in {self.path} ({self.free_mb or 0:.0f} MB free)"

    def record(self) -> dict[str, Any]:
        """cluster.json `hosts[i].disk` (and the shape of a status.json `disk`)."""
        return {
            "full": self.full,
            "path": self.path,
            "free_mb": None if self.free_mb is None else round(self.free_mb, 1),
            "message": self.message() if self.full else "",
        }


def parse_disk(text: str, path: str) -> HostDisk | None:
    """The `disk FREE_KB w|ro` line among a poll's output lines, or None."""
    for line in text.splitlines():
        words = line.split()
        if words[:1] != [DISK_MARK]:
            continue
        if len(words) < 3 or not words[1].isdigit():
            return HostDisk(path, None)  # no folder (yet): nothing known about its disk
        return HostDisk(path, int(words[1]) / 1024, words[2] != "ro")
    return None


def disk_change(disk: HostDisk, recorded: object) -> dict[str, Any] | None:
    """cluster.json's `disk` record for `disk` when it differs in fullness from `recorded`
    (what the record holds now), else None: the record says each change once."""
    was = isinstance(recorded, dict) and recorded.get("full") is True
    return disk.record() if disk.full != was else None


def closing_disk(now: HostDisk | None, ended: HostDisk | None) -> HostDisk | None:
    """A worker's disk as a record closed after its launcher died tells it: full now (as the
    watch would have seen it), else full when the worker failed (its shell's own line: the
    folder may have been emptied since), else as it is now."""
    for disk in (now, ended):
        if disk is not None and disk.full:
            return disk
    return now


def local_disk(path: str) -> HostDisk | None:
    """The same facts for a run folder on this machine, without a subprocess."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return HostDisk(path, st.f_bavail * st.f_frsize / 1048576, os.access(path, os.W_OK))


@dataclass
class DiskWatch:
    """One worker's host disk across polls: the news to print and record, once per change,
    and the trouble that names a failure."""

    last: HostDisk | None = None
    full_seen: HostDisk | None = None  # the last poll that found it full
    full_at: float | None = None  # when (launcher clock)
    goes_on: str = "the worker trains on, its monitoring waits for room"  # said after the cause

    def seen(self, disk: HostDisk | None, now: float) -> str | None:
        """Take in one poll's disk; a line to print when it became full or has room again."""
        if disk is None:
            return None
        was = self.last.full if self.last is not None else False
        self.last = disk
        if disk.full:
            self.full_seen, self.full_at = disk, now
        if disk.full and not was:
            return f"{disk.message()}; {self.goes_on}"
        if was and not disk.full:
            return f"has room again in {disk.path} ({disk.free_mb or 0:.0f} MB free)"
        return None

    @property
    def full(self) -> bool:
        return self.last is not None and self.last.full

    def changed(self, recorded: object) -> dict[str, Any] | None:
        """The `disk` record when it differs in fullness from what is recorded, else None."""
        return None if self.last is None else disk_change(self.last, recorded)

    def trouble(self, now: float) -> str | None:
        """Why a worker that just failed may have failed: its disk, full now or lately."""
        if self.last is not None and self.last.full:
            return self.last.message()
        lately = self.full_at is not None and now - self.full_at <= REMEMBER_SEC
        return self.full_seen.message() if self.full_seen is not None and lately else None

    def clear(self) -> None:
        """A new attempt: what an earlier one saw no longer names a failure."""
        self.full_seen = self.full_at = None
