"""The model's mistakes in pictures: at each epoch's end the chief writes a grid of test digits
it gets wrong (the true label in green, the predicted one in red) and a confusion matrix, as
image summaries in its own events folder, where the dashboard's Media tab and TensorBoard
show them.

Cheap by design: a fixed subset of the test split (a few hundred digits), one forward pass
per epoch, pictures drawn with numpy (a tiny bitmap font, no plotting library).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras
from tensorboard.plugins.image import metadata as image_metadata

from runformat import EVENTS_DIR, events_dir
from trainer.cluster import Cluster
from trainer.data import NUM_CLASSES, Splits
from trainer.guard import BestEffort

MISTAKES_TAG = "mistakes/misclassified"
CONFUSION_TAG = "mistakes/confusion_matrix"
# Test digits looked at per epoch, and wrong ones drawn (a 4 x 4 grid at most).
EXAMPLES = 200
SHOWN = 16
COLUMNS = 4

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
_GLYPHS = {
    char: np.array([[bit == "1" for bit in row] for row in rows]) for char, rows in _FONT.items()
}
_SCALED: dict[tuple[str, int], np.ndarray] = {}
GREEN = (0.1, 0.75, 0.2)
RED = (0.95, 0.2, 0.15)


def draw_text(canvas: np.ndarray, text: str, top: int, left: int, color: Any, scale: int) -> None:
    """Digits drawn into an (h, w, 3) float canvas in place, `scale` pixels per font dot."""
    for position, char in enumerate(text):
        glyph = _SCALED.get((char, scale))
        if glyph is None:
            glyph = _SCALED[char, scale] = np.kron(_GLYPHS[char], np.ones((scale, scale), bool))
        x = left + position * 4 * scale
        region = canvas[top : top + glyph.shape[0], x : x + glyph.shape[1]]
        region[glyph[: region.shape[0], : region.shape[1]]] = color


def mistakes_grid(
    images: np.ndarray, truth: np.ndarray, predicted: np.ndarray, columns: int = COLUMNS
) -> np.ndarray:
    """One (h, w, 3) picture: each digit twice its size over a strip with its true label
    (green, left) and the predicted one (red, right)."""
    count = len(images)
    rows = max(1, -(-count // columns))
    size, strip = 2 * images.shape[1], 14
    tile_h, tile_w = size + strip, size + 4
    canvas = np.full((rows * tile_h, columns * tile_w, 3), 0.12, dtype=np.float32)
    for n in range(count):
        top, left = (n // columns) * tile_h, (n % columns) * tile_w + 2
        digit = np.kron(images[n], np.ones((2, 2), dtype=np.float32))
        canvas[top : top + size, left : left + size] = digit[..., None]
        draw_text(canvas, str(int(truth[n])), top + size + 2, left + 6, GREEN, 2)
        draw_text(canvas, str(int(predicted[n])), top + size + 2, left + size - 12, RED, 2)
    return canvas


def confusion_counts(truth: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """counts[true, predicted]."""
    counts = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(counts, (truth.astype(np.int64), predicted.astype(np.int64)), 1)
    return counts


def confusion_picture(counts: np.ndarray, cell: int = 28) -> np.ndarray:
    """The confusion matrix as an (h, w, 3) picture: rows true, columns predicted, each cell
    shaded by its share of its row and labelled with its count."""
    classes = len(counts)
    margin = 14
    side = margin + classes * cell
    canvas = np.ones((side, side, 3), dtype=np.float32)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    # Right answers in blue, wrong ones in red (never paler than a quarter), none white.
    tones = np.ones((classes, classes, 3), dtype=np.float32)
    diagonal = np.eye(classes, dtype=bool)
    tones[diagonal] = np.stack(
        [1 - 0.8 * shares[diagonal], 1 - 0.6 * shares[diagonal], np.ones(classes)], axis=1
    )
    wrong = ~diagonal & (counts > 0)
    fade = 1 - 0.7 * np.maximum(shares[wrong], 0.25)
    tones[wrong] = np.stack([np.ones_like(fade), fade, fade], axis=1)
    cells = np.repeat(np.repeat(tones, cell, axis=0), cell, axis=1)
    cells[::cell] = 1.0  # white lines between the cells
    cells[:, ::cell] = 1.0
    canvas[margin:, margin:] = cells
    for label in range(classes):
        where = margin + label * cell + cell // 2 - 3
        draw_text(canvas, str(label), 2, where, (0.2, 0.2, 0.2), 2)  # predicted, on top
        draw_text(canvas, str(label), where - 2, 3, (0.2, 0.2, 0.2), 2)  # true, at the left
    for row, column in zip(*np.nonzero(counts), strict=True):
        text = str(int(counts[row, column]))
        ink = (1.0, 1.0, 1.0) if shares[row, column] > 0.6 else (0.1, 0.1, 0.1)
        top, left = margin + row * cell, margin + column * cell
        width = len(text) * 8 - 2
        draw_text(canvas, text, top + cell // 2 - 5, left + (cell - width) // 2, ink, 2)
    return canvas


def write_image(tag: str, picture: np.ndarray, step: int, description: str) -> None:
    """One (h, w, 3) picture in [0, 1] as an image summary, as tf.summary.image writes it
    (a [width, height, png] string tensor), at half its CPU: one PNG encoded directly."""
    height, width = picture.shape[:2]
    png = tf.io.encode_png((picture * 255).round().astype(np.uint8), compression=1)
    tf.summary.write(
        tag,
        tf.stack([tf.constant(str(width).encode()), tf.constant(str(height).encode()), png]),
        step=step,
        metadata=image_metadata.create_summary_metadata(display_name=tag, description=description),
    )


class MistakesLogger(keras.callbacks.Callback):
    """At each epoch's end: the misclassified digits and the confusion matrix, as images."""

    def __init__(self, x: np.ndarray, y: np.ndarray, events: Path) -> None:
        super().__init__()
        self.x = np.asarray(x[:EXAMPLES], dtype=np.float32)
        self.y = np.asarray(y[:EXAMPLES], dtype=np.int64)
        self.events = events
        self.writer: Any = None
        self.predict: Any = None
        self.images = BestEffort(f"images in {EVENTS_DIR}/")

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        model = self.model
        # A traced forward pass costs half the CPU of an eager call (benchmarks/bench_trainer).
        inputs = tf.constant(self.x)
        self.predict = tf.function(lambda: tf.argmax(model(inputs, training=False), axis=1))

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Best effort, like every monitoring write: a full disk (TensorFlow's writer raises
        when it flushes) skips the pictures with one warning and never ends training."""
        if not self.images.due():
            return
        predicted = self.predict().numpy()
        wrong = np.flatnonzero(predicted != self.y)[:SHOWN]
        counts = confusion_counts(self.y, predicted, NUM_CLASSES)
        try:
            if self.writer is None:
                self.writer = tf.summary.create_file_writer(str(self.events))
            with self.writer.as_default(), tf.summary.record_if(True):
                if len(wrong):
                    grid = mistakes_grid(self.x[wrong], self.y[wrong], predicted[wrong])
                    write_image(
                        MISTAKES_TAG,
                        grid,
                        epoch + 1,
                        f"Test digits the model got wrong after epoch {epoch + 1} (of the first"
                        f" {len(self.x)}): true label green, predicted red.",
                    )
                write_image(
                    CONFUSION_TAG,
                    confusion_picture(counts),
                    epoch + 1,
                    f"Rows: true digit; columns: predicted digit; the first {len(self.x)} test "
                    "digits.",
                )
            self.writer.flush()
        except (tf.errors.OpError, OSError) as error:
            self.images.failed(error, self.events)
            self._drop_writer()
            return
        self.images.succeeded()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._drop_writer()

    def _drop_writer(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(Exception):  # a full disk fails its last flush: let it
                self.writer.close()
            self.writer = None


def mistakes_callbacks(cluster: Cluster, splits: Splits, run_dir: Path) -> list[Any]:
    """The chief's MistakesLogger (writing into its own events folder); none elsewhere."""
    if not cluster.is_chief:
        return []
    return [MistakesLogger(splits.x_test, splits.y_test, events_dir(run_dir, cluster.index))]
