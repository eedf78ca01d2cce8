"""TFRecord framing of event files: `u64 length | u32 masked crc32c(length) | data |
u32 masked crc32c(data)`, with Google's C CRC32C (a pure-Python one is ~100x slower on big
records). The readers (dashboard.events, dashboard.media) and the preview's writer use it.
"""

from __future__ import annotations

import struct
from array import array

import google_crc32c
import numpy as np

from runformat.tfrecord import frame, mask

HEADER = struct.Struct("<QI")  # length, its masked CRC
U64 = struct.Struct("<Q")
U32S = struct.Struct("<I")
# A record whose header announces more than this is skipped whole (with a problem) once all
# of its bytes are on disk, without being read: no scalar event comes near it, and an image
# that big would not be shown anyway.
MAX_RECORD = 64 << 20

if google_crc32c.implementation != "c":  # pragma: no cover - depends on the wheel
    raise ImportError("google-crc32c has no C extension here: reading events would crawl")

crc32c = google_crc32c.value


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC32C of `data`."""
    return mask(crc32c(data))


def frame_record(data: bytes) -> bytes:
    """One TFRecord: what a writer appends to an event file for one serialized Event."""
    return frame(data, crc32c)


def find_header(buf: bytes, start: int) -> int | None:
    """The next offset whose 12 bytes make a valid header, or None if there is none yet."""
    unpack_header = HEADER.unpack_from
    for pos in range(start, len(buf) - 11):
        length, header_crc = unpack_header(buf, pos)
        if length <= MAX_RECORD and masked_crc32c(buf[pos : pos + 8]) == header_crc:
            return pos
    return None


def unaligned(buf: bytes, dtype: str) -> np.ndarray:
    """Element i is the ``dtype`` number whose bytes start at byte i of buf (no copy)."""
    size = np.dtype(dtype).itemsize
    return np.ndarray((max(0, len(buf) - size + 1),), dtype=dtype, buffer=buf, strides=(1,))


def checked_records(
    buf: bytes, starts: np.ndarray, crcs: array
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(where each record's data begins, its length, whether its stored CRC matches the
    computed one in `crcs`) for the records at `starts`, all at once."""
    lengths = unaligned(buf, "<u8")[starts].astype(np.int64)
    begins = starts + 12
    stored = unaligned(buf, "<u4")[begins + lengths].astype(np.int64)
    computed = np.frombuffer(crcs, np.uint32).astype(np.int64)
    return begins, lengths, mask(computed) == stored
