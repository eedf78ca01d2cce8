"""trainer/pictures.py: the mistakes pictures, drawn with numpy and written as PNG with zlib,
read back with Pillow."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from trainer.pictures import (
    BACKGROUND,
    CELL,
    MARGIN,
    STRIP,
    Picture,
    confusion_counts,
    confusion_picture,
    encode_png,
    glyph,
    mistakes_grid,
)

GREEN_RGB = (26, 191, 51)
RED_RGB = (242, 51, 38)


def decode(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize(("height", "width", "colors"), [(1, 1, 1), (3, 7, 2), (97, 61, 256)])
def test_a_png_reads_back_as_the_same_colours(height: int, width: int, colors: int) -> None:
    rng = np.random.default_rng(height)
    picture = Picture(
        rng.integers(0, colors, (height, width), dtype=np.uint8),
        rng.integers(0, 256, (colors, 3), dtype=np.uint8),
    )
    assert np.array_equal(decode(encode_png(picture)), picture.rgb())


def test_a_flat_picture_packs_small() -> None:
    picture = Picture(np.zeros((300, 300), dtype=np.uint8), np.array([[1, 2, 3]], np.uint8))
    assert len(encode_png(picture)) < 1_000


@pytest.mark.parametrize(
    ("pixels", "palette", "message"),
    [
        (np.zeros((2, 2, 3), np.uint8), np.zeros((1, 3), np.uint8), r"\(2, 2, 3\) uint8"),
        (np.zeros((2, 2), np.float32), np.zeros((1, 3), np.uint8), "float32"),
        (np.zeros((2, 2), np.uint8), np.zeros((257, 3), np.uint8), "and 257"),
    ],
)
def test_png_refuses_what_it_cannot_store(
    pixels: np.ndarray, palette: np.ndarray, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        encode_png(Picture(pixels, palette))


def test_the_grid_shows_each_wrong_digit_over_its_true_and_predicted_labels() -> None:
    rng = np.random.default_rng(0)
    images = rng.random((5, 28, 28)).astype(np.float32)
    truth, predicted = np.array([0, 1, 2, 3, 4]), np.array([9, 8, 7, 6, 5])
    rgb = mistakes_grid(images, truth, predicted, columns=4).rgb()
    tile_h, tile_w = 56 + STRIP, 56 + 4
    assert rgb.shape == (2 * tile_h, 4 * tile_w, 3)
    # The fifth digit: second row, first column, twice its size, gray in all channels.
    digit = rgb[tile_h : tile_h + 56, 2:58]
    expected = np.minimum((images[4] * 255).round(), 253).repeat(2, 0).repeat(2, 1)
    assert np.array_equal(digit, np.repeat(expected[..., None], 3, axis=2).astype(np.uint8))
    # Its labels: "4" in green at the left of the strip, "5" in red at the right.
    strip = rgb[tile_h + 56 : 2 * tile_h, :tile_w]
    assert np.array_equal(np.all(strip == GREEN_RGB, axis=2)[2:12, 8:14], glyph("4", 2))
    assert np.array_equal(np.all(strip == RED_RGB, axis=2)[2:12, 46:52], glyph("5", 2))
    # The three empty tiles are background only.
    assert (rgb[tile_h:, tile_w:] == BACKGROUND).all()


def test_confusion_counts_count_each_pair() -> None:
    truth = np.array([0, 0, 1, 2, 2, 2])
    predicted = np.array([0, 1, 1, 2, 0, 2])
    counts = confusion_counts(truth, predicted, 3)
    assert counts.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_the_confusion_picture_shades_cells_by_their_share_of_the_row() -> None:
    counts = np.diag(np.full(10, 20))
    counts[3, 3], counts[3, 5] = 15, 5
    rgb = confusion_picture(counts).rgb()
    assert rgb.shape == (MARGIN + 10 * CELL, MARGIN + 10 * CELL, 3)

    def corner(row: int, column: int) -> tuple[int, ...]:
        """A pixel inside the cell, clear of its count."""
        return tuple(rgb[MARGIN + row * CELL + 2, MARGIN + column * CELL + 2])

    assert corner(0, 0) == (51, 102, 255)  # all right: full blue
    assert corner(3, 3) == (102, 140, 255)  # 75% right: paler
    assert corner(3, 5) == (255, 210, 210)  # 25% wrong: pale red
    assert corner(0, 1) == (255, 255, 255)  # never: white
    assert tuple(rgb[MARGIN, MARGIN + 5]) == (255, 255, 255)  # the lines between cells
    # The count 20 in white on a full cell, 5 in dark ink on a pale one.
    full = rgb[MARGIN + 9 : MARGIN + 19, MARGIN + 7 : MARGIN + 21]
    assert np.all(full == 255, axis=2)[:, :6].tolist() == glyph("2", 2).tolist()
    pale = rgb[MARGIN + 3 * CELL + 9 : MARGIN + 3 * CELL + 19, MARGIN + 5 * CELL + 11 :][:, :6]
    assert np.all(pale == 26, axis=2).tolist() == glyph("5", 2).tolist()


def test_the_confusion_picture_refuses_more_classes_than_its_palette_holds() -> None:
    with pytest.raises(ValueError, match="at most 15 classes, got 16"):
        confusion_picture(np.zeros((16, 16), dtype=np.int64))
