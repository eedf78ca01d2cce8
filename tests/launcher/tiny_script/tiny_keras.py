"""A tiny multi-worker tf.keras program, written as TensorFlow's tutorial teaches, for the
launcher's `--script` tests and benchmark: a few hundred random rows, one small dense model.

It takes from tfcluster only what a user's program would: TF_CONFIG, $TFCLUSTER_WORKER_DIR
for its TensorBoard logs, $TFCLUSTER_BACKUP_DIR for BackupAndRestore and
$TFCLUSTER_ARTIFACTS_DIR for what the chief keeps. Its own options make it fail on purpose
(`--fail-worker 1 --fail-epoch 2 --fail-code 3`: that worker exits with that code at the end
of every epoch from that one on) or train slowly (`--step-sleep`). `--verbose 1` prints
Keras' progress bar as fit does by default (the tests' other runs keep their logs short).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--steps", type=int, default=5, help="steps per epoch")
    p.add_argument("--batch", type=int, default=16, help="per worker")
    p.add_argument("--step-sleep", type=float, default=0.0, help="seconds after each step")
    p.add_argument("--fail-worker", type=int, default=-1)
    p.add_argument("--fail-epoch", type=int, default=1, help="1-based")
    p.add_argument("--fail-code", type=int, default=3)
    p.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2), help="fit's")
    return p.parse_args()


class Timing(tf.keras.callbacks.Callback):
    """Steps per second after the first epoch (which builds the graph), and the epoch each
    attempt begins with (BackupAndRestore moves it on after a restart)."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index, self.first, self.steps, self.t0 = index, None, 0, 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self.first is None:
            self.first = epoch
            print(f"tiny_keras: worker {self.index} begins at epoch {epoch + 1}", flush=True)
        if epoch == self.first + 1:
            self.t0, self.steps = time.perf_counter(), 0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.steps += 1

    def rate(self) -> float | None:
        took = time.perf_counter() - self.t0
        return self.steps / took if self.t0 and took > 0 else None


def main() -> None:
    args = parse_args()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # before any other TF op
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    index = config.get("task", {}).get("index", 0)
    workers = len(config.get("cluster", {}).get("worker", [None]))

    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 8)).astype("float32")
    y = (x.sum(axis=1) > 0).astype("int32")
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    data = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(512, seed=0)
        .repeat()
        .batch(args.batch * workers, drop_remainder=True)
        .with_options(options)
    )
    with strategy.scope():
        model = tf.keras.Sequential(
            [
                tf.keras.layers.Input(shape=(8,)),
                tf.keras.layers.Dense(16, activation="relu"),
                tf.keras.layers.Dense(2),
            ]
        )
        model.compile(
            optimizer=tf.keras.optimizers.SGD(0.05),
            loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )

    worker_dir = os.environ.get("TFCLUSTER_WORKER_DIR") or tempfile.mkdtemp()
    backup_dir = os.environ.get("TFCLUSTER_BACKUP_DIR") or os.path.join(worker_dir, "backup")
    timing = Timing(index)

    class FailOnPurpose(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if index == args.fail_worker and epoch + 1 >= args.fail_epoch:
                print(f"tiny_keras: worker {index} gives up after epoch {epoch + 1}",
                      file=sys.stderr, flush=True)  # fmt: skip
                os._exit(args.fail_code)

    class Sleep(tf.keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            time.sleep(args.step_sleep)

    callbacks = [
        tf.keras.callbacks.BackupAndRestore(backup_dir=backup_dir),
        tf.keras.callbacks.TensorBoard(log_dir=os.path.join(worker_dir, "tb")),
        timing,
        FailOnPurpose(),
    ]
    if args.step_sleep:
        callbacks.append(Sleep())
    history = model.fit(
        data,
        epochs=args.epochs,
        steps_per_epoch=args.steps,
        callbacks=callbacks,
        verbose=args.verbose,
    )
    rate = timing.rate()
    print(f"tiny_keras: worker {index} steps/s {rate if rate else float('nan'):.2f}", flush=True)
    artifacts = os.environ.get("TFCLUSTER_ARTIFACTS_DIR")
    if index == 0 and artifacts:
        os.makedirs(artifacts, exist_ok=True)
        with open(os.path.join(artifacts, "result.json"), "w") as f:
            json.dump({"loss": history.history["loss"][-1], "steps_per_sec": rate}, f)


if __name__ == "__main__":
    main()
