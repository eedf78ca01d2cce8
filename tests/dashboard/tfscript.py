"""What a user's own program leaves in its run folder, written by real TensorFlow:
`python tests/dashboard/tfscript.py RUN_DIR WORKERS`.

Worker 0 fits a tiny tf.keras model with Keras' TensorBoard callback (its train/ and
validation/ logs under workers/0/tensorboard/, weight histograms included) and TensorBoard's
`hp.KerasCallback` (HPARAMS, in the same folder), and saves it as a SavedModel under
artifacts/; every worker writes its own `tf.summary.scalar("custom/throughput", ...)` and
`hp.hparams(...)` (its index among them) under workers/<i>/logs/, and worker 0 an image and a
text there. No cluster: this only makes the files a script run would.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")

import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

# What the fit logs for TensorBoard's HParams tab: every kind of value it takes.
HPARAMS = {"optimizer": "sgd", "units": 1, "dropout": 0.25, "batch_norm": False}


def main(run_dir: Path, workers: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x.sum(axis=1) > 0).astype("float32")
    model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(1, "sigmoid")])
    model.compile("sgd", "binary_crossentropy", metrics=["accuracy"])
    board = tf.keras.callbacks.TensorBoard(
        str(run_dir / "workers" / "0" / "tensorboard"), histogram_freq=1
    )
    logged = hp.KerasCallback(str(run_dir / "workers" / "0" / "tensorboard"), HPARAMS)
    callbacks = [board, logged]
    model.fit(x, y, epochs=3, batch_size=16, validation_split=0.25, callbacks=callbacks, verbose=0)
    tf.saved_model.save(model, str(run_dir / "artifacts" / "saved_model"))
    (run_dir / "artifacts" / "notes.txt").write_text("trained by tfscript\n")
    for index in range(workers):
        writer = tf.summary.create_file_writer(str(run_dir / "workers" / str(index) / "logs"))
        with writer.as_default():
            hp.hparams({"worker": index, "writer": "tf.summary"}, start_time_secs=1e9 + index)
            for step in range(10):
                tf.summary.scalar("custom/throughput", 100.0 * (index + 1) + step, step=step)
            if index == 0:
                ramp = tf.reshape(tf.linspace(0.0, 1.0, 16 * 16), (1, 16, 16, 1))
                tf.summary.image("samples/ramp", ramp, step=9)
                tf.summary.text("notes", "trained by **tfscript**", step=9)
        writer.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
