"""Monitoring never ends training: writes that exist only so we can watch a worker survive a
full disk, a quota, a read-only file system and a vanished folder.

status.json, the progress and system event files, the heartbeat and the worker's own log
lines are all best effort: a failing write is skipped, warned about once, tried again
later, and its recovery is announced. The work itself (the chief's model.h5, metrics.json,
backups) may still fail a job, and then `failure_line` names the cause first:
`no space left on device writing /path/model.h5`.

Standard library only: the wrapper of a user's program uses it without TensorFlow.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

DISK_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.ENOENT: "folder vanished",
}
"""What the host's disk did to a write, as a failure line says it (ENOENT: the run folder
was removed while the worker wrote into it)."""
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
# TensorFlow and h5py name these only in their messages (h5py: `errno = 28`).
_STRERRORS = {os.strerror(code).lower(): DISK_ERRNOS[code] for code in _FULL}
_STRERRORS.update({f"errno = {code}": DISK_ERRNOS[code] for code in _FULL})
RETRY_SECONDS = 10.0
"""How long a failing monitoring write rests before it is tried again."""
LOG_BACKLOG_BYTES = 16 * 1024
"""Log output kept while the log cannot be written, written out once it can (the first part:
it holds the warning that says why)."""


def disk_cause(error: BaseException, writing: bool = False) -> str | None:
    """`no space left on device` (or a quota, a read-only file system) if the error, or one it
    was raised from, is that disk trouble; TensorFlow and h5py only say so in their messages.
    `writing`: the error came from a write we made, so EACCES and ENOENT are the disk's too."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        code = getattr(current, "errno", None)
        if isinstance(code, int) and code in DISK_ERRNOS and (writing or code in _FULL):
            return DISK_ERRNOS[code]
        text = str(current).lower()
        for needle, cause in _STRERRORS.items():
            if needle in text:
                return cause
        current = current.__cause__ or current.__context__
    return None


def failure_line(error: BaseException, writing: Path | None, fallback: str) -> str:
    """The one line a failed worker reports: its disk's trouble and the file it was writing
    when that is the cause, else `fallback` (the error's own first line)."""
    cause = disk_cause(error, writing=writing is not None)
    if cause is None:
        return fallback
    return f"{cause} writing {writing}" if writing is not None else f"{cause}: {fallback}"


def _say(line: str) -> None:
    """One line into the worker's log (stderr), itself best effort."""
    with contextlib.suppress(OSError, ValueError):
        print(line, file=sys.stderr, flush=True)


class BestEffort:
    """One kind of monitoring write (say `status.json`): tried, and when it fails with an
    OSError, skipped with one warning, rested for `retry` seconds, then tried again; the first
    success after a failure says so. Thread-safe."""

    def __init__(
        self,
        what: str,
        retry: float = RETRY_SECONDS,
        say: Callable[[str], None] = _say,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.retry = retry
        self.say = say
        self.clock = clock
        self.failing_since: float | None = None
        self.next_try = 0.0
        self.skipped = 0
        self._lock = threading.Lock()

    @property
    def failing(self) -> bool:
        return self.failing_since is not None

    def due(self) -> bool:
        """Whether to try now: always while writes work, every `retry` seconds once they fail."""
        return self.failing_since is None or self.clock() >= self.next_try

    def run(
        self, write: Callable[[], object], path: Path | str | None = None, force: bool = False
    ) -> bool:
        """Do `write` if due (or `force`d: a last write); True if it was done, False if
        skipped or it failed."""
        with self._lock:
            if not (force or self.due()):
                self.skipped += 1
                return False
            try:
                write()
            except OSError as error:
                self.failed(error, path)
                return False
            self.succeeded()
            return True

    def failed(self, error: BaseException, path: Path | str | None = None) -> None:
        """Record a failure of this write (the caller caught it); warn on the first only."""
        now = self.clock()
        self.next_try = now + self.retry
        self.skipped += 1
        if self.failing_since is None:
            self.failing_since = now
            cause = disk_cause(error, writing=True) or getattr(error, "strerror", None) or error
            where = f" ({path})" if path else ""
            self.say(
                f"tfcluster: cannot write {self.what}{where}: {cause}; training goes on "
                f"without it, trying again every {self.retry:g} s"
            )

    def succeeded(self) -> None:
        if self.failing_since is not None:
            self.say(
                f"tfcluster: writing {self.what} works again after "
                f"{self.clock() - self.failing_since:.0f} s ({self.skipped} write(s) skipped)"
            )
            self.failing_since = None
            self.skipped = 0


class SafeStream:
    """A text stream over a file descriptor (stdout, stderr) whose writes never raise: on a
    full disk the output is kept (the first LOG_BACKLOG_BYTES) or counted, and written with a
    note of what was lost once the disk takes it again. Unbuffered: one write, one syscall."""

    def __init__(self, fd: int, original: IO[str] | None = None) -> None:
        self.fd = fd
        self.original = original
        self.encoding = getattr(original, "encoding", None) or "utf-8"
        self.errors = "replace"
        self.backlog = bytearray()
        self.lost = 0
        self.cause: str | None = None
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        self.write_bytes(text.encode(self.encoding, "replace"))
        return len(text)

    def write_bytes(self, data: bytes) -> None:
        with self._lock:
            if (self.backlog or self.lost) and not self._drain():
                self._keep(data)
                return
            try:
                self._write_all(data)
            except OSError as error:
                self.cause = disk_cause(error, writing=True) or error.strerror or str(error)
                self._keep(data)

    def _keep(self, data: bytes) -> None:
        room = LOG_BACKLOG_BYTES - len(self.backlog)
        self.backlog += data[: max(room, 0)]
        self.lost += max(len(data) - max(room, 0), 0)

    def _drain(self) -> bool:
        """Write what was kept, and a note of what was not; False if the disk still refuses."""
        note = (
            f"\ntfcluster: {self.lost} bytes of output lost here ({self.cause})\n".encode()
            if self.lost
            else b""
        )
        try:
            self._write_all(bytes(self.backlog) + note)
        except OSError:
            return False
        self.backlog.clear()
        self.lost = 0
        return True

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]

    def flush(self) -> None:
        with self._lock:
            if self.backlog or self.lost:
                self._drain()

    def fileno(self) -> int:
        return self.fd

    def isatty(self) -> bool:
        return os.isatty(self.fd)

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def __getattr__(self, name: str) -> object:
        if self.original is None:
            raise AttributeError(name)
        return getattr(self.original, name)


def protect_std_streams() -> None:
    """Make print() to stdout and stderr (the worker's log) survive a full disk."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if isinstance(stream, SafeStream):
            continue
        try:
            fd = stream.fileno()
            stream.flush()
        except (AttributeError, OSError, ValueError):
            continue  # not a real file (a test's capture): nothing to protect
        setattr(sys, name, SafeStream(fd, stream))
