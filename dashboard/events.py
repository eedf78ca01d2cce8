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
import struct
import time
from array import array
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
from tensorboard.compat.proto import event_pb2

from dashboard.series import MAX_POINTS_PER_SERIES, Arrays, PointBuffer

__all__ = [
    "Arrays",
    "EventDirectory",
    "PollResult",
    "Problem",
    "Series",
    "read_scalars",
    "scalar_of",
]

_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF
_HEADER = struct.Struct("<QI")
_U64 = struct.Struct("<Q")
_U32S = struct.Struct("<I")
_F64 = struct.Struct("<d")
_F32 = struct.Struct("<f")
# Up to this many records per chunk are decoded one by one: numpy's set-up costs more.
_FEW_RECORDS = 64
# Distinct record layouts of one length decoded by template per chunk (more: the slow path).
_MAX_TEMPLATES = 64
# A record whose header announces more than this is skipped whole (with a problem) once all
# of its bytes are on disk, without being read: no scalar event comes near it, and an image
# that big would not be shown anyway.
MAX_RECORD = 64 << 20
# New bytes are read and parsed this many at a time, so that a huge file never sits whole
# in memory (a single larger record doubles it for that record).
READ_CHUNK = 4 << 20
# Bytes compared at the start of a file on every poll, to notice a file rewritten in place.
_HEAD_BYTES = 64
# What TF2's scalar summary puts between the tag and the float: field 8 (tensor, 10 bytes)
# holding dtype DT_FLOAT, an empty shape and a 4-byte tensor_content.
_TF2_FLOAT_TENSOR = b"\x42\x0a\x08\x01\x12\x00\x22\x04"
_EVENT_FILE = re.compile(r"tfevents\.(\d+)")

if google_crc32c.implementation != "c":  # pragma: no cover - depends on the wheel
    raise ImportError("google-crc32c has no C extension here: reading events would crawl")

_crc32c = google_crc32c.value


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC32C, so that CRCs of CRCs do not look like data."""
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & _U32


def frame_record(data: bytes) -> bytes:
    """One TFRecord: what a writer appends to an event file for one serialized Event."""
    length = struct.pack("<Q", len(data))
    return (
        length
        + struct.pack("<I", masked_crc32c(length))
        + data
        + struct.pack("<I", masked_crc32c(data))
    )


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


class EventDirectory:
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

    def _decode(self, state: _FileState, buf: bytes, starts: array, crcs: array) -> None:
        """Check the records' CRCs and turn them into points, in the order they were read.

        A scalar event is ``wall_time (1) | step (2, a varint) | summary (5)``, and a tag's
        summary bytes repeat from point to point but for the 4-byte float. A big batch is
        grouped by those bytes (a template), each template is checked field by field once
        (:func:`_template`) and its points are gathered with numpy; a few records (a live
        refresh) are checked one by one, which costs less than numpy's set-up. Anything
        else (other summaries, odd layouts, steps past 2**35) goes through the protobuf
        parser. All give the same points.
        """
        found: dict[str, list[tuple[np.ndarray, ...]]] = {}
        if len(starts) <= _FEW_RECORDS:
            slow = self._decode_few(state, buf, starts, crcs, found)
        else:
            slow = self._decode_many(state, buf, np.frombuffer(starts, np.int64), crcs, found)
        for index in slow:
            at = starts[index] + 12
            self._decode_slow(
                state,
                state.offset + starts[index],
                buf[at : at + _U64.unpack_from(buf, starts[index])[0]],
                index,
                found,
            )
        for tag, pieces in found.items():
            order_parts, step_parts, wall_parts, value_parts = zip(*pieces, strict=True)
            steps_all = np.concatenate(step_parts)
            walls_all = np.concatenate(wall_parts)
            values_all = np.concatenate(value_parts)
            if len(pieces) > 1:
                order = np.argsort(np.concatenate(order_parts), kind="stable")
                steps_all, walls_all, values_all = (
                    steps_all[order],
                    walls_all[order],
                    values_all[order],
                )
            self._sink.named(tag).extend(steps_all, walls_all, values_all)
            self.events += len(steps_all)

    def _decode_few(
        self,
        state: _FileState,
        buf: bytes,
        starts: array,
        crcs: array,
        found: dict[str, list[tuple[np.ndarray, ...]]],
    ) -> list[int]:
        """Records one by one; returns the indices left to the protobuf parser."""
        slow = []
        points: dict[str, tuple[list[int], list[int], list[float], list[float]]] = {}
        for index, (pos, crc) in enumerate(zip(starts, crcs, strict=True)):
            end = pos + 12 + _U64.unpack_from(buf, pos)[0]
            if (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & _U32 != _U32S.unpack_from(buf, end)[0]:
                self._problem(state.path, state.offset + pos, "record fails its CRC; skipped")
                continue
            point = _scalar_point(buf[pos + 12 : end])
            if point is None:
                slow.append(index)
                continue
            tag, step, wall, value = point
            columns = points.setdefault(tag, ([], [], [], []))
            columns[0].append(index)
            columns[1].append(step)
            columns[2].append(wall)
            columns[3].append(value)
        for tag, (order, steps, walls, values) in points.items():
            found.setdefault(tag, []).append(
                (
                    np.array(order),
                    np.array(steps, dtype=np.int64),
                    np.array(walls, dtype=np.float64),
                    np.array(values, dtype=np.float64),
                )
            )
        return slow

    def _decode_many(
        self,
        state: _FileState,
        buf: bytes,
        starts: np.ndarray,
        crcs: array,
        found: dict[str, list[tuple[np.ndarray, ...]]],
    ) -> list[int]:
        """Records in bulk with numpy; returns the indices left to the protobuf parser."""
        data = np.frombuffer(buf, np.uint8)
        u64 = _unaligned(buf, "<u8")
        heads = u64[starts].astype(np.int64)
        begins = starts + 12
        ends = begins + heads
        stored = _unaligned(buf, "<u4")[ends].astype(np.int64)
        computed = np.frombuffer(crcs, np.uint32).astype(np.int64)
        masked = (((computed >> 15) | (computed << 17)) + _MASK_DELTA) & _U32
        good = masked == stored
        for bad in np.flatnonzero(~good):
            self._problem(
                state.path, state.offset + int(starts[bad]), "record fails its CRC; skipped"
            )
        # Candidates for the fast path: long enough, starting with the wall time.
        fast = good & (heads > 20)
        fast[fast] = data[begins[fast]] == 0x09
        rows = np.flatnonzero(fast)
        slow = good.copy()
        if len(rows):
            begin = begins[rows]
            walls = _unaligned(buf, "<f8")[begin + 1]
            has_step = data[begin + 9] == 0x10
            # The step: a varint of 1 to 5 bytes (steps below 2**35) at byte 10.
            word = u64[begin + 10]
            steps = np.zeros(len(rows), dtype=np.uint64)
            width = np.zeros(len(rows), dtype=np.int64)
            going = np.ones(len(rows), dtype=bool)
            for byte in range(5):
                part = (word >> np.uint64(8 * byte)) & np.uint64(0xFF)
                steps |= np.where(going, (part & np.uint64(0x7F)) << np.uint64(7 * byte), 0)
                width += going
                going &= part >= 0x80
            prefix = np.where(has_step, 10 + width, 9)
            rest = heads[rows] - prefix
            where = begin + prefix
            tag_end = 6 + data[where + 5].astype(np.int64)
            inside = (rest >= 14) & (tag_end < rest) & (~going | ~has_step)
            tensor = data[where + np.minimum(tag_end, rest - 1)] == 0x42
            value_at = tag_end + np.where(tensor, 8, 1)
            inside &= value_at + 4 <= rest
            keys = (rest << 20) | (tag_end << 1) | tensor
            steps_signed = np.where(has_step, steps.astype(np.int64), 0)
            for key in np.unique(keys[inside]):
                group = np.flatnonzero(inside & (keys == key))
                first = group[0]
                self._decode_group(
                    buf,
                    int(rest[first]),
                    int(value_at[first]),
                    where[group],
                    rows[group],
                    steps_signed[group],
                    walls[group],
                    found,
                    slow,
                )
        return [int(index) for index in np.flatnonzero(slow)]

    def _decode_group(
        self,
        buf: bytes,
        length: int,
        value_at: int,
        where: np.ndarray,
        rows: np.ndarray,
        steps: np.ndarray,
        walls: np.ndarray,
        found: dict[str, list[tuple[np.ndarray, ...]]],
        slow: np.ndarray,
    ) -> None:
        """Summaries of one length and layout (at ``where``), one template at a time.

        Their bytes are compared 8 at a time against the first unmatched one's, the float's
        4 bytes masked out; a template that passes :func:`_template` gives its points.
        """
        offsets = list(range(0, length - 7, 8))
        if length % 8:
            offsets.append(length - 8)
        masks = []
        for offset in offsets:
            mask = 0
            for byte in range(8):
                if not value_at <= offset + byte < value_at + 4:
                    mask |= 0xFF << (8 * byte)
            masks.append(mask)
        words = _unaligned(buf, "<u8")[where[:, None] + np.array(offsets)]
        words &= np.array(masks, dtype=np.uint64)
        left = np.ones(len(rows), dtype=bool)
        for _ in range(_MAX_TEMPLATES):
            if not left.any():
                break
            first = int(np.argmax(left))
            same = left & (words == words[first]).all(axis=1)
            left &= ~same
            start = int(where[first])
            template = _template(buf[start : start + length])
            if template is None or template[1] != value_at:
                continue
            picked = np.flatnonzero(same)
            values = _unaligned(buf, "<f4")[where[picked] + value_at]
            found.setdefault(template[0], []).append(
                (rows[picked], steps[picked], walls[picked], values.astype(np.float64))
            )
            slow[rows[picked]] = False

    def _decode_slow(
        self,
        state: _FileState,
        offset: int,
        data: bytes,
        index: int,
        found: dict[str, list[tuple[np.ndarray, ...]]],
    ) -> None:
        try:
            event = event_pb2.Event.FromString(data)
        except Exception:  # protobuf raises its own DecodeError types; all mean "bad bytes"
            self._problem(state.path, offset, "record is not an Event; skipped")
            return
        if not event.HasField("summary"):
            return
        for value in event.summary.value:
            number = scalar_of(value)
            if number is None:
                continue
            found.setdefault(value.tag, []).append(
                (
                    np.array([index]),
                    np.array([event.step], dtype=np.int64),
                    np.array([event.wall_time]),
                    np.array([number]),
                )
            )


def find_header(buf: bytes, start: int) -> int | None:
    """The next offset whose 12 bytes make a valid header, or None if there is none yet."""
    unpack_header = _HEADER.unpack_from
    for pos in range(start, len(buf) - 11):
        length, header_crc = unpack_header(buf, pos)
        if length <= MAX_RECORD and masked_crc32c(buf[pos : pos + 8]) == header_crc:
            return pos
    return None


def _unaligned(buf: bytes, dtype: str) -> np.ndarray:
    """Element i is the ``dtype`` number whose bytes start at byte i of buf (no copy)."""
    size = np.dtype(dtype).itemsize
    return np.ndarray((max(0, len(buf) - size + 1),), dtype=dtype, buffer=buf, strides=(1,))


def _scalar_point(data: bytes) -> tuple[str, int, float, float] | None:
    """(tag, step, wall time, value) of one plain scalar event, or None (see _decode)."""
    if len(data) <= 20 or data[0] != 0x09:
        return None
    wall = _F64.unpack_from(data, 1)[0]
    step = 0
    at = 9
    if data[9] == 0x10:
        for at in range(10, 15):
            step |= (data[at] & 0x7F) << (7 * (at - 10))
            if data[at] < 0x80:
                break
        else:
            return None
        at += 1
    template = _template(data[at:])
    if template is None:
        return None
    tag, value_at = template
    return tag, step, wall, _F32.unpack_from(data, at + value_at)[0]


def _template(summary: bytes) -> tuple[str, int] | None:
    """(tag, offset of the float) when a record's summary bytes hold one plain scalar.

    The layout: one summary (5) holding one value (1) whose tag (1) is followed by a TF2
    float tensor (8) or a simple_value (2), and at most the metadata (9) after it. Every
    length must add up exactly; anything else is left to the protobuf parser.
    """
    length = len(summary)
    if length < 14 or not (
        summary[0] == 0x2A
        and summary[1] < 0x80
        and 2 + summary[1] == length
        and summary[2] == 0x0A
        and summary[3] < 0x80
        and 4 + summary[3] == length
        and summary[4] == 0x0A
        and summary[5] < 0x80
    ):
        return None
    tag_end = 6 + summary[5]
    if summary[tag_end : tag_end + 8] == _TF2_FLOAT_TENSOR:
        value_at = tag_end + 8
    elif tag_end < length and summary[tag_end] == 0x15:
        value_at = tag_end + 1
    else:
        return None
    rest = value_at + 4
    if not (
        rest == length
        or (rest + 2 <= length and summary[rest] == 0x4A and rest + 2 + summary[rest + 1] == length)
    ):
        return None
    return summary[6:tag_end].decode("utf-8", "replace"), value_at


# dtype enum -> (struct format of one element, repeated field name) for 0-d numeric tensors.
_TENSOR_DTYPES: dict[int, tuple[str, str]] = {
    1: ("<f", "float_val"),
    2: ("<d", "double_val"),
    3: ("<i", "int_val"),
    4: ("<B", "int_val"),
    5: ("<h", "int_val"),
    6: ("<b", "int_val"),
    9: ("<q", "int64_val"),
    10: ("<?", "bool_val"),
    17: ("<H", "int_val"),
    19: ("<e", "half_val"),
    22: ("<I", "uint32_val"),
    23: ("<Q", "uint64_val"),
}


def scalar_of(value: Any) -> float | None:
    """The number in a Summary.Value, whether a simple_value or a one-element tensor."""
    kind = value.WhichOneof("value")
    if kind == "simple_value":
        return float(value.simple_value)
    if kind != "tensor":
        return None
    tensor = value.tensor
    elements = 1
    for dim in tensor.tensor_shape.dim:
        elements *= dim.size
    spec = _TENSOR_DTYPES.get(tensor.dtype)
    if elements != 1 or spec is None:
        return None
    fmt, field_name = spec
    content = tensor.tensor_content
    if content:
        if len(content) != struct.calcsize(fmt):
            return None
        return float(struct.unpack(fmt, content)[0])
    values = getattr(tensor, field_name)
    if len(values) != 1:
        return None
    if field_name == "half_val":
        return float(struct.unpack("<e", struct.pack("<H", values[0] & 0xFFFF))[0])
    return float(values[0])


def read_scalars(directory: str | os.PathLike[str]) -> dict[str, Series]:
    """All scalars of one directory's event files, read once."""
    reader = EventDirectory(directory)
    reader.poll()
    return reader.series
