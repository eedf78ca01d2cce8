"""Writes event files with TensorFlow itself: images, histograms and text of every shape the
Media tab reads, and a Keras fit with TensorBoard(histogram_freq=1).

    python tests/dashboard/media_writer.py DIR
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")

import numpy as np
import tensorflow as tf
import tf_keras as keras


def write_summaries(folder: str) -> None:
    rng = np.random.default_rng(0)
    writer = tf.summary.create_file_writer(folder)
    with writer.as_default():
        for step in range(12):
            images = rng.random((3, 8, 6, 3)).astype("float32")
            tf.summary.image("samples", images, step=step, max_outputs=3)
            tf.summary.image("gray", rng.random((1, 5, 4, 1)), step=step)
            tf.summary.histogram("weights", rng.normal(size=200) + step, step=step)
            tf.summary.histogram("few", [1.0, 1.0, 2.0], step=step, buckets=4)
            tf.summary.text("note", f"step **{step}** <b>bold</b>", step=step)
            tf.summary.text("table", [["a", "b"], [str(step), "<i>x</i>"]], step=step)
            tf.summary.scalar("loss", 1.0 / (step + 1), step=step)
        tf.summary.histogram("empty", tf.zeros([0]), step=0)
    writer.close()


def keras_fit(folder: str) -> None:
    x = np.random.default_rng(1).random((64, 4)).astype("float32")
    y = (x.sum(axis=1) > 2).astype("int32")
    model = keras.Sequential([keras.layers.Dense(3, activation="relu"), keras.layers.Dense(2)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    board = keras.callbacks.TensorBoard(log_dir=folder, histogram_freq=1, write_graph=False)
    model.fit(x, y, epochs=3, batch_size=16, verbose=0, validation_split=0.25, callbacks=[board])


if __name__ == "__main__":
    root = sys.argv[1]
    write_summaries(os.path.join(root, "workers", "1", "user", "own"))
    keras_fit(os.path.join(root, "tensorboard"))
