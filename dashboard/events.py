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
_FOOTER = struct.Struct("<I")
_DOUBLE = struct.Struct("<d")
_FLOAT = struct.Struct("<f")
# A header whose CRC is right but which announces more than this is treated as damage:
# no scalar event comes near it, and trusting it would make the reader wait forever.
_MAX_RECORD = 64 << 20
# New bytes are read and parsed this many at a time, so that a huge file never sits whole
# in memory (a single larger record doubles it for that record).
READ_CHUNK = 16 << 20
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

    The parser appends to compact staging arrays (the fastest append Python has); at the end
    of each chunk they move in one copy into a bounded :class:`PointBuffer`, which keeps at
    most ``limit`` points (older ones thinned, see dashboard.series).
    """

    __slots__ = ("_buffer", "new_steps", "new_values", "new_walls")

    def __init__(self, limit: int = MAX_POINTS_PER_SERIES) -> None:
        self._buffer = PointBuffer(limit)
        self.new_steps = array("q")
        self.new_walls = array("d")
        self.new_values = array("d")

    def __len__(self) -> int:
        return len(self._buffer) + len(self.new_steps)

    def append(self, step: int, wall: float, value: float) -> None:
        self.new_steps.append(step)
        self.new_walls.append(wall)
        self.new_values.append(value)

    def flush(self) -> None:
        """Move staged points into the buffer (the staging arrays are emptied in place)."""
        if not self.new_steps:
            return
        self._buffer.extend(
            np.frombuffer(self.new_steps, dtype=np.int64),
            np.frombuffer(self.new_walls, dtype=np.float64),
            np.frombuffer(self.new_values, dtype=np.float64),
        )
        del self.new_steps[:], self.new_walls[:], self.new_values[:]

    def arrays(self) -> Arrays:
        """Read-only views of the kept points: no copy, later reads never change them."""
        self.flush()
        return self._buffer.arrays()

    def to_numpy(self) -> Arrays:
        """Writable copies of (steps, walls, values)."""
        return tuple(np.array(column) for column in self.arrays())  # type: ignore[return-value]

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


@dataclass
class _Sink:
    """Where decoded scalars go, with a per-tag cache of bound append methods."""

    series: dict[str, Series] = field(default_factory=dict)
    limit: int = MAX_POINTS_PER_SERIES
    appenders: dict[bytes, tuple[Any, Any, Any]] = field(default_factory=dict)
    # Record headers (length + its CRC) already checked, and the repeating bytes of each
    # tag's scalar records: both only ever speed up, never change, what is decoded.
    good_headers: set[bytes] = field(default_factory=set)
    templates: dict[bytes, tuple[tuple[Any, Any, Any], bytes]] = field(default_factory=dict)

    def named(self, name: str) -> Series:
        series = self.series.get(name)
        if series is None:
            series = self.series[name] = Series(self.limit)
        return series

    def appender(self, tag: bytes) -> tuple[Any, Any, Any]:
        entry = self.appenders.get(tag)
        if entry is not None:
            return entry
        series = self.named(tag.decode("utf-8", "replace"))
        entry = (series.new_steps.append, series.new_walls.append, series.new_values.append)
        self.appenders[tag] = entry
        return entry


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """A protobuf varint at pos (int64, two's complement): (value, position after it)."""
    value = 0
    shift = 0
    while pos < len(data):
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
    if value >= 1 << 63:
        value -= 1 << 64
    return value, pos


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
        self.resets = 0
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

    def unread_bytes(self) -> int:
        """Bytes on disk not read yet (a cheap listing and stat, nothing is parsed)."""
        total = 0
        for path in self._list_files():
            state = self._files.get(path.name)
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

    @property
    def files(self) -> list[Path]:
        return [state.path for state in self._files.values()]

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
        self.resets += 1

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
        names = {path.name for path in paths}
        for gone in [name for name in self._files if name not in names]:
            self._problem(self._files[gone].path, 0, "file disappeared; reading the rest again")
            result.reset = True
        if result.reset:
            return result
        for path in paths:
            state = self._files.get(path.name)
            if state is None:
                state = self._files[path.name] = _FileState(path)
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
                chunk = READ_CHUNK
                while info.st_size > state.offset + state.pending:
                    buf = os.pread(descriptor, chunk, state.offset)
                    if not buf:
                        break
                    if len(state.head) < _HEAD_BYTES and state.offset == 0:
                        state.head = buf[:_HEAD_BYTES]
                    used = self._parse(state, buf)
                    state.offset += used
                    state.pending = len(buf) - used
                    consumed += used
                    self._flush()
                    if len(buf) < chunk:
                        break
                    # A record longer than the chunk: read it whole next time round.
                    chunk = chunk * 2 if used == 0 else READ_CHUNK
        except FileNotFoundError:
            if state.identity == (0, 0):
                return 0
            self._problem(state.path, 0, "file disappeared; reading the rest again")
            return None
        except OSError as error:
            self._problem(state.path, state.offset, f"cannot read: {error.strerror or error}")
        return consumed

    def _flush(self) -> None:
        for series in self.series.values():
            series.flush()

    def _problem(self, path: Path, offset: int, message: str) -> None:
        self.problems.append(Problem(str(path), offset, message))

    def _parse(self, state: _FileState, buf: bytes) -> int:
        """Decode whole records from buf; return how many bytes they took.

        A scalar event is a few bytes that change (wall time, step, value) around bytes that
        repeat for every point of a tag. The first record of each tag is checked field by
        field and its repeating bytes become a template; later records that match the
        template byte for byte are decoded with three unpacks. Anything else goes through
        the protobuf parser. Both paths give the same points.
        """
        size = len(buf)
        pos = 0
        base = state.offset
        unpack_header = _HEADER.unpack_from
        unpack_footer = _FOOTER.unpack_from
        unpack_double = _DOUBLE.unpack_from
        unpack_float = _FLOAT.unpack_from
        crc = _crc32c
        good_headers = self._sink.good_headers
        templates = self._sink.templates
        events = 0
        while size - pos >= 12:
            header = buf[pos : pos + 12]
            if header not in good_headers:
                length, header_crc = unpack_header(header)
                c = crc(header[:8])
                if ((((c >> 15) | (c << 17)) + _MASK_DELTA) & _U32) != header_crc or (
                    length > _MAX_RECORD
                ):
                    found = self._resync(buf, pos + 1)
                    if not state.resyncing:
                        self._problem(state.path, base + pos, "damaged record header; skipping")
                    if found is None:
                        state.resyncing = True
                        return max(pos + 1, size - 11)
                    pos = found
                    state.resyncing = False
                    continue
                if len(good_headers) > 4096:
                    good_headers.clear()
                good_headers.add(header)
            state.resyncing = False
            length = unpack_header(header)[0]
            end = pos + 12 + length
            if end + 4 > size:
                break
            data = buf[pos + 12 : end]
            c = crc(data)
            if ((((c >> 15) | (c << 17)) + _MASK_DELTA) & _U32) != unpack_footer(buf, end)[0]:
                self._problem(state.path, base + pos, "record fails its CRC; skipped")
                pos = end + 4
                continue
            pos = end + 4
            if length > 20 and data[0] == 0x09:
                # Field 2 (step) is a varint; most steps take one to three bytes.
                if data[9] == 0x10:
                    b = data[10]
                    if b < 0x80:
                        step, p = b, 11
                    elif data[11] < 0x80:
                        step, p = (b & 0x7F) | (data[11] << 7), 12
                    else:
                        step, p = _varint(data, 10)
                else:
                    step, p = 0, 9
                if p + 6 < length:
                    tag_end = p + 6 + data[p + 5]
                    template = templates.get(data[p : tag_end + 8])
                    if template is not None and data[tag_end + 12 :] == template[1]:
                        entry = template[0]
                        entry[0](step)
                        entry[1](unpack_double(data, 1)[0])
                        entry[2](unpack_float(data, tag_end + 8)[0])
                        events += 1
                        continue
                    template = templates.get(data[p : tag_end + 1])
                    if template is not None and data[tag_end + 5 :] == template[1]:
                        entry = template[0]
                        entry[0](step)
                        entry[1](unpack_double(data, 1)[0])
                        entry[2](unpack_float(data, tag_end + 1)[0])
                        events += 1
                        continue
                    if self._learn(data, p, step):
                        events += 1
                        continue
            events += self._decode_slow(state, base + pos - length - 16, data)
        self.events += events
        return pos

    def _learn(self, data: bytes, p: int, step: int) -> bool:
        """Check a record field by field; if it is a plain scalar, keep its template.

        The layout: wall_time (1), optional step (2), then one summary (5) holding one value
        (1) whose tag (1) is followed by a TF2 float tensor (8) or a simple_value (2), and at
        most the metadata (9) after it. Every length must add up exactly.
        """
        length = len(data)
        if not (
            data[p] == 0x2A
            and data[p + 1] < 0x80
            and p + 2 + data[p + 1] == length
            and data[p + 2] == 0x0A
            and data[p + 3] < 0x80
            and p + 4 + data[p + 3] == length
            and data[p + 4] == 0x0A
            and data[p + 5] < 0x80
        ):
            return False
        tag_end = p + 6 + data[p + 5]
        if data[tag_end : tag_end + 8] == _TF2_FLOAT_TENSOR:
            value_at = tag_end + 8
        elif tag_end < length and data[tag_end] == 0x15:
            value_at = tag_end + 1
        else:
            return False
        rest = value_at + 4
        if not (
            rest == length
            or (rest + 2 <= length and data[rest] == 0x4A and rest + 2 + data[rest + 1] == length)
        ):
            return False
        entry = self._sink.appender(data[p + 6 : tag_end])
        self._sink.templates[data[p:value_at]] = (entry, data[rest:])
        entry[0](step)
        entry[1](_DOUBLE.unpack_from(data, 1)[0])
        entry[2](_FLOAT.unpack_from(data, value_at)[0])
        return True

    def _resync(self, buf: bytes, start: int) -> int | None:
        """The next offset whose 12 bytes make a valid header, or None if there is none yet."""
        unpack_header = _HEADER.unpack_from
        for pos in range(start, len(buf) - 11):
            length, header_crc = unpack_header(buf, pos)
            if length <= _MAX_RECORD and masked_crc32c(buf[pos : pos + 8]) == header_crc:
                return pos
        return None

    def _decode_slow(self, state: _FileState, offset: int, data: bytes) -> int:
        try:
            event = event_pb2.Event.FromString(data)
        except Exception:  # protobuf raises its own DecodeError types; all mean "bad bytes"
            self._problem(state.path, offset, "record is not an Event; skipped")
            return 0
        if not event.HasField("summary"):
            return 0
        count = 0
        for value in event.summary.value:
            number = scalar_of(value)
            if number is None:
                continue
            self._sink.named(value.tag).append(event.step, event.wall_time, number)
            count += 1
        return count


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
