"""Write made-up run directories in the real format (docs/run-format.md), without TensorFlow.

Used by the tests and the benchmark, and by anyone who wants to look at the dashboard
before training anything::

    python -m dashboard.samplerun runs          # a finished 2-worker run under runs/

The event files are byte-for-byte what ``tf.summary.scalar`` writes (the reader tests check
that against TensorFlow's own output).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import math
import os
import random
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2
from tensorboard.plugins.histogram import metadata as histogram_metadata
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.text import metadata as text_metadata
from tensorboard.util import tensor_util

from dashboard.tfrecord import frame_record
from runformat import (
    CLUSTER_JSON,
    EPOCH_ACCURACY,
    EPOCH_LOSS,
    EVENT_FILE_PREFIX,
    EVENT_FILE_VERSION,
    KERAS_EPOCH_ACCURACY,
    KERAS_EPOCH_LOSS,
    LAUNCHER_LOG,
    METRICS_JSON,
    MODEL_FILE,
    PROGRESS_TAGS,
    SYSTEM_CPU_WAIT_PERCENT,
    SYSTEM_TAGS,
    TENSORBOARD_SPLITS,
    Attempt,
    ClusterRecord,
    Failure,
    HostEntry,
    MetricsRecord,
    StatusRecord,
    SystemSample,
    event_file_name,
    events_dir,
    load_status,
    new_run_id,
    status_path,
    tensorboard_rel,
    worker_log_path,
    write_bytes_atomic,
    write_json_atomic,
)


def scalar_event(
    tag: str, value: float, step: int, wall_time: float, simple: bool = False
) -> bytes:
    """One serialized Event holding one scalar: a TF2 float tensor, or an old simple_value."""
    if simple:
        summary_value = summary_pb2.Summary.Value(tag=tag, simple_value=value)
    else:
        tensor = tensor_pb2.TensorProto(dtype=1)
        tensor.tensor_shape.SetInParent()
        tensor.tensor_content = _float32(value)
        summary_value = summary_pb2.Summary.Value(tag=tag, tensor=tensor)
        summary_value.metadata.plugin_data.plugin_name = "scalars"
    event = event_pb2.Event(wall_time=wall_time, step=step)
    event.summary.value.append(summary_value)
    return event.SerializeToString()


def _float32(value: float) -> bytes:
    return struct.pack("<f", value)


def version_event(wall_time: float) -> bytes:
    return event_pb2.Event(wall_time=wall_time, file_version=EVENT_FILE_VERSION).SerializeToString()


class EventWriter:
    """Appends scalar events to one event file, as a TF2 summary writer does."""

    def __init__(self, path: str | os.PathLike[str], wall_time: float | None = None) -> None:
        self.path = Path(path)
        fresh = not self.path.exists()
        self._handle = open(self.path, "ab")  # noqa: SIM115 - closed by close()/__exit__
        if fresh:
            self._handle.write(frame_record(version_event(wall_time or time.time())))

    @classmethod
    def create(
        cls, directory: str | os.PathLike[str], wall_time: float, host: str = "sample"
    ) -> EventWriter:
        """A new file named like TensorFlow names them (time, host, pid)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        name = event_file_name(wall_time, host, os.getpid(), "0.v2")
        return cls(directory / name, wall_time)

    def scalar(
        self, tag: str, value: float, step: int, wall_time: float, simple: bool = False
    ) -> None:
        self._handle.write(frame_record(scalar_event(tag, value, step, wall_time, simple)))

    def raw(self, data: bytes) -> None:
        self._handle.write(data)

    def flush(self) -> None:
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


EpochWriter = Callable[[EventWriter, int, int, float], None]

# What a failed run's other workers say when the cause dies (TensorFlow's own words).
ABORTED_ERROR = (
    "UnavailableError: Collective ops is aborted by: task /job:worker/replica:0/task:{cause} "
    "failed to respond (the worker died or its host is unreachable)"
)
# TensorFlow's start-up lines, as every worker's log begins (the log viewer hides them).
TF_STARTUP = (
    "2026-12-07 10:00:00.101218: I tensorflow/core/util/port.cc:153] oneDNN custom operations "
    "are on. You may see slightly different numerical results due to floating-point round-off "
    "errors from different computation orders.",
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "E0000 00:00:1733565600.412345    4000 cuda_executor.cc:1228] failed call to cuInit: "
    "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
)


def _value(tag: str, tensor: object, metadata: summary_pb2.SummaryMetadata) -> object:
    value = summary_pb2.Summary.Value(tag=tag, tensor=tensor_util.make_tensor_proto(tensor))
    value.metadata.CopyFrom(metadata)
    return value


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image  # Streamlit's own dependency; only the preview draws pictures

    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def sample_media(writer: EventWriter, worker: int, epoch: int, wall: float) -> None:
    """What a TensorBoard user logs besides scalars, as TensorFlow writes it: every worker a
    weight histogram that narrows as it trains; the chief an image that sharpens and, once,
    its configuration as text."""
    rng = np.random.default_rng(worker * 1000 + epoch)
    weights = rng.normal(0.0, 1.0 / epoch, 2000)
    counts, edges = np.histogram(weights, bins=30)
    buckets = np.stack([edges[:-1], edges[1:], counts]).T.astype(np.float64)
    values = [_value("weights/dense", buckets, histogram_metadata.create_summary_metadata("", ""))]
    if worker == 0:
        grid = np.indices((28, 28)).sum(axis=0) % 8 < 4
        noise = rng.random((28, 28)) / epoch
        pixels = (np.clip(grid * 0.8 + noise, 0, 1) * 255).astype(np.uint8)
        big = np.kron(pixels, np.ones((4, 4), np.uint8))
        picture = [str(big.shape[1]).encode(), str(big.shape[0]).encode(), _png(big)]
        values.append(
            _value("samples/inputs", picture, image_metadata.create_summary_metadata("", ""))
        )
        if epoch == 1:
            note = "| option | value |\n|---|---|\n| dataset | digits |\n| epochs | 3 |"
            values.append(
                _value("config", [note.encode()], text_metadata.create_summary_metadata("", ""))
            )
    event = event_pb2.Event(wall_time=wall, step=epoch, summary=summary_pb2.Summary(value=values))
    writer.raw(frame_record(event.SerializeToString()))


@dataclass
class RunPlan:
    """The shape of a made-up run. Steps are global steps; one progress point per step."""

    workers: int = 2
    state: str = "finished"
    epochs: int = 3
    steps_per_epoch: int = 20
    step_seconds: float = 0.5
    # Running runs: how many steps each worker has logged (missing -> all of the run so far).
    steps_done: dict[int, int] = field(default_factory=dict)
    stalled: tuple[int, ...] = ()
    stall_seconds: float = 300.0
    failed: int | None = None
    dataset: str = "digits"
    seed: int = 0
    model_bytes: bytes | None = None
    simple_values: bool = False
    # System tags (and status.json's `system`) every this many steps, as the trainer samples
    # every few seconds; 0: none, which keeps the pages the tests draw small.
    system_every: int = 0
    # More events each worker writes at each epoch's end: writer(events, worker, epoch, wall).
    per_epoch: EpochWriter | None = None

    @property
    def steps_total(self) -> int:
        return self.epochs * self.steps_per_epoch


def _curve(step: int, index: int, rng: random.Random) -> tuple[float, float]:
    loss = 2.3 * math.exp(-step / 25.0) + 0.05 + 0.03 * index + rng.uniform(-0.04, 0.04)
    accuracy = min(0.999, 1.0 - 0.9 * math.exp(-step / 20.0) + rng.uniform(-0.02, 0.02))
    return loss, accuracy


def _system(step: int, index: int, workers: int, rng: random.Random) -> tuple[float, ...]:
    """A made-up system sample, in the order of SYSTEM_TAGS and then the CPU wait: the
    process busy on about one core (later workers a little less), the host not saturated."""
    cpu = 110.0 * (1.0 - 0.3 * index / workers) + rng.uniform(-10, 10)
    host = 70.0 + rng.uniform(-5, 5)
    return (cpu, 900.0 + step * 0.1, host, 40.0, 0.8, 0.8, rng.uniform(0.0, 4.0))


def _sample(values: tuple[float, ...], wall: float) -> SystemSample:
    """status.json's `system` for the values of SYSTEM_TAGS (no GPU on the sample hosts)."""
    cpu, memory, host_cpu, host_memory, sent, received, waited = values
    return SystemSample(
        time=wall,
        cpu_percent=cpu,
        memory_mb=memory,
        host_cpu_percent=host_cpu,
        host_memory_percent=host_memory,
        net_sent_mbps=sent,
        net_recv_mbps=received,
        cpu_wait_percent=waited,
    )


def write_run(
    root: str | os.PathLike[str],
    plan: RunPlan | None = None,
    run_id: str | None = None,
    now: float | None = None,
) -> Path:
    """Write runs/<run-id>/ for the plan and return its path."""
    plan = plan or RunPlan()
    now = time.time() if now is None else now
    rng = random.Random(plan.seed)
    active = plan.state in ("starting", "running")
    done = {index: plan.steps_done.get(index, plan.steps_total) for index in range(plan.workers)}
    longest = max(done.values(), default=0)
    # Every worker's points spread evenly up to `span` seconds after the start; a stalled
    # worker's stop `stall_seconds` earlier, and nothing has come from it since.
    span = longest * plan.step_seconds
    if active and plan.stalled:
        span = max(span, plan.stall_seconds + 30.0)
    started = now - span - (1.0 if active else 5.0)
    created = started - 2.0
    run_id = run_id or new_run_id(created)
    run_dir = Path(root) / run_id
    hosts = tuple(
        HostEntry(
            index=index,
            role="chief" if index == 0 else "worker",
            name=f"host{index}",
            ssh=f"host{index}:22",
            addr=f"host{index}",
            tf_port=23456 + index,
            workdir="~/tfjobs",
            python="python3",
            run_dir=f"~/tfjobs/runs/{run_id}",
            line=f"host{index} tf_port={23456 + index}",
        )
        for index in range(plan.workers)
    )
    last_wall = started
    for index in range(plan.workers):
        steps = done[index]
        wall = started
        loss = accuracy = rate = None
        system = None
        sampled = started
        end = span - (plan.stall_seconds if active and index in plan.stalled else 0.0)
        step_length = end / steps if steps else plan.step_seconds
        events = events_dir(run_dir, index)
        with EventWriter.create(events, started, host=f"host{index}") as writer:
            for step in range(steps):
                wall = started + (step + 1) * step_length - 0.01 * index
                loss, accuracy = _curve(step, index, rng)
                # Later workers a little slower, every one well above zero at any size.
                rate = 800.0 * (1.0 - 0.5 * index / len(hosts)) + rng.uniform(-40, 40)
                for tag, value in zip(
                    PROGRESS_TAGS, (loss, accuracy, rate, 1000.0 * 64 / rate), strict=True
                ):
                    writer.scalar(tag, value, step, wall, simple=plan.simple_values)
                if plan.system_every and step % plan.system_every == 0:
                    system, sampled = _system(step, index, plan.workers, rng), wall
                    tags = (*SYSTEM_TAGS, SYSTEM_CPU_WAIT_PERCENT)
                    for tag, value in zip(tags, system, strict=True):
                        writer.scalar(tag, value, step, wall)
                if (step + 1) % plan.steps_per_epoch == 0:
                    epoch = (step + 1) // plan.steps_per_epoch
                    writer.scalar(EPOCH_LOSS, loss, epoch, wall)
                    writer.scalar(EPOCH_ACCURACY, accuracy, epoch, wall)
                    if plan.per_epoch is not None:
                        plan.per_epoch(writer, index, epoch, wall)
        last_wall = max(last_wall, wall)
        if index == plan.failed:
            worker_state = "failed"
        elif active:
            worker_state = "running"
        else:
            worker_state = plan.state if plan.state in ("finished", "failed") else "failed"
        status = StatusRecord(
            index=index,
            role=hosts[index].role,
            host=hosts[index].name,
            pid=4000 + index,
            state=worker_state,
            phase="training" if worker_state == "running" else "ended",
            phase_since=started if worker_state == "running" else wall,
            epoch=steps // plan.steps_per_epoch,
            epochs=plan.epochs,
            step=steps,
            steps_total=plan.steps_total,
            loss=loss,
            accuracy=accuracy,
            examples_per_sec=rate,
            started=started,
            updated=wall,
            error=_error(plan, index),
            system=_sample(system, sampled) if system else None,
        )
        write_json_atomic(status_path(run_dir, index), status.to_dict())
        lines = [*TF_STARTUP, f"worker {index} starting on host{index}"]
        lines += [f"step {s} loss {2.3 * math.exp(-s / 25):.4f}" for s in range(0, steps, 10)]
        if worker_state == "failed" and index != plan.failed:
            lines.append(f"tensorflow.python.framework.errors_impl.{_error(plan, index)}")
        worker_log_path(run_dir, index).write_text("\n".join(lines) + "\n")
    finished = None if active else last_wall + 1.0
    if not active and plan.state == "finished":
        _write_chief_artifacts(run_dir, plan, started, rng, last_wall)
    failure = None
    if plan.failed is not None:
        failure = Failure(
            index=plan.failed,
            host=f"host{plan.failed}",
            reason="killed by SIGKILL",
            log_tail=("Collective ops is aborted",),
        )
    cluster = ClusterRecord(
        run_id=run_id,
        created=created,
        finished=finished,
        state=plan.state,
        hosts_file="hosts.txt",
        hosts=hosts,
        tf_config_cluster={"worker": [h.address for h in hosts]},
        trainer_args=("--epochs", str(plan.epochs), "--dataset", plan.dataset),
        dataset=plan.dataset,
        epochs=plan.epochs,
        exit_codes={i: (None if active else _exit_code(plan, i)) for i in range(plan.workers)},
        failure=failure,
        attempts=(Attempt(1, started=created + 0.5, ended=finished, failure=failure),),
        launcher={"host": "sample", "pid": 4100},
    )
    write_json_atomic(run_dir / CLUSTER_JSON, cluster.to_dict())
    (run_dir / LAUNCHER_LOG).write_text(f"[launcher] run {run_id} state {plan.state}\n")
    return run_dir


def _error(plan: RunPlan, index: int) -> str | None:
    """A worker's status.json error: the cause was killed, the others aborted after it."""
    if plan.failed is None or (plan.state != "failed" and index != plan.failed):
        return None
    return "killed by SIGKILL" if index == plan.failed else ABORTED_ERROR.format(cause=plan.failed)


def _exit_code(plan: RunPlan, index: int) -> int:
    if index == plan.failed:
        return -9
    return 1 if plan.state == "failed" else 0


def _write_chief_artifacts(
    run_dir: Path, plan: RunPlan, started: float, rng: random.Random, last_wall: float
) -> None:
    for split, offset in zip(TENSORBOARD_SPLITS, (0.0, 0.08), strict=True):
        with EventWriter.create(run_dir / tensorboard_rel(split), started) as writer:
            for epoch in range(plan.epochs):
                step = (epoch + 1) * plan.steps_per_epoch
                loss, accuracy = _curve(step, 0, rng)
                wall = started + step * plan.step_seconds
                writer.scalar(KERAS_EPOCH_LOSS, loss + offset, epoch, wall)
                writer.scalar(KERAS_EPOCH_ACCURACY, accuracy - offset / 2, epoch, wall)
    model = plan.model_bytes if plan.model_bytes is not None else rng.randbytes(4096)
    write_bytes_atomic(run_dir / MODEL_FILE, model)
    train_time = round(last_wall - started, 1)
    metrics = MetricsRecord(
        test_loss=0.12,
        test_accuracy=0.967,
        examples_seen=plan.steps_total * 64 * plan.workers,
        wall_time_sec=round(train_time + 4.0, 1),
        train_time_sec=train_time,
        steps_per_sec=round(plan.steps_total / train_time, 3) if train_time > 0 else None,
        train_cpu_sec=round(train_time * 1.6, 1),
        epochs=plan.epochs,
        workers=plan.workers,
        global_batch_size=64 * plan.workers,
        dataset=plan.dataset,
    )
    write_json_atomic(run_dir / METRICS_JSON, metrics.to_dict())


def append_progress(
    run_dir: str | os.PathLike[str],
    index: int,
    steps: Iterable[int],
    wall_time: float | None = None,
    step_seconds: float = 0.5,
) -> int:
    """Append progress points to a worker's newest event file and move its status on."""
    files = sorted(events_dir(Path(run_dir), index).glob(f"{EVENT_FILE_PREFIX}*"))
    wall = time.time() if wall_time is None else wall_time
    rng = random.Random(index)
    written = 0
    last = None
    with EventWriter(files[-1]) as writer:
        for step in steps:
            loss, accuracy = _curve(step, index, rng)
            rate = 800.0
            for tag, value in zip(PROGRESS_TAGS, (loss, accuracy, rate, 80.0), strict=True):
                writer.scalar(tag, value, step, wall)
                written += 1
            last = step
            wall += step_seconds
    path = status_path(Path(run_dir), index)
    status, _ = load_status(path, index)
    if last is not None and status is not None:
        moved = dataclasses.replace(status, step=last + 1, updated=wall - step_seconds)
        write_json_atomic(path, moved.to_dict())
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="?", default="runs", help="runs folder (default: runs)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--state", default="finished", choices=["finished", "running", "failed"])
    args = parser.parse_args(argv)
    plan = RunPlan(workers=args.workers, state=args.state, system_every=10, per_epoch=sample_media)
    if args.state == "failed":
        # Killed a little after half way: one cause, the others aborted after it.
        plan.failed = min(1, args.workers - 1)
        plan.steps_done = {i: plan.steps_total * 3 // 5 for i in range(args.workers)}
    path = write_run(args.runs, plan)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
