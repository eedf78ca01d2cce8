"""`ClusterProgress`: the Keras callback that gives a worker step-level depth, the built-in
trainer's and a user's program's alike.

In a user's program (run by `python -m trainer.wrap`), one line::

    from trainer.callback import ClusterProgress
    model.fit(..., callbacks=[ClusterProgress(global_batch_size=64)])

It writes `progress/*` every `log_every` global steps and `epoch/*` after every epoch into
this worker's event folder ($TFCLUSTER_WORKER_DIR/events), and keeps the running fields of
status.json current (phase training or evaluating, epoch, epochs, step, steps_total, loss,
accuracy, examples_per_sec), which the launcher's stall rule and the ETA read. The wrapper
keeps the rest of the file (trainer.status). Outside a tfcluster worker ($TFCLUSTER_WORKER_DIR
unset) it does nothing, so the program runs unchanged by hand. `with progress.phase("saving"):`
marks a phase of the program's own (saving, evaluating) so that it is not taken for a stall.

Work happens once per window of steps, never per step, and Keras' per-step logs stay
tensors (no host sync) between windows. Every write is best effort (trainer.guard): a full
disk skips progress, it never ends training.

It subclasses `tf.keras.callbacks.Callback`, which under TF_USE_LEGACY_KERAS=1 (set on every
worker unless the user chose otherwise) is tf-keras', the Keras that trains under
MultiWorkerMirroredStrategy.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tensorflow as tf
from tensorflow.python.ops import summary_ops_v2

from runformat import (
    EPOCH_TAGS,
    EVENTS_DIR,
    NUM_WORKERS_ENV,
    PROGRESS_ACCURACY,
    PROGRESS_EXAMPLES_PER_SEC,
    PROGRESS_LOSS,
    PROGRESS_STEP_TIME_MS,
    STATUS_JSON,
    TF_CONFIG_ENV,
    WORKER_DIR_ENV,
    Phase,
)
from trainer.guard import BestEffort
from trainer.status import StatusFile
from trainer.sysmetrics import Sample, SystemMonitor

FLUSH_MILLIS = 2000  # readers see new scalars within ~2 s, without a disk write per window
AFTER_FIT: Phase = "running"
"""A user's program after fit (or after one of its own phases): running, saying no steps."""


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


def workers_in(environ: dict[str, str] | os._Environ[str]) -> int:
    """How many workers the job has: $TFCLUSTER_NUM_WORKERS, else TF_CONFIG's, else 1."""
    count = environ.get(NUM_WORKERS_ENV, "")
    if count.isdigit() and int(count) > 0:
        return int(count)
    with contextlib.suppress(ValueError, TypeError, AttributeError, KeyError):
        workers = json.loads(environ.get(TF_CONFIG_ENV) or "{}")["cluster"]["worker"]
        return max(1, len(workers))
    return 1


class ClusterProgress(tf.keras.callbacks.Callback):  # type: ignore[misc,name-defined]
    """This worker's progress for the dashboard and the launcher (see the module docstring).

    `global_batch_size`: the examples of one step over all workers (this worker's share
    gives examples/s; without it examples/s is not reported). `log_every`: global steps per
    progress window. The trainer also passes its own `status`, `monitor` and `events_dir`;
    a user's program passes none and gets them from $TFCLUSTER_WORKER_DIR. `after_fit`: the
    phase from fit's last step on (the trainer's is `evaluating`: it evaluates next).
    """

    def __init__(
        self,
        global_batch_size: int | None = None,
        log_every: int = 10,
        *,
        status: StatusFile | None = None,
        monitor: SystemMonitor | None = None,
        events_dir: Path | None = None,
        num_workers: int | None = None,
        after_fit: Phase = AFTER_FIT,
    ) -> None:
        super().__init__()
        self._supports_tf_logs = True
        if status is None:
            folder = os.environ.get(WORKER_DIR_ENV)
            if folder:
                status = StatusFile(Path(folder) / STATUS_JSON, {}, shared=True)
                events_dir = events_dir or Path(folder) / EVENTS_DIR
        self.standalone = monitor is None
        self.after_fit = after_fit
        self.status = status
        self.events_dir = events_dir
        self.monitor = monitor
        self.written_sample: Sample | None = None
        self.log_every = max(1, log_every)
        workers = num_workers or workers_in(os.environ)
        self.examples_per_step = (global_batch_size // workers) if global_batch_size else 0
        self.steps_per_epoch: int | None = None
        self.step = 0
        self.fitting = False
        self.clock = WindowClock(time.perf_counter())
        self.writer: Any = None
        self.events = BestEffort(f"events in {EVENTS_DIR}/")

    @property
    def active(self) -> bool:
        """False outside a tfcluster worker: the callback then does nothing at all."""
        return self.status is not None

    @contextlib.contextmanager
    def phase(self, phase: Phase) -> Iterator[None]:
        """`with progress.phase("saving"): model.save(...)`: the program's own slow work,
        not a stall; afterwards the worker is `running` again."""
        self._enter(phase)
        try:
            yield
        finally:
            self._enter(AFTER_FIT)

    def _enter(self, phase: Phase, **changes: Any) -> None:
        if self.status is not None:
            self.status.enter(phase, **changes)

    # --- Keras hooks --------------------------------------------------------------------------

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if not self.active:
            return
        self.fitting = True
        self.steps_per_epoch = self.params.get("steps") or None
        epochs = self.params.get("epochs", 0)
        total = epochs * self.steps_per_epoch if self.steps_per_epoch else None
        self._enter("training", state="running", epochs=epochs, steps_total=total)
        self.clock.restart(time.perf_counter(), self.step)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """A run resumed from a backup starts at a later epoch: count steps from there."""
        if not self.active:
            return
        if self.steps_per_epoch and self.step < epoch * self.steps_per_epoch:
            self.step = epoch * self.steps_per_epoch
            self.clock.restart(time.perf_counter(), self.step)
            self._enter("training", epoch=epoch, step=self.step)
        else:
            self.clock.resume(time.perf_counter())
            if self.status is not None and self.status.phase != "training":
                self._enter("training")

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        """Validation inside fit (or evaluate): no steps move, so the stall rule must not
        count it."""
        self._enter("evaluating")

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        """A program's own evaluate() outside fit: running again afterwards."""
        if self.standalone and not self.fitting:
            self._enter(AFTER_FIT)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if not self.active:
            return
        self.step += 1
        if self.step % self.log_every == 0:
            self._report_window(_floats(logs))
        if self.steps_per_epoch and batch + 1 == self.steps_per_epoch:
            self.clock.pause(time.perf_counter())

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if not self.active:
            return
        values = _floats(logs)
        scalars = {
            tag: values[name]
            for name, tag in zip(("loss", "accuracy"), EPOCH_TAGS, strict=True)
            if name in values
        }
        self._write_scalars(scalars, epoch + 1)
        if self.status is not None:
            self.status.update(epoch=epoch + 1, step=self.step)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        """Leave `training` as soon as the last step is done: fit still shuts its input
        pipeline down after this hook (tf.data waits for its background threads: seconds,
        tens of them on a busy host), every worker at its own pace and the others waiting for
        it in their next collective, and no step moves there for the stall rule to see."""
        self.fitting = False
        if self.writer is not None:
            with contextlib.suppress(Exception):  # a full disk fails the last flush: let it
                self.writer.close()
            self.writer = None
        self._enter(self.after_fit)

    # --- writing ------------------------------------------------------------------------------

    def _report_window(self, values: dict[str, float]) -> None:
        window = self.clock.close(self.step, time.perf_counter(), self.examples_per_step)
        scalars = {
            PROGRESS_LOSS: values.get("loss"),
            PROGRESS_ACCURACY: values.get("accuracy"),
            PROGRESS_EXAMPLES_PER_SEC: window.examples_per_sec if self.examples_per_step else None,
            PROGRESS_STEP_TIME_MS: window.step_time_ms,
        }
        system: dict[str, Any] = {}
        sample = self.monitor.latest if self.monitor is not None else None
        if sample is not None and sample is not self.written_sample:
            scalars.update(sample.scalars())
            system = {"system": sample.as_status()}
            self.written_sample = sample
        self._write_scalars(scalars, self.step)
        if self.status is not None:
            eps = scalars[PROGRESS_EXAMPLES_PER_SEC]
            self.status.update(
                step=self.step,
                loss=values.get("loss"),
                accuracy=values.get("accuracy"),
                examples_per_sec=round(eps, 1) if eps is not None else None,
                **system,
            )

    def _write_scalars(self, scalars: Mapping[str, float | None], step: int) -> None:
        """tf.summary scalars, best effort. TensorFlow's writer raises on a full disk when it
        flushes (ResourceExhaustedError) and keeps the events it could not write: on a
        failure the writer is dropped and a new one (a new file) is made once writes are due
        again, so memory stays bounded and no file holds half a record after the first."""
        if self.events_dir is None or not self.events.due():
            return
        try:
            if self.writer is None:
                self.writer = tf.summary.create_file_writer(
                    str(self.events_dir), max_queue=1000, flush_millis=FLUSH_MILLIS
                )
            with summaries_into(self.writer):
                for tag, value in scalars.items():
                    if value is not None:
                        tf.summary.scalar(tag, value, step=step)
            if self.events.failing:
                self.writer.flush()  # prove the disk takes it before saying so
        except (tf.errors.OpError, OSError) as error:
            self.events.failed(error, self.events_dir)
            if self.writer is not None:
                with contextlib.suppress(Exception):
                    self.writer.close()
            self.writer = None
            return
        self.events.succeeded()


@contextlib.contextmanager
def default_writer_kept() -> Iterator[None]:
    """If the block fails, TensorFlow's default summary writer is put back as it was before
    it: a writer's `as_default()` restores the previous one only after its closing flush
    worked, so a flush that a full disk refused leaves the failed writer the default."""
    before = summary_ops_v2._summary_state.writer
    try:
        yield
    except BaseException:
        summary_ops_v2._summary_state.writer = before
        raise


@contextlib.contextmanager
def summaries_into(writer: Any) -> Iterator[None]:
    """`writer.as_default()` with recording on, that leaves the default writer as it found it
    even when the flush on leaving fails (a full disk). TensorFlow puts the old default back
    only after a flush that worked: the failed writer would stay the default, and once closed
    every later summary (Keras' TensorBoard callback writes one after each batch) would fail
    with NotFoundError and end fit."""
    before = summary_ops_v2._summary_state.writer
    try:
        with writer.as_default(), tf.summary.record_if(True):
            yield
    finally:
        summary_ops_v2._summary_state.writer = before


def _floats(logs: dict[str, Any] | None) -> dict[str, float]:
    """Keras' logs as plain floats (they arrive as tensors: we asked for no per-step sync)."""
    return {name: float(value) for name, value in (logs or {}).items()}
