"""The model's mistakes in pictures: at each epoch's end the chief writes a grid of test digits
it gets wrong (the true label in green, the predicted one in red) and a confusion matrix, as
image summaries in its own events folder, where the dashboard's Media tab and TensorBoard
show them.

Cheap by design (`benchmarks/bench_trainer.py --mistakes` measures it): a fixed subset of the
test split (EXAMPLES digits), one traced forward pass per epoch (most of the cost), pictures
drawn with numpy and encoded with zlib (trainer/pictures.py), and both written as one event,
built as a protobuf and appended to an event file of their own by TensorFlow's TFRecord writer
(its C++ framing and CRC): ~0.03 ms, where a summary writer's eager ops take ~0.3 ms an epoch
and ~7 ms the first time.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.compat.proto.tensor_pb2 import TensorProto
from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
from tensorboard.compat.proto.types_pb2 import DT_STRING
from tensorboard.plugins.image import metadata as image_metadata

from runformat import EVENT_FILE_VERSION, EVENTS_DIR, event_file_name, events_dir
from trainer.cluster import Cluster
from trainer.config import TrainConfig
from trainer.data import NUM_CLASSES, Splits
from trainer.guard import BestEffort
from trainer.pictures import (
    Picture,
    confusion_counts,
    confusion_picture,
    encode_png,
    mistakes_grid,
)

MISTAKES_TAG = "mistakes/misclassified"
CONFUSION_TAG = "mistakes/confusion_matrix"
EXAMPLES = 100
"""Test digits looked at per epoch: ~10 of each class, enough to show which digits the model
confuses, and its forward pass is most of the cost (200 would double it, to ~2% of a 21-step
digits epoch's CPU)."""
SHOWN = 16
"""Wrong digits drawn at most: a 4 x 4 grid."""


def image_value(tag: str, picture: Picture, description: str) -> Summary.Value:
    """One picture as tf.summary.image writes it: a string tensor [width, height, png] with
    the image plugin's metadata."""
    size = [str(picture.width).encode(), str(picture.height).encode()]
    tensor = TensorProto(
        dtype=DT_STRING,
        tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=3)]),
        string_val=[*size, encode_png(picture)],
    )
    metadata = image_metadata.create_summary_metadata(display_name=tag, description=description)
    return Summary.Value(tag=tag, metadata=metadata, tensor=tensor)


def mistakes_summary(
    images: np.ndarray, truth: np.ndarray, predicted: np.ndarray, epoch: int
) -> Summary:
    """After `epoch` (from 1): the grid of the first SHOWN wrong digits, if any, and the
    confusion matrix of all of them, as one summary."""
    wrong = np.flatnonzero(predicted != truth)[:SHOWN]
    values = []
    if len(wrong):
        values.append(
            image_value(
                MISTAKES_TAG,
                mistakes_grid(images[wrong], truth[wrong], predicted[wrong]),
                f"Test digits the model got wrong after epoch {epoch} (of the first"
                f" {len(images)}): true label green, predicted red.",
            )
        )
    values.append(
        image_value(
            CONFUSION_TAG,
            confusion_picture(confusion_counts(truth, predicted, NUM_CLASSES)),
            f"Rows: true digit; columns: predicted digit; the first {len(images)} test digits.",
        )
    )
    return Summary(value=values)


def traced_predictions(model: keras.Model, images: np.ndarray) -> Callable[[], tf.Tensor]:
    """The model's predicted classes for `images`, as a traced function of no arguments (the
    digits become a constant once): half the CPU of an eager call. The first epoch pays for
    the tracing, so: one batch (smaller, cache-friendlier ones save ~15% a call but trace for
    twice as long) and no autograph (half the tracing; the model has no Python control flow
    to convert)."""
    inputs = tf.constant(images)
    return tf.function(lambda: tf.argmax(model(inputs, training=False), axis=1), autograph=False)


def new_event_path(folder: Path, suffix: str = "mistakes") -> Path:
    """A new event file's path in `folder`, named like TensorFlow's
    (`events.out.tfevents.<secs>.<host>.<pid>.<suffix>`), never one that exists (a writer
    would empty it)."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = event_file_name(time.time(), socket.gethostname(), os.getpid(), suffix)
    for n in itertools.count(1):
        path = folder / (stem if n == 1 else f"{stem}.{n}")
        if not path.exists():
            return path
    raise AssertionError("unreachable")


def open_event_file(path: Path) -> tf.io.TFRecordWriter:
    """TensorFlow's TFRecord writer on `path`, its version record written (buffered)."""
    writer = tf.io.TFRecordWriter(str(path))
    version = Event(wall_time=time.time(), file_version=EVENT_FILE_VERSION)
    writer.write(version.SerializeToString())
    return writer


def cut_back(path: Path, whole: int) -> None:
    """After a failed write: the file back to its first `whole` bytes (its whole records:
    cutting needs no room), or gone if no event ever landed in it. A reader then never meets
    half a record where the disk stopped, nor an empty file left by a try on a full disk."""
    with contextlib.suppress(OSError):
        if whole == 0:
            path.unlink(missing_ok=True)
        elif path.stat().st_size > whole:
            os.truncate(path, whole)


class MistakesLogger(keras.callbacks.Callback):
    """At each epoch's end: the misclassified digits and the confusion matrix, as images."""

    def __init__(self, x: np.ndarray, y: np.ndarray, events: Path) -> None:
        super().__init__()
        self.x = np.asarray(x[:EXAMPLES], dtype=np.float32)
        self.y = np.asarray(y[:EXAMPLES], dtype=np.int64)
        self.events = events
        self.writer: Any = None
        self.path: Path | None = None  # the file being written
        self.whole = 0  # its bytes known whole on disk: the records up to the last flush
        self.predict: Callable[[], tf.Tensor] | None = None
        self.images = BestEffort(f"images in {EVENTS_DIR}/")

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.predict = traced_predictions(self.model, self.x)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Best effort, like every monitoring write: a full disk (TensorFlow's writer raises
        when it flushes) skips the pictures with one warning and never ends training."""
        if self.predict is None or not self.images.due():
            return
        predicted = self.predict().numpy()
        summary = mistakes_summary(self.x, self.y, predicted, epoch + 1)
        try:
            self._write(summary, epoch + 1)
        except (tf.errors.OpError, OSError) as error:
            self.images.failed(error, self.events)
            self._drop_writer(failed=True)
            return
        self.images.succeeded()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._drop_writer()

    def _write(self, summary: Summary, step: int) -> None:
        """One event, on disk when this returns (the launcher mirrors it from there)."""
        if self.writer is None:
            self.path, self.whole = new_event_path(self.events), 0
            self.writer = open_event_file(self.path)
        event = Event(wall_time=time.time(), step=step, summary=summary)
        self.writer.write(event.SerializeToString())
        self.writer.flush()
        self.whole = self.path.stat().st_size if self.path is not None else 0

    def _drop_writer(self, failed: bool = False) -> None:
        """Close the file; after a failure, cut it back to its whole records (TensorFlow's
        writer may have put part of one down, and its close tries again), and start a new
        file with the next write."""
        if self.writer is not None:
            with contextlib.suppress(Exception):  # a full disk fails its last flush: let it
                self.writer.close()
            self.writer = None
        if failed and self.path is not None:
            cut_back(self.path, self.whole)
        self.path = None


def mistakes_callbacks(config: TrainConfig, cluster: Cluster, splits: Splits) -> list[Any]:
    """The chief's MistakesLogger (writing into its own events folder), unless turned off or
    there are no test digits; none elsewhere."""
    if not (config.mistakes and cluster.is_chief and len(splits.x_test)):
        return []
    return [MistakesLogger(splits.x_test, splits.y_test, events_dir(config.run_dir, cluster.index))]
