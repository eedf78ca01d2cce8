"""Incremental reader for TensorBoard event files, without TensorFlow.

An event file is a TFRecord stream: ``u64 length | u32 masked crc32c(length) | Event | u32
masked crc32c(Event)``. The trainer appends to these files while the launcher mirrors them
byte by byte, so a poll may see half a record at the end, a file that was copied again from
scratch, or (rarely) damaged bytes. This reader remembers where it stopped in each file,
reads only the bytes added since, stops at a partial record and resumes there next time,
checks both CRCs with the C implementation of CRC32C, skips damaged records and finds the
next good one, and starts over when a file was replaced or truncated.

Scalars come in two encodings: TF2's ``tf.summary.scalar`` stores a 0-d tensor, older
writers a ``simple_value``. Both end up in the same :class:`Series`.
"""

from __future__ import annotations

import os
import re
import time
from array import array
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dashboard.scalardecode import ScalarDecoding
from dashboard.series import MAX_POINTS_PER_SERIES, Arrays, PointBuffer
from dashboard.tfrecord import HEADER as _HEADER
from dashboard.tfrecord import MAX_RECORD, find_header, masked_crc32c
from dashboard.tfrecord import crc32c as _crc32c

__all__ = [
    "Arrays",
    "EventDirectory",
    "PollResult",
    "Problem",
    "Series",
    "read_scalars",
]

# New bytes are read and parsed this many at a time, so that a huge file never sits whole
# in memory (a single larger record doubles it for that record).
READ_CHUNK = 4 << 20
# Bytes compared at the start of a file on every poll, to notice a file rewritten in place.
_HEAD_BYTES = 64
_EVENT_FILE = re.compile(r"tfevents\.(\d+)")


class Series:
    """One tag's points in the order they were read: steps, wall times (unix s), values.

    Backed by a bounded :class:`PointBuffer`: at most ``limit`` points, older ones thinned
    (see dashboard.series).
    """

    __slots__ = ("_buffer",)

    def __init__(self, limit: int = MAX_POINTS_PER_SERIES) -> None:
        self._buffer = PointBuffer(limit)

    def __len__(self) -> int:
        return len(self._buffer)

    def extend(self, steps: np.ndarray, walls: np.ndarray, values: np.ndarray) -> None:
        self._buffer.extend(steps, walls, values)

    def arrays(self) -> Arrays:
        """Read-only views of the kept points: no copy, later reads never change them."""
        return self._buffer.arrays()

    def to_numpy(self) -> Arrays:
        """Writable copies of (steps, walls, values)."""
        steps, walls, values = self.arrays()
        return steps.copy(), walls.copy(), values.copy()

    @property
    def steps(self) -> np.ndarray:
        return self.arrays()[0]

    @property
    def walls(self) -> np.ndarray:
        return self.arrays()[1]

    @property
    def values(self) -> np.ndarray:
        return self.arrays()[2]

    @property
    def thinned(self) -> int:
        """Points dropped so far to stay within the bound."""
        return self._buffer.thinned


@dataclass(frozen=True)
class Problem:
    """Something wrong in an event file that the reader stepped over."""

    path: str
    offset: int
    message: str

    def __str__(self) -> str:
        return f"{self.path} at byte {self.offset}: {self.message}"

    def within(self, run_dir: Path) -> str:
        """The problem with its file named relative to the run (else by its name alone)."""
        path = Path(self.path)
        try:
            shown = str(path.relative_to(run_dir.resolve()))
        except ValueError:
            shown = path.name
        return f"{shown} at byte {self.offset}: {self.message}"


@dataclass
class PollResult:
    """What one poll found: new events and bytes, and whether everything was re-read."""

    events: int = 0
    bytes: int = 0
    reset: bool = False


@dataclass
class _FileState:
    path: Path
    offset: int = 0
    identity: tuple[int, int] = (0, 0)
    head: bytes = b""
    pending: int = 0
    resyncing: bool = False
    # The file's size at this read, and whether the next record is an oversized one still
    # being written (then only its header is read until it is whole, and skipped).
    size: int = 0
    waiting: bool = False
    # (inode, size, mtime) of a file read whole after a second without writes: while a
    # stat still says the same, nothing changed (any write moves mtime past our read).
    quiet: tuple[int, int, int] | None = None


@dataclass
class _Sink:
    """Where decoded scalars go, and the record headers already checked."""

    series: dict[str, Series] = field(default_factory=dict)
    limit: int = MAX_POINTS_PER_SERIES
    # Record header (length + its CRC) -> length, for headers whose CRC was checked: a
    # tag's records mostly share one, so the check is done once, not per record.
    lengths: dict[bytes, int] = field(default_factory=dict)

    def named(self, name: str) -> Series:
        series = self.series.get(name)
        if series is None:
            series = self.series[name] = Series(self.limit)
        return series


def _event_file_key(path: Path) -> tuple[int, str]:
    match = _EVENT_FILE.search(path.name)
    return (int(match.group(1)) if match else 0, path.name)


class EventDirectory(ScalarDecoding):
    """Every event file of one directory, read incrementally into one series per tag.

    Not thread-safe: callers that share one instance between threads hold a lock. It
    pickles (without its decoding caches, which it rebuilds), so a first load can be done
    in another process and carried on here.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        max_problems: int = 50,
        max_points: int = MAX_POINTS_PER_SERIES,
    ) -> None:
        self.directory = Path(directory)
        self.series: dict[str, Series] = {}
        self.problems: deque[Problem] = deque(maxlen=max_problems)
        self.events = 0
        self.max_points = max_points
        self._files: dict[str, _FileState] = {}
        self._sink = _Sink(self.series, max_points)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_sink"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._sink = _Sink(self.series, self.max_points)

    @property
    def fresh(self) -> bool:
        """Nothing read yet: the next poll is a first load."""
        return not self._files and not self.events

    def unread_bytes(self) -> int:
        """Bytes on disk not read yet (a cheap listing and stat, nothing is parsed)."""
        total = 0
        for path in self._list_files():
            state = self._files.get(self._key(path))
            try:
                size = path.stat().st_size
            except OSError:
                continue
            total += max(0, size - (state.offset + state.pending if state else 0))
        return total

    @property
    def pending_bytes(self) -> int:
        """Bytes at the ends of files that do not make a whole record yet."""
        return sum(state.pending for state in self._files.values())

    def poll(self) -> PollResult:
        """Read whatever was added since the last poll; re-read all if a file changed under us."""
        result = self._poll_once()
        if result.reset:
            self._clear()
            again = self._poll_once()
            result = PollResult(again.events, again.bytes, reset=True)
        return result

    def _clear(self) -> None:
        self.series.clear()
        self._sink = _Sink(self.series, self.max_points)
        self._files.clear()
        self.events = 0

    def _key(self, path: Path) -> str:
        """A file's name in this reader: its path below the directory."""
        return path.name if path.parent == self.directory else str(path.relative_to(self.directory))

    def _list_files(self) -> list[Path]:
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return []
        paths = []
        for entry in entries:
            try:
                if "tfevents" in entry.name and entry.is_file():
                    paths.append(Path(entry.path))
            except OSError:
                continue
        return sorted(paths, key=_event_file_key)

    def _poll_once(self) -> PollResult:
        result = PollResult()
        paths = self._list_files()
        names = {self._key(path) for path in paths}
        for gone in [name for name in self._files if name not in names]:
            self._problem(self._files[gone].path, 0, "file disappeared; reading the rest again")
            result.reset = True
        if result.reset:
            return result
        for path in paths:
            key = self._key(path)
            state = self._files.get(key)
            if state is None:
                state = self._files[key] = _FileState(path)
            before = self.events
            read = self._read_file(state)
            if read is None:
                result.reset = True
                return result
            result.bytes += read
            result.events += self.events - before
        return result

    def _read_file(self, state: _FileState) -> int | None:
        """Parse the new bytes of one file; None when the file was replaced or truncated."""
        consumed = 0
        try:
            seen = os.stat(state.path)
            if state.quiet == (seen.st_ino, seen.st_size, seen.st_mtime_ns):
                return 0
            with open(state.path, "rb") as handle:
                descriptor = handle.fileno()
                info = os.fstat(descriptor)
                identity = (info.st_dev, info.st_ino)
                if state.identity != (0, 0) and identity != state.identity:
                    self._problem(state.path, 0, "file was replaced; reading it again")
                    return None
                if info.st_size < state.offset + state.pending:
                    self._problem(state.path, info.st_size, "file shrank; reading it again")
                    return None
                if state.head and os.pread(descriptor, len(state.head), 0) != state.head:
                    self._problem(state.path, 0, "file was rewritten; reading it again")
                    return None
                state.identity = identity
                state.size = info.st_size
                chunk = READ_CHUNK
                while info.st_size > state.offset + state.pending:
                    buf = os.pread(descriptor, chunk, state.offset)
                    if not buf:
                        break
                    if len(state.head) < _HEAD_BYTES and state.offset == 0:
                        state.head = buf[:_HEAD_BYTES]
                    state.waiting = False
                    used = self._parse(state, buf)
                    state.offset += used
                    state.pending = max(0, len(buf) - used)
                    consumed += used
                    if len(buf) < chunk or state.waiting:
                        break
                    # A record longer than the chunk: read it whole next time round.
                    chunk = chunk * 2 if used == 0 else READ_CHUNK
                settled = info.st_mtime_ns < time.time_ns() - 1_000_000_000
                whole = state.offset + state.pending == info.st_size
                state.quiet = (
                    (info.st_ino, info.st_size, info.st_mtime_ns) if settled and whole else None
                )
        except FileNotFoundError:
            if state.identity == (0, 0):
                return 0
            self._problem(state.path, 0, "file disappeared; reading the rest again")
            return None
        except OSError as error:
            self._problem(state.path, state.offset, f"cannot read: {error.strerror or error}")
        return consumed

    def _problem(self, path: Path, offset: int, message: str) -> None:
        self.problems.append(Problem(str(path), offset, message))

    def _parse(self, state: _FileState, buf: bytes) -> int:
        """Decode whole records from buf; return how many bytes they took.

        Two passes. The first walks the records, checking each header (once per distinct
        header: a tag's records mostly share one) and computing each record's CRC; that
        loop is the only per-record Python. The second (:meth:`_decode`) compares the CRCs
        and decodes every plain scalar record at once with numpy.
        """
        size = len(buf)
        pos = 0
        crc = _crc32c
        lengths = self._sink.lengths
        starts = array("q")
        crcs = array("I")
        add_start = starts.append
        add_crc = crcs.append
        while size - pos >= 12:
            header = buf[pos : pos + 12]
            length = lengths.get(header)
            if length is None:
                length, header_crc = _HEADER.unpack(header)
                if masked_crc32c(header[:8]) == header_crc and length > MAX_RECORD:
                    if state.offset + pos + 16 + length > state.size:
                        state.waiting = True
                        break
                    self._problem(
                        state.path,
                        state.offset + pos,
                        f"record of {length / 1e6:,.0f} MB is over the {MAX_RECORD >> 20} MB"
                        " a reader takes; skipped",
                    )
                    pos += 16 + length
                    continue
                if masked_crc32c(header[:8]) != header_crc:
                    found = find_header(buf, pos + 1)
                    if not state.resyncing:
                        self._problem(
                            state.path, state.offset + pos, "damaged record header; skipping"
                        )
                    if found is None:
                        state.resyncing = True
                        pos = max(pos + 1, size - 11)
                        break
                    pos = found
                    state.resyncing = False
                    continue
                if len(lengths) > 4096:
                    lengths.clear()
                lengths[header] = length
            state.resyncing = False
            end = pos + 12 + length
            if end + 4 > size:
                break
            add_start(pos)
            add_crc(crc(buf[pos + 12 : end]))
            pos = end + 4
        if starts:
            self._decode(state, buf, starts, crcs)
        return pos


def read_scalars(directory: str | os.PathLike[str]) -> dict[str, Series]:
    """All scalars of one directory's event files, read once."""
    reader = EventDirectory(directory)
    reader.poll()
    return reader.series
