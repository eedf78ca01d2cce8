"""What one media tensor becomes: an image, a histogram or a text entry, and what was wrong
with it. TF2 names the kind once per tag, in the first value's plugin metadata: an image is
a string tensor ``[width, height, png, ...]``, a histogram a ``[k, 3]`` tensor of bucket left
edges, right edges and counts, a text a string tensor. The limits here keep one hostile
record (a 200 MB picture, NaN buckets, 10,000 strings) from costing the page more than a
warning.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image as PILImage
from tensorboard.util import tensor_util

IMAGES = "images"
HISTOGRAMS = "histograms"
TEXT = "text"
KINDS = (IMAGES, HISTOGRAMS, TEXT)

# One image bigger than this, or with more pixels, is not kept (a warning says so).
MAX_IMAGE_BYTES = 8 << 20
MAX_IMAGE_PIXELS = 16_000_000
# Text is clipped per string and per entry; histograms over this many buckets are skipped.
MAX_TEXT_CHARS = 10_000
MAX_TEXT_CELLS = 1_000
MAX_BUCKETS = 10_000
_PNG_SIZE = struct.Struct(">II")
_GIF_SIZE = struct.Struct("<HH")
# dtype enum -> bytes per element of the float tensors a histogram may come in.
FLOAT_BYTES = {1: 4, 2: 8}
_DT_STRING = 7
_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")


@dataclass(frozen=True)
class Image:
    """One image event: its step, wall time and pictures (PNG/JPEG/GIF bytes, checked)."""

    step: int
    wall: float
    width: int
    height: int
    pictures: tuple[bytes, ...]

    @property
    def nbytes(self) -> int:
        return sum(len(p) for p in self.pictures)


@dataclass(frozen=True)
class Histogram:
    """One histogram event: finite bucket edges and counts, as ``[k, 3]`` float64 rows."""

    step: int
    wall: float
    buckets: np.ndarray

    @property
    def nbytes(self) -> int:
        return int(self.buckets.nbytes)


@dataclass(frozen=True)
class Text:
    """One text event: its strings (clipped) and the tensor's shape (``()``, ``(n,)``...)."""

    step: int
    wall: float
    strings: tuple[str, ...]
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return sum(len(s) for s in self.strings)


Entry = Image | Histogram | Text


@dataclass(frozen=True)
class HistogramBlock:
    """Consecutive histograms of one tag and bucket count, kept as columns: a run of
    thousands costs three arrays, not thousands of objects, until the page asks for them."""

    steps: np.ndarray
    walls: np.ndarray
    buckets: np.ndarray  # [n, k, 3] float64

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def nbytes(self) -> int:
        return int(self.buckets.nbytes)

    def tail(self, count: int) -> HistogramBlock:
        """The newest `count` histograms (views, no copy)."""
        start = len(self) - count
        return HistogramBlock(self.steps[start:], self.walls[start:], self.buckets[start:])

    def entries(self) -> list[Histogram]:
        return [
            Histogram(step, wall, buckets)
            for step, wall, buckets in zip(
                self.steps.tolist(), self.walls.tolist(), self.buckets, strict=True
            )
        ]


def decode(plugin: str, step: int, wall: float, tensor: Any) -> tuple[Entry | None, str | None]:
    """One media tensor as an entry, and what was wrong with it (None: nothing)."""
    elements = 1
    for dim in tensor.tensor_shape.dim:
        elements *= max(0, dim.size)
    if plugin == HISTOGRAMS:
        if elements > 3 * MAX_BUCKETS:
            return None, f"{elements // 3:,} buckets, over the {MAX_BUCKETS:,} shown; skipped"
        content = tensor.tensor_content
        if (
            tensor.dtype in FLOAT_BYTES
            and content
            and len(content) == elements * FLOAT_BYTES[tensor.dtype]
        ):
            kind = "<f8" if FLOAT_BYTES[tensor.dtype] == 8 else "<f4"
            shape = [d.size for d in tensor.tensor_shape.dim]
            return _histogram(step, wall, np.frombuffer(content, kind).reshape(shape))
        return _histogram(step, wall, tensor_util.make_ndarray(tensor))
    if tensor.dtype != _DT_STRING:
        return None, f"a {plugin} tensor should hold strings; skipped"
    if plugin == IMAGES:
        return _image(step, wall, list(tensor.string_val))
    return _text(step, wall, list(tensor.string_val), [d.size for d in tensor.tensor_shape.dim])


def _histogram(step: int, wall: float, array_: np.ndarray) -> tuple[Entry | None, str | None]:
    if array_.size == 0:
        return Histogram(step, wall, np.zeros((0, 3))), None
    if array_.ndim != 2 or array_.shape[1] != 3:
        return None, f"a histogram is a [k, 3] tensor, not {list(array_.shape)}; skipped"
    buckets = np.asarray(array_, dtype=np.float64)
    trouble = None
    if not np.isfinite(buckets.sum()):  # one pass; a NaN or infinity anywhere shows in the sum
        finite = np.isfinite(buckets).all(axis=1)
        bad = int((~finite).sum())
        trouble = f"{bad:,} of {len(buckets):,} histogram buckets are not finite; left out"
        buckets = buckets[finite]
    return Histogram(step, wall, buckets), trouble


def picture_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG, JPEG or GIF picture from its header, else None.

    The page decodes the picture later, so its own size (not the tensor's word for it) is
    what is checked against MAX_IMAGE_PIXELS. PNG and GIF headers are read here; a JPEG's
    size is found by Pillow, which reads only the header.
    """
    if data.startswith(_SIGNATURES[0]):
        if len(data) < 33 or data[12:16] != b"IHDR":
            return None
        width, height = _PNG_SIZE.unpack_from(data, 16)
        return width, height
    if data.startswith((b"GIF87a", b"GIF89a")):
        return _GIF_SIZE.unpack_from(data, 6) if len(data) >= 13 else None
    if not data.startswith(_SIGNATURES[1]):
        return None
    try:
        with PILImage.open(io.BytesIO(data)) as picture:
            return picture.size if picture.format in ("PNG", "JPEG", "GIF") else None
    except Exception:  # Pillow raises many types for bytes that are not a picture
        return None


def _image(step: int, wall: float, strings: list[bytes]) -> tuple[Entry | None, str | None]:
    if len(strings) < 2:
        return None, "an image tensor holds width, height and pictures; skipped"
    try:
        width, height = int(strings[0]), int(strings[1])
    except ValueError:
        return None, "the image's width and height are not numbers; skipped"
    if width * height > MAX_IMAGE_PIXELS:
        return (
            None,
            f"{width:,} x {height:,} pixels is over the {MAX_IMAGE_PIXELS:,} shown; skipped",
        )
    kept: list[bytes] = []
    troubles: list[str] = []
    for number, picture in enumerate(strings[2:]):
        if len(picture) > MAX_IMAGE_BYTES:
            troubles.append(
                f"image {number} is {len(picture) / 1e6:,.1f} MB, over the"
                f" {MAX_IMAGE_BYTES >> 20} MB shown"
            )
        elif (size := picture_size(picture)) is None:
            troubles.append(f"image {number} is not a PNG, JPEG or GIF")
        elif size[0] * size[1] > MAX_IMAGE_PIXELS:
            troubles.append(
                f"image {number} has {size[0]:,} x {size[1]:,} pixels, over the"
                f" {MAX_IMAGE_PIXELS:,} shown"
            )
        else:
            kept.append(picture)
    trouble = "; ".join(troubles) + "; skipped" if troubles else None
    if not kept:
        return None, trouble or "no pictures in the image tensor"
    return Image(step, wall, width, height, tuple(kept)), trouble


def _text(
    step: int, wall: float, strings: list[bytes], shape: list[int]
) -> tuple[Entry | None, str | None]:
    troubles = []
    if len(strings) > MAX_TEXT_CELLS:
        troubles.append(f"{len(strings):,} strings, the first {MAX_TEXT_CELLS:,} kept")
        strings = strings[:MAX_TEXT_CELLS]
        shape = [len(strings)]
    decoded = []
    clipped = 0
    for raw in strings:
        value = raw.decode("utf-8", "replace")
        if len(value) > MAX_TEXT_CHARS:
            value = value[:MAX_TEXT_CHARS] + "…"
            clipped += 1
        decoded.append(value)
    if clipped:
        troubles.append(f"{clipped:,} strings clipped to {MAX_TEXT_CHARS:,} characters")
    if int(np.prod(shape, dtype=np.int64)) != len(decoded):
        shape = [len(decoded)]
    return Text(step, wall, tuple(decoded), tuple(shape)), "; ".join(troubles) or None
