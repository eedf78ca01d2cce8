"""`python -m trainer`: check the input, train, and leave an honest status behind.

Options, TF_CONFIG and the data are checked before TensorFlow is imported, so a mistake
costs the user one line and a fraction of a second, and no worker is left waiting.
Exit codes: 0 trained and saved, 1 training failed, 2 bad input, 130/143 interrupted.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from runformat import (
    BACKUP_DIR,
    METRICS_JSON,
    MODEL_FILE,
    MetricsRecord,
    status_path,
    write_json_atomic,
)
from trainer.cluster import Cluster, parse_tf_config
from trainer.config import TrainConfig, parse_args
from trainer.data import load_data
from trainer.errors import InputError, WorkError
from trainer.guard import failure_line, protect_std_streams
from trainer.plan import plan_batches
from trainer.status import StatusFile, initial_status
from trainer.sysmetrics import SystemMonitor

EXIT_FAILED = 1
EXIT_INPUT = 2

_TENSORFLOW_PREAMBLE = ("Graph execution error", "Detected at node", 'File "')
_TENSORFLOW_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "TF_USE_LEGACY_KERAS": "1"}


class Stopped(Exception):
    """Raised in the main thread when the launcher asks this worker to stop."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.exit_code = 128 + signum


def main(argv: Sequence[str]) -> int:
    """Run one worker; returns the process exit code."""
    protect_std_streams()  # the worker's log may sit on a full disk: printing must not fail
    try:
        config = parse_args(argv)
        cluster = parse_tf_config(os.environ.get("TF_CONFIG"))
    except InputError as e:
        return _report_input_error(e)

    status = StatusFile(
        status_path(config.run_dir, cluster.index),
        initial_status(
            cluster.index,
            cluster.role,
            socket.gethostname(),
            os.getpid(),
            config.epochs,
            time.time(),
        ),
    )
    try:
        status.write_now()
    except OSError as e:
        return _report_input_error(
            InputError(f"--run-dir {config.run_dir}: cannot write {status.path} ({e.strerror})")
        )
    signal.signal(signal.SIGTERM, _raise_stopped)
    with SystemMonitor(status, config.system_every) as monitor:
        code, final = _run(config, cluster, status, monitor)
    status.enter("ended", exit_code=code, **final)
    return code


def _run(
    config: TrainConfig, cluster: Cluster, status: StatusFile, monitor: SystemMonitor
) -> tuple[int, dict[str, str]]:
    """Load, train, save; returns the exit code and the state (and error) to record."""
    try:
        status.enter("loading_data")
        splits = load_data(config)
        plan = plan_batches(
            len(splits.x_train), config.batch_size, cluster.num_workers, config.steps_per_epoch
        )
        for name, value in _TENSORFLOW_ENV.items():
            os.environ.setdefault(name, value)
        # Imported here: TensorFlow takes seconds to load, and the checks above must not wait.
        from trainer.train import train

        metrics = train(config, cluster, splits, plan, status, monitor)
        if cluster.is_chief:
            metrics["wall_time_sec"] = round(time.time() - status.fields["started"], 3)
            write_metrics(config.run_dir / METRICS_JSON, MetricsRecord(**metrics))
            print(
                f"trainer: test accuracy {metrics['test_accuracy']:.4f}, model saved to "
                f"{config.run_dir / MODEL_FILE}",
                flush=True,
            )
    except InputError as e:
        return _report_input_error(e), {"state": "failed", "error": str(e)}
    except (Stopped, KeyboardInterrupt) as e:
        stop = e if isinstance(e, Stopped) else Stopped(signal.SIGINT)
        print(f"trainer: worker {cluster.index} {stop}", file=sys.stderr, flush=True)
        return stop.exit_code, {"state": "failed", "error": str(stop)}
    except WorkError as e:
        print(f"trainer: worker {cluster.index} failed: {e}", file=sys.stderr, flush=True)
        return EXIT_FAILED, {"state": "failed", "error": str(e)}
    except Exception as e:
        line = failure_line(e, _backup_named(e, config), one_line(e))
        traceback.print_exc()
        print(f"trainer: worker {cluster.index} failed: {line}", file=sys.stderr, flush=True)
        return EXIT_FAILED, {"state": "failed", "error": line}
    return 0, {"state": "finished"}


def write_metrics(path: Path, metrics: MetricsRecord) -> None:
    """metrics.json, the chief's work: a failure ends the job, naming the cause and the file."""
    try:
        write_json_atomic(path, metrics.to_dict())
    except OSError as e:
        raise WorkError(failure_line(e, path, f"cannot write {path}: {e.strerror}")) from e


def _backup_named(error: BaseException, config: TrainConfig) -> Path | None:
    """The backup folder, when a failure happened writing it (TensorFlow names the path)."""
    backup = config.run_dir / BACKUP_DIR
    return backup if config.backup and str(backup) in str(error) else None


def one_line(error: BaseException) -> str:
    """The error's type and its first telling line (TensorFlow's start with a stack dump)."""
    lines = [line.strip() for line in str(error).splitlines()]
    telling = [line for line in lines if line and not line.startswith(_TENSORFLOW_PREAMBLE)]
    return f"{type(error).__name__}: {telling[0]}" if telling else type(error).__name__


def _report_input_error(error: InputError) -> int:
    print(f"trainer: error: {error}", file=sys.stderr, flush=True)
    return EXIT_INPUT


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signum)
