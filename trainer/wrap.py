"""`python -m trainer.wrap --run-dir RUN_DIR [--cwd DIR] SCRIPT [ARGS...]`: run a user's own
program as one worker, watched like the built-in trainer, without changing a line of it.

The launcher starts it in the shipped code's folder (the one holding trainer/ and runformat/),
so that a `trainer.py` in the user's folder cannot shadow the wrapper's own packages, and
names the program's folder with `--cwd` (default: the working directory). It reads TF_CONFIG
like the trainer (unset: one worker) and:

- starts `python SCRIPT ARGS` (this same interpreter) as its child, inside `--cwd`, in the
  same process group, with the shipped code appended to PYTHONPATH (so that the program can
  import trainer.callback's ClusterProgress), TF_CONFIG as given, the variables of
  runformat.workerenv (TFCLUSTER_RUN_DIR, TFCLUSTER_WORKER_DIR, TFCLUSTER_BACKUP_DIR,
  TFCLUSTER_ARTIFACTS_DIR, TFCLUSTER_WORKER_INDEX, TFCLUSTER_NUM_WORKERS) and
  TF_USE_LEGACY_KERAS=1 unless the user set it;
- copies the child's stdout and stderr to its own (the worker's log) byte for byte, keeping
  the last stderr lines;
- writes workers/<index>/status.json: `starting`, then `running` (phase `running` until a
  ClusterProgress callback in the program says more), then `finished` (exit 0) or `failed`
  with phase `ended`, `exit_code` (negative: killed by that signal), and on failure `error`
  (the last stderr line) and `log_tail`; a heartbeat with a `system` sample every few seconds;
- reads the progress Keras prints on the program's stdout (trainer.kerasprogress) and keeps
  epoch, epochs, step, steps_total, loss and accuracy of status.json current from it, at most
  once a second, while the phase stays `running`; once a ClusterProgress callback in the
  program has written those fields, they are the callback's alone;
- writes `system/*` tags of the program's whole process tree and its host into
  workers/<index>/events/ (its own event file, step: seconds since the program started);
- forwards SIGTERM and SIGINT to the program and exits with the program's exit code
  (128+N when a signal N ended it); 2 with one line for bad input (no such script, a bad
  TF_CONFIG or run folder), before the program starts.

Every monitoring write survives a full disk (trainer.guard). It never imports TensorFlow, so
it starts in a fraction of a second. Under Slurm, `python -m trainer.slurm_env --wrap ...`
builds TF_CONFIG from the step and becomes this wrapper.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any, NoReturn

from runformat import (
    TF_CONFIG_ENV,
    events_dir,
    status_path,
    with_worker_environment,
)
from trainer.cluster import Cluster, parse_tf_config
from trainer.errors import InputError
from trainer.guard import SafeStream, protect_std_streams
from trainer.kerasprogress import KerasProgress, ProgressReader
from trainer.status import StatusFile, initial_status

if TYPE_CHECKING:
    from trainer.sysmetrics import Sample

EXIT_INPUT = 2
SAMPLE_SECONDS = 5.0
# The first system sample comes this soon (a CPU figure needs an interval): a program that
# ends within seconds still has its system tags.
FIRST_SAMPLE_SECONDS = 1.0
"""Seconds between system samples (trainer.sysmetrics.SAMPLE_SECONDS, not imported here: the
program starts before psutil and the event protos load)."""
TAIL_LINES = 20
"""stderr lines kept for status.json `log_tail` (the last one is `error`)."""
MAX_LINE = 1000
"""Characters kept of one stderr line (a progress bar without newlines stays bounded)."""
FORWARDED = (signal.SIGTERM, signal.SIGINT)
PIPE_DRAIN_SECONDS = 5.0
"""How long the wrapper reads a program's output after it exited (its last words)."""
PROGRESS_SECONDS = 1.0
"""Seconds between status.json writes of the progress Keras printed (only when it moved)."""
CALLBACK_FIELDS = ("epoch", "epochs", "step", "steps_total", "loss", "accuracy", "examples_per_sec")
"""The running fields ClusterProgress writes; the wrapper writes all but examples/s from what
Keras printed, as long as the file still holds its own values of them."""


@dataclass(frozen=True)
class WrapConfig:
    run_dir: Path
    script: str
    args: tuple[str, ...]
    system_every: float = SAMPLE_SECONDS
    cwd: Path | None = None  # None: the working directory


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise InputError(message)


def parse_args(argv: Sequence[str]) -> WrapConfig:
    """The wrapper's own options come before SCRIPT; everything after it is the program's."""
    p = _Parser(
        prog="python -m trainer.wrap",
        allow_abbrev=False,
        description="Run a user's program as one tfcluster worker: status.json, system "
        "metrics and the worker's environment. Reads TF_CONFIG.",
    )
    p.add_argument("--run-dir", required=True, type=Path, help="the run's folder on this host")
    p.add_argument(
        "--system-every",
        type=float,
        default=SAMPLE_SECONDS,
        help="seconds between system samples (default %(default)s)",
    )
    p.add_argument(
        "--cwd", type=Path, default=None, help="the folder the program runs in (default: here)"
    )
    p.add_argument("script", help="the program, relative to its folder (--cwd)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="the program's arguments")
    ns = p.parse_args(list(argv))
    if not 0 < ns.system_every < float("inf"):
        raise InputError(f"--system-every: expected seconds above 0, got {ns.system_every}")
    cwd = ns.cwd.expanduser().absolute() if ns.cwd is not None else None
    return WrapConfig(
        ns.run_dir.expanduser().absolute(), ns.script, tuple(ns.args), ns.system_every, cwd
    )


CODE_ROOT = Path(__file__).resolve().parent.parent
"""The folder holding trainer/ and runformat/ (the shipped code), for the program's PYTHONPATH."""


def check_script(script: str, cwd: Path) -> None:
    if not cwd.is_dir():
        raise InputError(f"--cwd {cwd}: no such folder")
    path = cwd / script
    if not path.is_file():
        raise InputError(f"{script}: no such file in {cwd}")


class Tail:
    """The last lines of a byte stream, for `error` and `log_tail`."""

    def __init__(self, lines: int = TAIL_LINES) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=lines)
        self.partial = b""

    def feed(self, data: bytes) -> None:
        *complete, self.partial = (self.partial + data).split(b"\n")
        for line in complete:
            self._add(line)
        if len(self.partial) > 4 * MAX_LINE:
            self.partial = self.partial[-MAX_LINE:]

    def close(self) -> None:
        if self.partial:
            self._add(self.partial)
            self.partial = b""

    def _add(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip("\r")
        text = text.rsplit("\r", 1)[-1]  # a progress bar's last state
        if text.strip():
            self.lines.append(text[:MAX_LINE])

    @property
    def last(self) -> str | None:
        return self.lines[-1] if self.lines else None


class KerasStatus:
    """The progress Keras prints on the program's stdout, into status.json: the fields of a
    program without ClusterProgress. Written at most every PROGRESS_SECONDS and only when
    they moved, in phase `running` only; never again once the callback has written them (it
    knows more: examples/s, phases)."""

    def __init__(self, status: StatusFile, clock: Callable[[], float] = time.monotonic) -> None:
        self.status = status
        self.clock = clock
        self.reader = ProgressReader()
        self.lock = threading.Lock()
        self.written: dict[str, Any] = {}
        self.yielded = False  # the callback writes these fields: hands off
        self.broken = False

    def feed(self, data: bytes) -> None:
        if self.yielded or self.broken:
            return
        with self.lock:
            try:
                self.reader.feed(data, self.clock())
            except Exception as error:  # a bug here must never stop the program's output
                self.broken = True
                with contextlib.suppress(OSError, ValueError):
                    print(f"trainer.wrap: reading Keras' progress stopped: {error!r}",
                          file=sys.stderr, flush=True)  # fmt: skip

    def report(self, ended: bool = False) -> None:
        """Write the latest progress if it moved; `ended`: the output is complete."""
        if self.yielded or self.broken:
            return
        with self.lock:
            progress = self.reader.latest(None if ended else self.clock())
        if progress is None:
            return
        fields = status_fields(progress)
        if fields == self.written:
            return
        written = self.status.set_if(self._may_write, **fields)
        if written:
            self.written = fields
        elif written is False and not self._ours(self.status.fields):
            self.yielded = True  # else a phase of the callback's (saving): try again later

    def _may_write(self, current: Mapping[str, Any]) -> bool:
        return current.get("phase") in ("starting", "running") and self._ours(current)

    def _ours(self, current: Mapping[str, Any]) -> bool:
        """The file's running fields are still those the wrapper wrote (or none)."""
        return all(current.get(name) == self.written.get(name) for name in CALLBACK_FIELDS)


def status_fields(progress: KerasProgress) -> dict[str, Any]:
    """status.json's running fields from what Keras printed (a NaN loss is left unsaid: JSON
    has no NaN)."""
    return {
        "epoch": progress.epoch,
        "epochs": progress.epochs,
        "step": progress.step,
        "steps_total": progress.steps_total,
        "loss": _finite(progress.loss),
        "accuracy": _finite(progress.accuracy),
    }


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def pump(
    source: IO[bytes], sink: SafeStream, tail: Tail | None, keras: KerasStatus | None = None
) -> None:
    """Copy a child's pipe to our stream as it comes, until the child closes it; what was
    copied is then read (the last stderr lines, Keras' progress)."""
    fd = source.fileno()
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        sink.write_bytes(data)
        if tail is not None:
            tail.feed(data)
        if keras is not None:
            keras.feed(data)
    if tail is not None:
        tail.close()


def report_progress(keras: KerasStatus, stop: threading.Event) -> None:
    while not stop.wait(PROGRESS_SECONDS):
        keras.report()


def exit_code_of(returncode: int) -> int:
    """The wrapper's own exit code: the program's, or 128+N when signal N ended it."""
    return 128 - returncode if returncode < 0 else returncode


def ending(returncode: int, tail: Tail) -> dict[str, object]:
    """The fields of status.json once the program ended (docs/run-format.md)."""
    if returncode == 0:
        return {"state": "finished", "exit_code": 0, "error": None}
    if returncode < 0:
        error = f"killed by {_signal_name(-returncode)}" + (f": {tail.last}" if tail.last else "")
    else:
        error = tail.last or f"exited with code {returncode}"
    return {
        "state": "failed",
        "exit_code": returncode,
        "error": error,
        "log_tail": list(tail.lines),
    }


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def main(argv: Sequence[str]) -> int:
    protect_std_streams()
    try:
        config = parse_args(argv)
        cluster = parse_tf_config(os.environ.get(TF_CONFIG_ENV))
        check_script(config.script, config.cwd or Path.cwd())
    except InputError as e:
        print(f"trainer.wrap: error: {e}", file=sys.stderr, flush=True)
        return EXIT_INPUT
    status = StatusFile(
        status_path(config.run_dir, cluster.index),
        initial_status(
            cluster.index, cluster.role, socket.gethostname(), os.getpid(), None, time.time()
        ),
        shared=True,
    )
    try:
        status.write_now()
    except OSError as e:
        print(
            f"trainer.wrap: error: --run-dir {config.run_dir}: cannot write {status.path} "
            f"({e.strerror})",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_INPUT
    return run(config, cluster, status)


def run(config: WrapConfig, cluster: Cluster, status: StatusFile) -> int:
    """Start the program, watch it until it ends, record how it ended."""
    env = with_worker_environment(
        os.environ, str(config.run_dir), cluster.index, cluster.num_workers
    )
    # After the user's own entries: the program's folder (sys.path[0]) and PYTHONPATH win.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(CODE_ROOT)) if p)
    child = subprocess.Popen(
        [sys.executable, config.script, *config.args],
        cwd=config.cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    forward = _forwarder(child)
    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED}
    started = time.monotonic()
    running = {"state": "running", "phase": "running", "phase_since": time.time()}
    if not status.set_if({"phase": "starting"}, pid=child.pid, **running):
        status.update(pid=child.pid)
    stderr_tail = Tail()
    keras = KerasStatus(status)
    out, err = _streams()
    pumps = [
        threading.Thread(target=pump, args=(child.stdout, out, None, keras), daemon=True),
        threading.Thread(target=pump, args=(child.stderr, err, stderr_tail), daemon=True),
    ]
    for thread in pumps:
        thread.start()
    stop_reporting = threading.Event()
    reporter = threading.Thread(target=report_progress, args=(keras, stop_reporting), daemon=True)
    reporter.start()
    # Imported once the program runs: they cost a few hundred ms it need not wait for.
    import psutil

    from trainer.eventfile import ScalarFile
    from trainer.sysmetrics import SystemMonitor, SystemSampler

    events = ScalarFile(events_dir(config.run_dir, cluster.index))

    def write_sample(sample: Sample) -> None:
        events.write(int(time.monotonic() - started), sample.scalars(), sample.time)

    try:
        monitor: contextlib.AbstractContextManager[object] = SystemMonitor(
            status,
            config.system_every,
            SystemSampler(pid=child.pid, tree=True),
            config.system_every,
            on_sample=write_sample,
            first=min(FIRST_SAMPLE_SECONDS, config.system_every),
        )
    except psutil.Error:  # the program has ended already: nothing to measure
        monitor = contextlib.nullcontext()
    with monitor:
        returncode = child.wait()
        # A process the program left behind may hold its pipes open: don't wait for it.
        drained_by = time.monotonic() + PIPE_DRAIN_SECONDS
        for thread in pumps:
            thread.join(timeout=max(drained_by - time.monotonic(), 0.0))
    stop_reporting.set()
    reporter.join()
    keras.report(ended=True)  # the last epoch's line, before the ending
    for signum, handler in previous.items():
        signal.signal(signum, handler)
    status.enter("ended", **ending(returncode, stderr_tail))
    for stream in (out, err):
        stream.flush()
    return exit_code_of(returncode)


def _streams() -> tuple[SafeStream, SafeStream]:
    out, err = sys.stdout, sys.stderr
    if isinstance(out, SafeStream) and isinstance(err, SafeStream):
        return out, err
    return SafeStream(1), SafeStream(2)


def _forwarder(child: subprocess.Popen[bytes]) -> Callable[[int, FrameType | None], None]:
    def forward(signum: int, frame: FrameType | None) -> None:
        # The launcher's stop signals the whole process group, so the program may get the
        # signal twice; a terminal's Ctrl-C too. Python programs fold the two into one.
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    return forward


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
