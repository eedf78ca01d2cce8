"""Media records sorted out in bulk: how dashboard.media's reader finds, for every record
of a chunk at once, its tag, step, wall time and tensor bytes, without a protobuf object per
record.

A TF2 summary record is ``wall_time (1) | step (2) | summary (5) { value (1) { tag (1) |
tensor (8) } }``, with the plugin's metadata (9) after the tensor in a tag's first record
only. :func:`scan` reads those fields with numpy and groups the records by tag; anything
laid out otherwise (metadata, the legacy ``image``/``histo`` fields, plain scalars, odd
encodings) is left to the protobuf parser. A tag's histograms of one layout share their
bytes up to the numbers, so :func:`histogram_blocks` checks one of them field by field and
gathers the numbers of all of them in one copy. Images and text are decoded one by one
(dashboard.mediadecode), and only those a tag keeps. All paths give the same entries
(tests/dashboard/test_mediascan.py and test_media.py check them against protobuf and
TensorBoard's own reader).
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tensorboard.compat.proto import tensor_pb2

from dashboard.mediadecode import FLOAT_BYTES, MAX_BUCKETS
from dashboard.tfrecord import checked_records, unaligned

# Tags longer than this (bytes) go through the protobuf parser.
_FAST_TAG_BYTES = 120
# Histogram layouts of one tag gathered in bulk per chunk (more: decoded one by one).
_MAX_TEMPLATES = 16


@dataclass(frozen=True)
class TagRecords:
    """One tag's records of a chunk in the order read: their positions among the chunk's
    records, steps, wall times and tensors: where a scanned record's tensor bytes lie in
    the chunk, or (``tensor_len`` -1) the TensorProto the protobuf parser gave."""

    tag: str
    rows: np.ndarray
    steps: np.ndarray
    walls: np.ndarray
    tensor_at: np.ndarray
    tensor_len: np.ndarray
    parsed: dict[int, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)

    def tensor(self, buf: bytes, position: int) -> Any:
        """The TensorProto of one record (protobuf's DecodeError for bytes that are not)."""
        if position in self.parsed:
            return self.parsed[position]
        start = int(self.tensor_at[position])
        return tensor_pb2.TensorProto.FromString(
            buf[start : start + int(self.tensor_len[position])]
        )

    def joined(self, parsed: list[tuple[int, int, float, Any]]) -> TagRecords:
        """These records and those the protobuf parser read ((row, step, wall, tensor)), in
        the order read."""
        if not parsed:
            return self
        rows, steps, walls, tensors = zip(*parsed, strict=True)
        count = len(self)
        columns = [
            np.concatenate([mine, np.array(theirs, dtype=mine.dtype)])
            for mine, theirs in (
                (self.rows, rows),
                (self.steps, steps),
                (self.walls, walls),
                (self.tensor_at, [-1] * len(parsed)),
                (self.tensor_len, [-1] * len(parsed)),
            )
        ]
        order = np.argsort(columns[0], kind="stable")
        position = np.empty_like(order)
        position[order] = np.arange(len(order))
        rows_, steps_, walls_, at, lengths = (column[order] for column in columns)
        moved = {int(position[count + n]): tensor for n, tensor in enumerate(tensors)}
        return TagRecords(self.tag, rows_, steps_, walls_, at, lengths, moved)

    def newest(self, count: int) -> TagRecords:
        """The newest `count` records."""
        start = max(0, len(self) - count)
        return TagRecords(
            self.tag,
            self.rows[start:],
            self.steps[start:],
            self.walls[start:],
            self.tensor_at[start:],
            self.tensor_len[start:],
            {p - start: tensor for p, tensor in self.parsed.items() if p >= start},
        )

    @classmethod
    def parsed_only(cls, tag: str, parsed: list[tuple[int, int, float, Any]]) -> TagRecords:
        empty = np.zeros(0, dtype=np.int64)
        none = cls(tag, empty, empty, np.zeros(0), empty, empty)
        return none.joined(parsed)


@dataclass(frozen=True)
class Scan:
    """A chunk's records sorted out: failed CRCs, the tag groups, and the rest (protobuf)."""

    damaged: list[int]
    groups: list[TagRecords]
    slow: list[int]


def scan(buf: bytes, starts: array, crcs: array) -> Scan:
    """Check the records' CRCs and find each TF2 summary record's tag, step, wall time and
    tensor, all records at once; every length must add up to the record's end exactly."""
    begins, lengths, good = checked_records(buf, np.frombuffer(starts, np.int64), crcs)
    data = np.frombuffer(buf, np.uint8)
    words = unaligned(buf, "<u8")
    last = len(words) - 1  # the last byte an 8-byte read may start at
    candidates = good & (lengths >= 20)  # a wall time, a step and a summary at least
    candidates[candidates] = data[begins[candidates]] == 0x09
    rows = np.flatnonzero(candidates)
    begin, end = begins[rows], begins[rows] + lengths[rows]
    walls = unaligned(buf, "<f8")[begin + 1]
    has_step = data[begin + 9] == 0x10
    steps, width, fits = _varints(words, begin + 10, 5)
    ok = fits | ~has_step
    steps = np.where(has_step, steps, 0)
    where = np.where(has_step, begin + 10 + width, begin + 9)
    # Reads go forward only: past the end of buf, the last one is (and `ok` is cleared).
    for number in (0x2A, 0x0A):  # the summary, then its one value: each ends at the record's
        ok &= data[np.minimum(where, last)] == number
        size, width, fits = _varints(words, np.minimum(where + 1, last), 4)
        where = where + 1 + width
        ok &= fits & (where + size == end)
    tag_len = data[np.minimum(where + 1, last)].astype(np.int64)
    ok &= (data[np.minimum(where, last)] == 0x0A) & (tag_len <= _FAST_TAG_BYTES)
    tag_at = where + 2
    where = tag_at + tag_len
    ok &= (where < end) & (data[np.minimum(where, last)] == 0x42)
    size, width, fits = _varints(words, np.minimum(where + 1, last), 4)
    tensor_at = where + 1 + width
    ok &= fits & (tensor_at + size == end) & (where + 1 <= last)
    slow = good.copy()
    slow[rows[ok]] = False
    tensors, sizes = tensor_at[ok], size[ok]
    rows, steps, walls, tensors, sizes = rows[ok], steps[ok], walls[ok], tensor_at[ok], size[ok]
    return Scan(
        np.flatnonzero(~good).tolist(),
        [
            TagRecords(tag, rows[pick], steps[pick], walls[pick], tensors[pick], sizes[pick])
            for tag, pick in _by_tag(buf, tag_at[ok], tag_len[ok])
        ],
        np.flatnonzero(slow).tolist(),
    )


def _varints(
    words: np.ndarray, positions: np.ndarray, most: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The varints at `positions`: values, widths in bytes, and which end within `most`."""
    word = words[positions]
    values = word & np.uint64(0x7F)
    widths = np.ones(len(positions), dtype=np.int64)
    going = word & np.uint64(0x80) != 0
    for byte in range(1, most):
        if not going.any():  # most varints of a record are one or two bytes long
            break
        part = (word >> np.uint64(8 * byte)) & np.uint64(0xFF)
        values |= np.where(going, (part & np.uint64(0x7F)) << np.uint64(7 * byte), 0)
        widths += going
        going &= part >= 0x80
    return values.astype(np.int64), widths, ~going


def _by_tag(buf: bytes, tag_at: np.ndarray, tag_len: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Records (positions in tag_at) grouped by their tag's bytes, in the order each tag
    first appears. Grouped by a fingerprint of the tag's length and first and last 8 bytes,
    then checked byte for byte; a group that fails is split one record at a time."""
    if not len(tag_at):
        return []
    words = unaligned(buf, "<u8")
    last = len(words) - 1
    head = words[np.minimum(tag_at, last)]
    short = tag_len < 8
    head[short] &= (np.uint64(1) << (np.uint64(8) * tag_len[short].astype(np.uint64))) - 1
    tail = words[np.minimum(np.maximum(tag_at + tag_len - 8, tag_at), last)]
    tail[short] = head[short]
    lengths = tag_len.astype(np.uint64)
    prints = head ^ (tail * np.uint64(0x9E3779B97F4A7C15)) ^ (lengths << np.uint64(56))
    _, first, inverse = np.unique(prints, return_index=True, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    members = np.split(order, np.cumsum(np.bincount(inverse))[:-1])
    groups: list[tuple[str, np.ndarray]] = []
    for number in np.argsort(first, kind="stable"):
        pick = members[number]
        start, length = int(tag_at[pick[0]]), int(tag_len[pick[0]])
        name = buf[start : start + length]
        if length and len(pick) > 1:
            same = (_slices(buf, length)[tag_at[pick]] == np.frombuffer(name, np.uint8)).all(1)
            if not same.all():
                groups.extend(_by_tag_slowly(buf, tag_at, tag_len, pick))
                continue
        groups.append((name.decode("utf-8", "replace"), pick))
    return groups


def _by_tag_slowly(
    buf: bytes, tag_at: np.ndarray, tag_len: np.ndarray, pick: np.ndarray
) -> list[tuple[str, np.ndarray]]:
    """Records whose fingerprints matched grouped by their tags, one by one."""
    found: dict[bytes, list[int]] = {}
    for position in pick.tolist():
        start = int(tag_at[position])
        found.setdefault(buf[start : start + int(tag_len[position])], []).append(position)
    return [(name.decode("utf-8", "replace"), np.array(rows)) for name, rows in found.items()]


def _slices(buf: bytes, width: int) -> np.ndarray:
    """Row i is the `width` bytes of buf starting at byte i (a view, no copy)."""
    return np.ndarray(
        (max(0, len(buf) - width + 1), width), dtype=np.uint8, buffer=buf, strides=(1, 1)
    )


def histogram_blocks(
    buf: bytes, records: TagRecords
) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[int]]:
    """The records' histograms in bulk: ([(consecutive positions, their [n, k, 3] float64
    buckets)], the positions left to decode one by one).

    A layout (the same tensor length and the same bytes up to the numbers) is checked once
    on its first record, and its numbers gathered for all; parsed records, tensors of other
    dtypes, shapes or encodings, and those holding a NaN or infinity are left over.
    """
    starts, lengths = records.tensor_at, records.tensor_len
    left = lengths >= 0
    single = ~left
    found: list[tuple[np.ndarray, np.ndarray]] = []
    for _ in range(_MAX_TEMPLATES):
        if not left.any():
            break
        first = int(np.argmax(left))
        start, length = int(starts[first]), int(lengths[first])
        layout = _histogram_layout(buf, start, length)
        if layout is None:
            left[first], single[first] = False, True
            continue
        head, dtype, shape = layout
        same = left & (lengths == length)
        if head:
            candidates = np.flatnonzero(same)
            prefix = _slices(buf, head)[starts[candidates]]
            same[candidates] = (prefix == prefix[0]).all(axis=1)
        positions = np.flatnonzero(same)
        left[positions] = False
        numbers = _slices(buf, length - head)[starts[positions] + head]
        buckets = numbers.view(dtype).reshape(len(positions), *shape)
        buckets = buckets.astype(np.float64, copy=False)
        finite = np.isfinite(buckets).all(axis=(1, 2))
        if not finite.all():
            single[positions[~finite]] = True
            positions, buckets = positions[finite], buckets[finite]
        if len(positions):
            found.append((positions, buckets))
    single |= left
    blocks: list[tuple[np.ndarray, np.ndarray]] = []
    for positions, buckets in found:  # split where another record comes between
        cuts = np.flatnonzero(np.diff(positions) != 1) + 1
        blocks.extend(zip(np.split(positions, cuts), np.split(buckets, cuts), strict=True))
    return blocks, np.flatnonzero(single).tolist()


def _histogram_layout(buf: bytes, start: int, length: int) -> tuple[int, str, tuple] | None:
    """(bytes before the numbers, numpy dtype, [k, 3]) when the tensor at `start` is a
    histogram whose float numbers end its bytes; None for any other."""
    try:
        tensor = tensor_pb2.TensorProto.FromString(buf[start : start + length])
    except Exception:  # protobuf's DecodeError types: all mean "bad bytes"
        return None
    dims = [dim.size for dim in tensor.tensor_shape.dim]
    content = tensor.tensor_content
    size = FLOAT_BYTES.get(tensor.dtype, 0)
    if len(dims) != 2 or dims[1] != 3 or not 0 < dims[0] <= MAX_BUCKETS or not size:
        return None
    head = length - len(content)
    if len(content) != dims[0] * 3 * size or buf[start + head : start + length] != content:
        return None
    return head, "<f8" if size == 8 else "<f4", (dims[0], 3)
