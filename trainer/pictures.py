"""Small pictures drawn with numpy and written as PNG with zlib: the chief's grid of
misclassified digits and its confusion matrix (trainer/mistakes.py).

No TensorFlow and no imaging library: a picture is an array of palette indexes (one byte a
pixel, a third of RGB's) and its colours, text is a tiny bitmap font, and a PNG is four
chunks around one zlib stream. That is what keeps the pictures cheap enough to draw after
every epoch: TensorFlow's eager `encode_png` of the same pictures in RGB costs ~4x the CPU,
and Pillow is not installed on the workers.
"""

from __future__ import annotations

import functools
import struct
import zlib
from dataclasses import dataclass

import numpy as np

COLUMNS = 4
STRIP = 14
"""Pixels under each digit of the grid for its two labels."""
MARGIN = 14
"""Pixels above and left of the confusion matrix's cells for the labels."""
CELL = 28

# The grid's palette: 254 grays (index = level; the two brightest print as the third), then
# the labels' colours. Its background is the dark gray 31.
GREEN = 254
RED = 255
BACKGROUND = 31
_GRID_PALETTE = np.concatenate(
    [np.repeat(np.arange(254, dtype=np.uint8)[:, None], 3, axis=1), [[26, 191, 51], [242, 51, 38]]]
).astype(np.uint8)
# The confusion matrix's palette: white, gray labels, dark counts, then one colour per cell.
WHITE, GRAY, INK, FIRST_CELL = 0, 1, 2, 3
_CONFUSION_COLORS = np.array([[255, 255, 255], [51, 51, 51], [26, 26, 26]], dtype=np.uint8)

# 3 x 5 bitmaps of the digits, one row string per line.
_FONT = {
    "0": ("111", "101", "101", "101", "111"),
    "1": ("010", "110", "010", "010", "111"),
    "2": ("111", "001", "111", "100", "111"),
    "3": ("111", "001", "111", "001", "111"),
    "4": ("101", "101", "111", "001", "001"),
    "5": ("111", "100", "111", "001", "111"),
    "6": ("111", "100", "111", "101", "111"),
    "7": ("111", "001", "010", "010", "010"),
    "8": ("111", "101", "111", "101", "111"),
    "9": ("111", "101", "111", "001", "111"),
}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_INDEXED = 3  # PNG's colour type for palette pictures
_UP = 2  # PNG's row filter: the difference to the row above


@dataclass(frozen=True)
class Picture:
    """An (h, w) uint8 array of indexes into `palette`, (n, 3) uint8 colours (n <= 256)."""

    pixels: np.ndarray
    palette: np.ndarray

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    def rgb(self) -> np.ndarray:
        """The (h, w, 3) uint8 colours, as a viewer shows them."""
        return self.palette[self.pixels]


@functools.cache
def glyph(char: str, scale: int) -> np.ndarray:
    """The (5 * scale, 3 * scale) mask of one digit, made once."""
    dots = np.array([[bit == "1" for bit in row] for row in _FONT[char]])
    return dots.repeat(scale, axis=0).repeat(scale, axis=1)


def draw_text(canvas: np.ndarray, text: str, top: int, left: int, color: int, scale: int) -> None:
    """Digits drawn into an (h, w) canvas in place with palette index `color`, `scale`
    pixels per font dot, clipped at its edges."""
    for position, char in enumerate(text):
        mask = glyph(char, scale)
        x = left + position * 4 * scale
        region = canvas[top : top + mask.shape[0], x : x + mask.shape[1]]
        region[mask[: region.shape[0], : region.shape[1]]] = color


def to_bytes(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] as uint8 levels, rounded."""
    return (np.asarray(values, dtype=np.float32) * 255).round().astype(np.uint8)


def mistakes_grid(
    images: np.ndarray, truth: np.ndarray, predicted: np.ndarray, columns: int = COLUMNS
) -> Picture:
    """Each digit (n, 28, 28 in [0, 1]) twice its size over a strip with its true label
    (green, left) and the predicted one (red, right), `columns` to a row."""
    count = len(images)
    rows = max(1, -(-count // columns))
    size = 2 * images.shape[1]
    tile_h, tile_w = size + STRIP, size + 4
    canvas = np.full((rows * tile_h, columns * tile_w), BACKGROUND, dtype=np.uint8)
    tiles = canvas.reshape(rows, tile_h, columns, tile_w)  # a view: [row, y, column, x]
    grays = np.minimum(to_bytes(images), GREEN - 1).repeat(2, axis=1).repeat(2, axis=2)
    for n in range(count):
        tile = tiles[n // columns, :, n % columns]
        tile[:size, 2 : 2 + size] = grays[n]
        draw_text(tile, str(int(truth[n])), size + 2, 8, GREEN, 2)
        draw_text(tile, str(int(predicted[n])), size + 2, size - 10, RED, 2)
    return Picture(canvas, _GRID_PALETTE)


def confusion_counts(truth: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """counts[true, predicted]."""
    flat = truth.astype(np.int64) * classes + predicted.astype(np.int64)
    return np.bincount(flat, minlength=classes * classes).reshape(classes, classes)


@functools.cache
def confusion_frame(classes: int, cell: int = CELL) -> np.ndarray:
    """What every confusion picture shares, drawn once: the predicted classes along the top,
    the true ones down the left, and each cell filled with its own palette index, white
    lines between."""
    if FIRST_CELL + classes * classes > 256:
        raise ValueError(f"a confusion picture holds at most 15 classes, got {classes}")
    side = MARGIN + classes * cell
    canvas = np.full((side, side), WHITE, dtype=np.uint8)
    cells = FIRST_CELL + np.arange(classes * classes, dtype=np.uint8).reshape(classes, classes)
    canvas[MARGIN:, MARGIN:] = cells.repeat(cell, axis=0).repeat(cell, axis=1)
    canvas[MARGIN::cell, MARGIN:] = WHITE
    canvas[MARGIN:, MARGIN::cell] = WHITE
    for label in range(classes):
        where = MARGIN + label * cell + cell // 2 - 3
        draw_text(canvas, str(label), 2, where, GRAY, 2)
        draw_text(canvas, str(label), where - 2, 3, GRAY, 2)
    canvas.flags.writeable = False
    return canvas


def row_shares(counts: np.ndarray) -> np.ndarray:
    """Each cell's share of its row (a row of zeros stays zeros)."""
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)


def confusion_tones(counts: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """Each cell's (r, g, b) in [0, 1] by its share of its row: right answers in blue, wrong
    ones in red (never paler than a quarter), none white."""
    classes = len(counts)
    tones = np.ones((classes, classes, 3), dtype=np.float32)
    diagonal = np.eye(classes, dtype=bool)
    tones[diagonal] = np.stack(
        [1 - 0.8 * shares[diagonal], 1 - 0.6 * shares[diagonal], np.ones(classes)], axis=1
    )
    wrong = ~diagonal & (counts > 0)
    fade = 1 - 0.7 * np.maximum(shares[wrong], 0.25)
    tones[wrong] = np.stack([np.ones_like(fade), fade, fade], axis=1)
    return tones


def confusion_picture(counts: np.ndarray, cell: int = CELL) -> Picture:
    """The confusion matrix: rows true, columns predicted, each cell shaded by its share of
    its row (its palette entry) and labelled with its count."""
    classes = len(counts)
    canvas = confusion_frame(classes, cell).copy()
    shares = row_shares(counts)
    for row, column in zip(*np.nonzero(counts), strict=True):
        text = str(int(counts[row, column]))
        ink = WHITE if shares[row, column] > 0.6 else INK
        top, left = MARGIN + row * cell, MARGIN + column * cell
        width = len(text) * 8 - 2
        draw_text(canvas, text, top + cell // 2 - 5, left + (cell - width) // 2, ink, 2)
    tones = to_bytes(confusion_tones(counts, shares)).reshape(-1, 3)
    return Picture(canvas, np.concatenate([_CONFUSION_COLORS, tones]))


def encode_png(picture: Picture, level: int = 1) -> bytes:
    """The picture as an 8-bit palette PNG: each row stored as its difference to the one
    above (PNG's "up" filter), which turns these flat pictures into runs of zeros that
    zlib's fastest level packs ~15-50x."""
    pixels, palette = picture.pixels, picture.palette
    if pixels.ndim != 2 or pixels.dtype != np.uint8 or not 0 < len(palette) <= 256:
        raise ValueError(
            f"expected (h, w) uint8 indexes and 1-256 colours, got {pixels.shape} "
            f"{pixels.dtype} and {len(palette)}"
        )
    height, width = pixels.shape
    rows = np.empty((height, 1 + width), dtype=np.uint8)
    rows[:, 0] = _UP
    rows[0, 1:] = pixels[0]
    np.subtract(pixels[1:], pixels[:-1], out=rows[1:, 1:])  # modulo 256, as PNG wants
    header = struct.pack(">IIBBBBB", width, height, 8, _INDEXED, 0, 0, 0)
    return b"".join(
        [
            _PNG_SIGNATURE,
            _png_chunk(b"IHDR", header),
            _png_chunk(b"PLTE", np.ascontiguousarray(palette, dtype=np.uint8).tobytes()),
            _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), level)),
            _png_chunk(b"IEND", b""),
        ]
    )


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(data, zlib.crc32(kind))
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)
