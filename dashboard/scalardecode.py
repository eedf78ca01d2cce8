"""Scalar events decoded in bulk: how dashboard.events' reader turns a chunk of checked
records into points. A scalar event is ``wall_time (1) | step (2, a varint) | summary (5)``,
and a tag's summary bytes repeat from point to point but for its 4-byte float, so a big
batch is grouped by those bytes (a template), each template checked field by field once and
its points gathered with numpy; a few records are checked one by one; anything else goes
through the protobuf parser. All give the same points (tests/dashboard/test_events.py checks
them against TensorFlow's own reader).
"""

from __future__ import annotations

import struct
from array import array
from typing import Any

import numpy as np
from tensorboard.compat.proto import event_pb2

from dashboard.tfrecord import U32S as _U32S
from dashboard.tfrecord import U64 as _U64
from dashboard.tfrecord import checked_records
from dashboard.tfrecord import unaligned as _unaligned
from runformat.tfrecord import MASK_DELTA as _MASK_DELTA
from runformat.tfrecord import U32 as _U32

_F64 = struct.Struct("<d")
_F32 = struct.Struct("<f")
# Up to this many records per chunk are decoded one by one: numpy's set-up costs more.
_FEW_RECORDS = 64
# Distinct record layouts of one length decoded by template per chunk (more: the slow path).
_MAX_TEMPLATES = 64
# What TF2's scalar summary puts between the tag and the float: field 8 (tensor, 10 bytes)
# holding dtype DT_FLOAT, an empty shape and a 4-byte tensor_content.
_TF2_FLOAT_TENSOR = b"\x42\x0a\x08\x01\x12\x00\x22\x04"


class ScalarDecoding:
    """The reader's decoding half (dashboard.events.EventDirectory): records in, points into
    its sink. Its state (`_sink`, `events`, `_problem`) is the reader's."""

    _sink: Any
    events: int

    def _problem(self, path: Any, offset: int, message: str) -> None:
        raise NotImplementedError

    def _decode(self, state: Any, buf: bytes, starts: array, crcs: array) -> None:
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
        state: Any,
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
        state: Any,
        buf: bytes,
        starts: np.ndarray,
        crcs: array,
        found: dict[str, list[tuple[np.ndarray, ...]]],
    ) -> list[int]:
        """Records in bulk with numpy; returns the indices left to the protobuf parser."""
        data = np.frombuffer(buf, np.uint8)
        u64 = _unaligned(buf, "<u8")
        begins, heads, good = checked_records(buf, starts, crcs)
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
        state: Any,
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
