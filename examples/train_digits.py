"""A multi-worker Keras program, written the way TensorFlow's multi-worker tutorial teaches:
`tf.keras`, MultiWorkerMirroredStrategy, `model.fit`. It runs by hand on one machine
(`python train_digits.py`) and unchanged on many with `fab train --script train_digits.py`.

What it takes from tfcluster, each optional (see README.md):
- TF_CONFIG, which the launcher sets on every worker;
- $TFCLUSTER_BACKUP_DIR for BackupAndRestore, so `fab train --max-restarts 1` resumes it;
- $TFCLUSTER_WORKER_DIR for its TensorBoard logs, which the dashboard charts;
- $TFCLUSTER_RUN_DIR/artifacts/, where the chief saves the model that comes home;
- ClusterProgress, one line for step-level progress in `fab train` and the dashboard.
The data is scikit-learn's 1,797 handwritten 8x8 digits: nothing to download.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits

try:  # the shipped tfcluster code is on PYTHONPATH on every worker; by hand it may not be
    from trainer.callback import ClusterProgress
except ImportError:
    ClusterProgress = None


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32, help="per worker")
    p.add_argument("--steps-per-epoch", type=int, default=None)
    p.add_argument("--learning-rate", type=float, default=0.01)
    return p.parse_args()


def task() -> tuple[int, int]:
    """This worker's index and the number of workers, from TF_CONFIG (none: one worker)."""
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    workers = config.get("cluster", {}).get("worker", [None])
    return config.get("task", {}).get("index", 0), len(workers)


def dataset(batch: int) -> tuple[tf.data.Dataset, tf.data.Dataset, int]:
    """The digits as (train, validation) datasets of the global batch, the same on every worker
    (same seed); the strategy gives each worker its share."""
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    split = len(x) * 3 // 4
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    train = (
        tf.data.Dataset.from_tensor_slices((x[:split], y[:split]))
        .shuffle(split, seed=0)
        .repeat()
        .batch(batch, drop_remainder=True)
        .with_options(options)
    )
    test = tf.data.Dataset.from_tensor_slices((x[split:], y[split:])).batch(batch)
    return train, test.with_options(options), split // batch


def build_model(learning_rate: float) -> tf.keras.Model:
    model = tf.keras.Sequential(
        [
            tf.keras.layers.Input(shape=(64,)),
            tf.keras.layers.Dense(64, activation="relu"),
            tf.keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer=tf.keras.optimizers.SGD(learning_rate, momentum=0.9),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def main() -> None:
    args = parse_args()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # before any other TF op
    index, workers = task()
    global_batch = args.batch_size * workers
    train, test, steps = dataset(global_batch)
    with strategy.scope():
        model = build_model(args.learning_rate)

    worker_dir = os.environ.get("TFCLUSTER_WORKER_DIR") or tempfile.mkdtemp()
    backup_dir = os.environ.get("TFCLUSTER_BACKUP_DIR") or os.path.join(worker_dir, "backup")
    callbacks = [
        tf.keras.callbacks.BackupAndRestore(backup_dir=backup_dir),
        tf.keras.callbacks.TensorBoard(log_dir=os.path.join(worker_dir, "tensorboard")),
    ]
    progress = (
        ClusterProgress(global_batch_size=global_batch, log_every=5) if ClusterProgress else None
    )
    if progress is not None:
        callbacks.append(progress)
    model.fit(
        train,
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch or steps,
        validation_data=test,
        callbacks=callbacks,
        verbose=2,
    )

    # Every worker saves (the strategy needs them all); only the chief's copy is kept.
    run_dir = os.environ.get("TFCLUSTER_RUN_DIR")
    chief_dir = os.path.join(run_dir, "artifacts") if run_dir else worker_dir
    target = chief_dir if index == 0 else tempfile.mkdtemp()
    os.makedirs(target, exist_ok=True)
    with progress.phase("saving") if progress else contextlib.nullcontext():
        model.save(os.path.join(target, "digits_model.h5"))
    if index != 0:
        shutil.rmtree(target, ignore_errors=True)
    loss, accuracy = model.evaluate(test, verbose=0)
    print(f"worker {index}: test accuracy {accuracy:.3f}, loss {loss:.3f}")


if __name__ == "__main__":
    main()
