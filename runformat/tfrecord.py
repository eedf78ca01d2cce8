"""The framing of an event file, a TFRecord stream: `u64 length | u32 masked crc32c(length) |
data | u32 masked crc32c(data)`. Standard library only: the CRC-32C itself is the caller's
(the dashboard's readers use Google's C one; the worker's wrapper a small one of its own, so
that it starts without loading more).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import numpy as np

MASK_DELTA = 0xA282EAD8
U32 = 0xFFFFFFFF


Crc = TypeVar("Crc", int, "np.ndarray")


def mask(crc: Crc) -> Crc:
    """TFRecord's masked CRC, so that CRCs of CRCs do not look like data (of one CRC, or of
    many at once as int64 numbers)."""
    return (((crc >> 15) | (crc << 17)) + MASK_DELTA) & U32


def frame(data: bytes, crc32c: Callable[[bytes], int]) -> bytes:
    """One TFRecord: what a writer appends to an event file for one serialized Event."""
    length = struct.pack("<Q", len(data))
    return (
        length
        + struct.pack("<I", mask(crc32c(length)))
        + data
        + struct.pack("<I", mask(crc32c(data)))
    )
