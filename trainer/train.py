"""One worker's whole job: strategy, model, fit, evaluate, save. Imports TensorFlow."""

from __future__ import annotations

import contextlib
import shutil
import signal
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tensorflow as tf
import tf_keras as keras
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams.summary import session_end_pb
from tensorboard.plugins.hparams.summary_v2 import hparams_pb

from runformat import BACKUP_DIR, MODEL_FILE, TENSORBOARD_DIR, events_dir
from trainer.callback import ClusterProgress, default_writer_kept, summaries_into
from trainer.cluster import Cluster
from trainer.config import TrainConfig
from trainer.data import Splits
from trainer.errors import WorkError
from trainer.guard import BestEffort, failure_line
from trainer.mistakes import mistakes_callbacks
from trainer.model import build_model
from trainer.pipeline import eval_dataset, train_dataset
from trainer.plan import BatchPlan
from trainer.status import StatusFile
from trainer.sysmetrics import SystemMonitor


def configure_devices(threads: int | None) -> list[str]:
    """Limit CPU threads and let GPUs grow their memory; must run before the strategy."""
    if threads is not None:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    return [gpu.name for gpu in gpus] or ["CPU"]


def build_strategy() -> tf.distribute.MultiWorkerMirroredStrategy:
    """The strategy, with SIGTERM kept for Python: TF's coordination service installs its own
    handler, which would keep a worker training after the launcher asked it to stop."""
    python_handler = signal.getsignal(signal.SIGTERM)
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    signal.signal(signal.SIGTERM, python_handler)
    return strategy


def train(
    config: TrainConfig,
    cluster: Cluster,
    splits: Splits,
    plan: BatchPlan,
    status: StatusFile,
    monitor: SystemMonitor,
) -> dict[str, Any]:
    """Train, evaluate on the test split and save; returns the metrics (the chief writes them)."""
    status.enter("connecting")
    devices = configure_devices(config.threads)
    strategy = build_strategy()
    keras.utils.set_random_seed(config.seed)
    print(describe(config, cluster, splits, plan, devices), flush=True)

    with strategy.scope():
        model = build_model(config.learning_rate)
    # Metrics are already summed over every replica of every worker; tf-keras' default
    # ("auto": add up the replicas' results) would report them num_workers times over.
    model.distribute_reduction_method = "first"
    test_data = eval_dataset(splits.x_test, splits.y_test, plan)
    started, cpu_started = time.perf_counter(), time.process_time()
    model.fit(
        train_dataset(strategy, splits.x_train, splits.y_train, plan, config.seed, config.shard),
        epochs=config.epochs,
        steps_per_epoch=plan.steps_per_epoch,
        validation_data=test_data if config.validation else None,
        callbacks=[
            *make_callbacks(config, cluster, plan, status, monitor, splits.name),
            *mistakes_callbacks(config, cluster, splits),
        ],
        verbose=2,
    )
    train_time = time.perf_counter() - started
    train_cpu = time.process_time() - cpu_started
    with contextlib.suppress(OSError):  # Keras empties the backup when fit succeeds
        (config.run_dir / BACKUP_DIR).rmdir()
    status.enter("evaluating")
    results = model.evaluate(test_data, return_dict=True, verbose=0)
    status.enter("saving")
    save_model(model, config.run_dir, cluster.is_chief)
    steps = plan.steps_per_epoch * config.epochs
    return {
        "test_loss": float(results["loss"]),
        "test_accuracy": float(results["accuracy"]),
        "examples_seen": steps * plan.global_batch,
        "train_time_sec": round(train_time, 3),
        "steps_per_sec": round(steps / train_time, 3),
        "train_cpu_sec": round(train_cpu, 3),
        "epochs": config.epochs,
        "workers": cluster.num_workers,
        "global_batch_size": plan.global_batch,
        "dataset": splits.name,
    }


def make_callbacks(
    config: TrainConfig,
    cluster: Cluster,
    plan: BatchPlan,
    status: StatusFile,
    monitor: SystemMonitor,
    dataset: str,
) -> list[keras.callbacks.Callback]:
    """Every worker logs its own progress (and backs up, if asked: all must, the chief's copy
    is kept); the chief also keeps Keras' TensorBoard logs and the run's hyperparameters."""
    progress = ClusterProgress(
        global_batch_size=plan.global_batch,
        log_every=config.log_every,
        status=status,
        monitor=monitor,
        events_dir=events_dir(config.run_dir, cluster.index),
        num_workers=plan.num_workers,
        after_fit="evaluating",  # what this worker does next; fit's own ending moves no step
    )
    backup = (
        [keras.callbacks.BackupAndRestore(backup_dir=str(config.run_dir / BACKUP_DIR))]
        if config.backup
        else []
    )
    if not cluster.is_chief:
        return [*backup, progress]
    tensorboard = GuardedTensorBoard(
        log_dir=str(config.run_dir / TENSORBOARD_DIR),
        update_freq="epoch",
        profile_batch=0,
        write_graph=False,
    )
    logged = HParamsLog(
        config.run_dir / TENSORBOARD_DIR, logged_hparams(config, cluster, plan, dataset)
    )
    return [*backup, progress, tensorboard, logged]


def logged_hparams(
    config: TrainConfig, cluster: Cluster, plan: BatchPlan, dataset: str
) -> dict[str, bool | int | float | str]:
    """What TensorBoard's HParams tab (and the dashboard) shows of this run: what shapes the
    training, by the name of its option (the dashboard's configuration columns), defaults
    and derived values included."""
    return {
        "epochs": config.epochs,
        "batch-size": config.batch_size,
        "steps-per-epoch": plan.steps_per_epoch,
        "learning-rate": config.learning_rate,
        "seed": config.seed,
        "dataset": dataset,
        "shard": config.shard,
        "workers": cluster.num_workers,
        "global-batch-size": plan.global_batch,
    }


class HParamsLog(keras.callbacks.Callback):  # type: ignore[misc,name-defined]
    """The run's hyperparameters for TensorBoard's HParams tab, written as TensorBoard's own
    `hp.KerasCallback` writes them (a session start when fit begins, its end when fit ends),
    here into the chief's tensorboard/, the session whose train/ and validation/ hold the
    Keras curves. Two records in a file of their own; a write that fails (a full disk) is
    skipped with one warning, never ending fit."""

    def __init__(self, log_dir: Path, hparams: Mapping[str, bool | int | float | str]) -> None:
        super().__init__()
        self.log_dir = log_dir
        self.hparams = dict(hparams)
        self.guard = BestEffort(f"hyperparameters in {TENSORBOARD_DIR}/")
        self._writer: Any = None

    def _write(self, summary: Any) -> None:
        try:
            if self._writer is None:
                self._writer = tf.summary.create_file_writer(str(self.log_dir))
            with summaries_into(self._writer):
                tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=0)
            self._writer.flush()
        except (tf.errors.OpError, OSError) as error:
            self.guard.failed(error, self.log_dir)
            return
        self.guard.succeeded()

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._write(hparams_pb(self.hparams))

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._write(session_end_pb(api_pb2.STATUS_SUCCESS))
        if self._writer is not None:
            with contextlib.suppress(tf.errors.OpError, OSError):
                self._writer.close()


class GuardedTensorBoard(keras.callbacks.TensorBoard):  # type: ignore[misc,name-defined]
    """Keras' TensorBoard callback, whose writes are monitoring: TensorFlow raises when a
    writer cannot flush to a full disk (ResourceExhaustedError), which would end fit. Here
    that skips the summaries with one warning, and TensorFlow's writer keeps what it could
    not write and writes it once there is room. A failed hook leaves the default summary
    writer as it found it (TensorFlow would leave Keras' failed one, soon closed). Needs
    update_freq="epoch" (no writer stack left half pushed)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.guard = BestEffort(f"Keras TensorBoard logs in {TENSORBOARD_DIR}/")

    def _guarded(self, hook: str, *args: Any, writes: bool = False) -> None:
        """Run one of Keras' hooks; a hook that `writes` proves the disk takes the summaries
        again (flushing them, which is when TensorFlow finds out) before that is said."""
        try:
            with default_writer_kept():
                getattr(super(), hook)(*args)
                if writes and self.guard.failing:
                    for writer in self._writers.values():
                        writer.flush()
        except (tf.errors.OpError, OSError) as error:
            self.guard.failed(error, self.log_dir)
            return
        if writes:
            self.guard.succeeded()

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._guarded("on_train_begin", logs)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._guarded("on_epoch_begin", epoch, logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._guarded("on_epoch_end", epoch, logs, writes=True)

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._guarded("on_test_begin", logs)  # creates the validation writer: a new file

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        self._guarded("on_test_end", logs, writes=True)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._guarded("on_train_end", logs)  # closes the writers: nothing left to prove


def save_model(model: keras.Model, run_dir: Path, is_chief: bool) -> None:
    """Every worker saves (the strategy expects it); only the chief's copy is kept, whole.
    A failure names its cause and the file: `no space left on device writing .../model.h5`."""
    try:
        _save_model(model, run_dir, is_chief)
    except Exception as error:
        line = failure_line(error, run_dir / MODEL_FILE, f"{type(error).__name__}: {error}")
        raise WorkError(line.splitlines()[0]) from error


def _save_model(model: keras.Model, run_dir: Path, is_chief: bool) -> None:
    if not is_chief:
        scratch = tempfile.mkdtemp(prefix="trainer-model-")
        try:
            _save_h5(model, Path(scratch) / MODEL_FILE)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return
    final = run_dir / MODEL_FILE
    partial = run_dir / ".model.partial.h5"
    try:
        _save_h5(model, partial)
        partial.replace(final)
    finally:
        partial.unlink(missing_ok=True)


def _save_h5(model: keras.Model, path: Path) -> None:
    """HDF5 on purpose (one file, loads in tf-keras and Keras 3): skip Keras' legacy warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*HDF5 file.*", category=UserWarning)
        model.save(str(path), save_format="h5")


def describe(
    config: TrainConfig, cluster: Cluster, splits: Splits, plan: BatchPlan, devices: list[str]
) -> str:
    """The one line a worker prints before training: who it is and what it will do."""
    return (
        f"trainer: worker {cluster.index} of {cluster.num_workers} ({cluster.role}) on "
        f"{', '.join(devices)}; {splits.name}: {len(splits.x_train)} train / "
        f"{len(splits.x_test)} test; global batch {plan.global_batch} = "
        f"{plan.per_worker_batch} x {plan.num_workers}; {plan.steps_per_epoch} steps x "
        f"{config.epochs} epochs; shard {config.shard}"
    )
