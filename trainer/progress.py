"""This worker's own progress: tf.summary scalars in workers/<i>/events and status.json.

The Keras TensorBoard callback keeps only the chief's files under MultiWorkerMirroredStrategy,
so every worker writes its own. Work happens once per window of steps, never per step, and
Keras' per-step logs stay tensors (no host sync) between windows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tensorflow as tf
import tf_keras as keras

from runformat import (
    EPOCH_TAGS,
    PROGRESS_ACCURACY,
    PROGRESS_EXAMPLES_PER_SEC,
    PROGRESS_LOSS,
    PROGRESS_STEP_TIME_MS,
)
from trainer.status import StatusFile
from trainer.sysmetrics import Sample, SystemMonitor

FLUSH_MILLIS = 2000  # readers see new scalars within ~2 s, without a disk write per window


@dataclass(frozen=True)
class Window:
    """Throughput over the steps since the last report."""

    steps: int
    seconds: float
    examples_per_step: int

    @property
    def examples_per_sec(self) -> float:
        return self.steps * self.examples_per_step / self.seconds if self.seconds > 0 else 0.0

    @property
    def step_time_ms(self) -> float:
        return 1000.0 * self.seconds / self.steps if self.steps else 0.0


class WindowClock:
    """Times windows of training steps, leaving out the pauses between epochs.

    Validation and epoch-end work run after an epoch's last step; counting them would show
    every window that spans an epoch boundary as a dip in throughput that training never had.
    """

    def __init__(self, now: float, step: int = 0) -> None:
        self.start_step = step
        self.start = now
        self.paused_at: float | None = None

    def restart(self, now: float, step: int) -> None:
        self.start_step, self.start, self.paused_at = step, now, None

    def pause(self, now: float) -> None:
        self.paused_at = now

    def resume(self, now: float) -> None:
        if self.paused_at is not None:
            self.start += now - self.paused_at
            self.paused_at = None

    def close(self, step: int, now: float, examples_per_step: int) -> Window:
        """The window ending at this step; the next one starts here."""
        window = Window(step - self.start_step, now - self.start, examples_per_step)
        self.restart(now, step)
        return window


class ProgressLogger(keras.callbacks.Callback):
    """Writes progress/* every `log_every` global steps, epoch/* after every epoch, system/*
    at the first window after each new sample, and moves the phase between training and
    evaluating (validation)."""

    def __init__(
        self,
        events_dir: Path,
        status: StatusFile,
        monitor: SystemMonitor,
        log_every: int,
        examples_per_step: int,
        steps_per_epoch: int,
    ) -> None:
        super().__init__()
        self._supports_tf_logs = True
        self.events_dir = events_dir
        self.status = status
        self.monitor = monitor
        self.written_sample: Sample | None = None
        self.log_every = log_every
        self.examples_per_step = examples_per_step
        self.steps_per_epoch = steps_per_epoch
        self.step = 0
        self.clock = WindowClock(time.perf_counter())
        self.writer: Any = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.writer = tf.summary.create_file_writer(
            str(self.events_dir), max_queue=1000, flush_millis=FLUSH_MILLIS
        )
        epochs = self.params.get("epochs", 0)
        self.status.enter("training", state="running", steps_total=epochs * self.steps_per_epoch)
        self.clock.restart(time.perf_counter(), self.step)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """A run resumed from a backup starts at a later epoch: count steps from there."""
        if self.step < epoch * self.steps_per_epoch:
            self.step = epoch * self.steps_per_epoch
            self.clock.restart(time.perf_counter(), self.step)
            self.status.enter("training", epoch=epoch, step=self.step)
        else:
            self.clock.resume(time.perf_counter())
            if self.status.phase != "training":
                self.status.enter("training")

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        """Validation inside fit: no steps move, so the stall rule must not count it."""
        self.status.enter("evaluating")

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.step += 1
        if self.step % self.log_every == 0:
            self._report_window(_floats(logs))
        if batch + 1 == self.steps_per_epoch:
            self.clock.pause(time.perf_counter())

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        values = _floats(logs)
        with self.writer.as_default(), tf.summary.record_if(True):
            for name, tag in zip(("loss", "accuracy"), EPOCH_TAGS, strict=True):
                if name in values:
                    tf.summary.scalar(tag, values[name], step=epoch + 1)
        self.status.update(epoch=epoch + 1, step=self.step)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.writer is not None:
            self.writer.close()

    def _report_window(self, values: dict[str, float]) -> None:
        window = self.clock.close(self.step, time.perf_counter(), self.examples_per_step)
        scalars = {
            PROGRESS_LOSS: values.get("loss"),
            PROGRESS_ACCURACY: values.get("accuracy"),
            PROGRESS_EXAMPLES_PER_SEC: window.examples_per_sec,
            PROGRESS_STEP_TIME_MS: window.step_time_ms,
        }
        sample = self.monitor.latest
        system: dict[str, Any] = {}
        if sample is not None and sample is not self.written_sample:
            scalars.update(sample.scalars())
            system = {"system": sample.as_status()}
            self.written_sample = sample
        with self.writer.as_default(), tf.summary.record_if(True):
            for tag, value in scalars.items():
                if value is not None:
                    tf.summary.scalar(tag, value, step=self.step)
        self.status.update(
            step=self.step,
            loss=values.get("loss"),
            accuracy=values.get("accuracy"),
            examples_per_sec=round(window.examples_per_sec, 1),
            **system,
        )


def _floats(logs: dict[str, Any] | None) -> dict[str, float]:
    """Keras' logs as plain floats (they arrive as tensors: we asked for no per-step sync)."""
    return {name: float(value) for name, value in (logs or {}).items()}
