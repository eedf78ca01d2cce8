"""Write made-up run directories in the real format (docs/run-format.md), without TensorFlow.

Used by the tests and the benchmark, and by anyone who wants to look at the dashboard
before training anything::

    python -m dashboard.samplerun runs          # a finished 2-worker run under runs/

The event files are byte-for-byte what ``tf.summary.scalar`` writes (the reader tests check
that against TensorFlow's own output).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import secrets
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2

from dashboard.events import frame_record

PROGRESS_TAGS = (
    "progress/loss",
    "progress/accuracy",
    "progress/examples_per_sec",
    "progress/step_time_ms",
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
    return event_pb2.Event(wall_time=wall_time, file_version="brain.Event:2").SerializeToString()


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
        name = f"events.out.tfevents.{int(wall_time)}.{host}.{os.getpid()}.0.v2"
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


def new_run_id(when: float | None = None) -> str:
    """A sortable run id: YYYYmmdd-HHMMSS-xxxx."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(when or time.time()))
    return f"{stamp}-{secrets.token_hex(2)}"


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

    @property
    def steps_total(self) -> int:
        return self.epochs * self.steps_per_epoch


def _write_json(path: Path, payload: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(payload, indent=2))
    os.replace(temporary, path)


def _curve(step: int, index: int, rng: random.Random) -> tuple[float, float]:
    loss = 2.3 * math.exp(-step / 25.0) + 0.05 + 0.03 * index + rng.uniform(-0.04, 0.04)
    accuracy = min(0.999, 1.0 - 0.9 * math.exp(-step / 20.0) + rng.uniform(-0.02, 0.02))
    return loss, accuracy


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
    (run_dir / "workers").mkdir(parents=True, exist_ok=True)
    hosts = []
    for index in range(plan.workers):
        port = 23456 + index
        hosts.append(
            {
                "index": index,
                "role": "chief" if index == 0 else "worker",
                "name": f"host{index}",
                "ssh": f"host{index}:22",
                "local": False,
                "addr": f"host{index}",
                "tf_port": port,
                "workdir": "~/tfjobs",
                "python": "python3",
                "run_dir": str(run_dir),
            }
        )
    last_wall = started
    for index in range(plan.workers):
        steps = done[index]
        worker_dir = run_dir / "workers" / str(index)
        wall = started
        loss = accuracy = rate = None
        end = span - (plan.stall_seconds if active and index in plan.stalled else 0.0)
        step_length = end / steps if steps else plan.step_seconds
        with EventWriter.create(worker_dir / "events", started, host=f"host{index}") as writer:
            for step in range(steps):
                wall = started + (step + 1) * step_length - 0.01 * index
                loss, accuracy = _curve(step, index, rng)
                rate = 800.0 + rng.uniform(-40, 40) - 60 * index
                for tag, value in zip(
                    PROGRESS_TAGS, (loss, accuracy, rate, 1000.0 * 64 / rate), strict=True
                ):
                    writer.scalar(tag, value, step, wall, simple=plan.simple_values)
                if (step + 1) % plan.steps_per_epoch == 0:
                    epoch = (step + 1) // plan.steps_per_epoch
                    writer.scalar("epoch/loss", loss, epoch, wall)
                    writer.scalar("epoch/accuracy", accuracy, epoch, wall)
        last_wall = max(last_wall, wall)
        if index == plan.failed:
            worker_state = "failed"
        elif active:
            worker_state = "running"
        else:
            worker_state = plan.state if plan.state in ("finished", "failed") else "failed"
        _write_json(
            worker_dir / "status.json",
            {
                "index": index,
                "role": "chief" if index == 0 else "worker",
                "host": f"host{index}",
                "pid": 4000 + index,
                "state": worker_state,
                "epoch": steps // plan.steps_per_epoch,
                "epochs": plan.epochs,
                "step": steps,
                "steps_total": plan.steps_total,
                "loss": loss,
                "accuracy": accuracy,
                "examples_per_sec": rate,
                "started": started,
                "updated": wall,
                "error": "killed by SIGKILL" if index == plan.failed else None,
            },
        )
        lines = [f"worker {index} starting on host{index}"]
        lines += [f"step {s} loss {2.3 * math.exp(-s / 25):.4f}" for s in range(0, steps, 10)]
        (worker_dir / "worker.log").write_text("\n".join(lines) + "\n")
    finished = None if active else last_wall + 1.0
    if not active and plan.state == "finished":
        _write_chief_artifacts(run_dir, plan, started, rng, last_wall)
    failure = None
    if plan.failed is not None:
        failure = {
            "index": plan.failed,
            "host": f"host{plan.failed}",
            "reason": "killed by SIGKILL",
            "log_tail": ["Collective ops is aborted"],
        }
    _write_json(
        run_dir / "cluster.json",
        {
            "run_id": run_id,
            "created": created,
            "finished": finished,
            "state": plan.state,
            "hosts_file": "hosts.txt",
            "hosts": hosts,
            "tf_config_cluster": {"worker": [f"{h['addr']}:{h['tf_port']}" for h in hosts]},
            "trainer_args": ["--epochs", str(plan.epochs), "--dataset", plan.dataset],
            "dataset": plan.dataset,
            "epochs": plan.epochs,
            "exit_codes": {
                str(i): (None if active else (-9 if i == plan.failed else 0))
                for i in range(plan.workers)
            },
            "failure": failure,
            "restarts": 0,
        },
    )
    (run_dir / "launcher.log").write_text(f"[launcher] run {run_id} state {plan.state}\n")
    return run_dir


def _write_chief_artifacts(
    run_dir: Path, plan: RunPlan, started: float, rng: random.Random, last_wall: float
) -> None:
    for split, offset in (("train", 0.0), ("validation", 0.08)):
        with EventWriter.create(run_dir / "tensorboard" / split, started) as writer:
            for epoch in range(plan.epochs):
                step = (epoch + 1) * plan.steps_per_epoch
                loss, accuracy = _curve(step, 0, rng)
                wall = started + step * plan.step_seconds
                writer.scalar("epoch_loss", loss + offset, epoch, wall)
                writer.scalar("epoch_accuracy", accuracy - offset / 2, epoch, wall)
    model = plan.model_bytes if plan.model_bytes is not None else rng.randbytes(4096)
    (run_dir / "model.h5").write_bytes(model)
    _write_json(
        run_dir / "metrics.json",
        {
            "test_loss": 0.12,
            "test_accuracy": 0.967,
            "examples_seen": plan.steps_total * 64 * plan.workers,
            "wall_time_sec": round(last_wall - started, 1),
            "epochs": plan.epochs,
            "workers": plan.workers,
            "global_batch_size": 64 * plan.workers,
            "dataset": plan.dataset,
        },
    )


def append_progress(
    run_dir: str | os.PathLike[str],
    index: int,
    steps: Iterable[int],
    wall_time: float | None = None,
    step_seconds: float = 0.5,
) -> int:
    """Append progress points to a worker's newest event file and move its status on."""
    events_dir = Path(run_dir) / "workers" / str(index) / "events"
    files = sorted(events_dir.glob("*tfevents*"))
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
    status_path = Path(run_dir) / "workers" / str(index) / "status.json"
    if last is not None and status_path.exists():
        status = json.loads(status_path.read_text())
        status.update(step=last + 1, updated=wall - step_seconds)
        _write_json(status_path, status)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="?", default="runs", help="runs folder (default: runs)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--state", default="finished", choices=["finished", "running", "failed"])
    args = parser.parse_args(argv)
    path = write_run(args.runs, RunPlan(workers=args.workers, state=args.state))
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
