"""One training job across all hosts: start every worker at once, watch, end it as a whole.

The first worker that exits non-zero, dies, loses contact or misses the start deadline stops
the job: every other worker's process group gets TERM, a grace period, then KILL; logs are
mirrored one last time and cluster.json records the failure. Ctrl-C ends it the same way.
With restarts left, a failed job is started again as a whole on the same run directory, and
the trainer's --backup resumes it from its last completed epoch.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from types import FrameType
from typing import Any

from launcher import commands
from launcher.display import LogTail, Output, progress_text, read_status
from launcher.exits import describe_exit, first_failure, job_exit_code, normalize_exit
from launcher.hosts import Host
from launcher.remote import HostError, HostShell, each_host
from launcher.runs import write_json_atomic
from launcher.sync import LocalWriteError, Mirror

LOG_TAIL_LINES = 15
MAX_CONTACT_ERRORS = 3
EXIT_BAD_INPUT = 2  # the trainer's exit code for bad options or data: a restart cannot help
BACKUP_DIR = "backup"  # where the trainer's --backup keeps the training state, in the run dir
_LATEST = re.compile(r'^model_checkpoint_path: "([^"]+)"', re.MULTILINE)


class StoppedByUser(Exception):
    """`fab stop` was run for this run while the launcher was watching it."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or a termination signal reached the launcher."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@dataclass
class Worker:
    """One worker of the job, wherever it runs, and what the launcher knows about it."""

    host: Host
    shell: HostShell
    python: str
    code_dir: str
    run_dir: str
    local_dir: Path
    trainer_args: list[str]
    env: dict[str, str]
    mirror: Mirror | None = None
    exit_code: int | None = None
    ended: bool = False
    gone: bool = False
    frozen: bool = False
    contact_errors: int = 0
    warnings: list[str] = field(default_factory=list)
    tail: LogTail = field(init=False)

    def __post_init__(self) -> None:
        self.tail = LogTail(self.local_dir / "workers" / str(self.host.index) / "worker.log")

    @property
    def index(self) -> int:
        return self.host.index

    @property
    def prefix(self) -> str:
        return f"[{self.index} {self.host.label}]"

    def status(self) -> dict[str, Any] | None:
        return read_status(self.local_dir / "workers" / str(self.index) / "status.json")

    def start(self) -> None:
        """Write the 0600 env file, then start the worker detached in its own session."""
        wdir = commands.worker_dir(self.run_dir, self.index)
        made = self.shell.run(f"mkdir -p {commands.q(wdir)}", timeout=30)
        if made.code != 0:
            raise HostError(self.host, f"cannot create {wdir}: {made.stderr.strip()}")
        content = commands.env_file_content(self.env).encode()
        self.shell.write_file(commands.env_file_path(self.run_dir, self.index), content, 0o600)
        cmd = commands.start_command(
            self.code_dir, self.python, "trainer", self.run_dir, self.index, self.trainer_args
        )
        result = self.shell.run(cmd, timeout=30)
        if result.code != 0:
            raise HostError(self.host, f"could not start the worker: {result.stderr.strip()}")

    def poll(self) -> str:
        """`exit N`, `alive`, `gone` or `pending`; local hosts answer without a subprocess."""
        if self.host.local:
            return _local_poll(Path(commands.worker_dir(self.run_dir, self.index)))
        result = self.shell.run(commands.poll_command(self.run_dir, self.index), timeout=30)
        return result.stdout.strip() or "pending"

    def tick(self) -> str:
        """Poll, then mirror: an exit seen here has its last bytes fetched in the same tick.

        On an SSH host both questions go in one command: one round trip per host per tick.
        """
        if self.mirror is None:
            return self.poll()
        marker = "--listing--"
        result = self.shell.run(
            f"{commands.poll_command(self.run_dir, self.index)}; echo {marker}; "
            f"{commands.listing_command(self.run_dir)}",
            timeout=60,
        )
        state, _, listing = result.stdout.partition(marker + "\n")
        try:
            self.mirror.sync(listing)
        except LocalWriteError as exc:
            # Training does not need this machine's disk: warn, keep the job, retry next tick.
            self.warnings.append(f"{exc}; the job goes on, mirroring is retried")
        self.warnings += [f"refused {r}" for r in self.mirror.take_refused()]
        return state.strip() or "pending"

    def stop(self, grace: float) -> None:
        self.shell.run(commands.stop_command(self.run_dir, self.index, grace), timeout=grace + 30)

    def reset(self, note: str) -> None:
        """Clear what the last attempt left (pgid, exit code, status) here and in the mirror, so
        the next attempt is watched from scratch; its log goes on after `note`."""
        result = self.shell.run(commands.reset_command(self.run_dir, self.index, note), timeout=30)
        if result.code != 0:
            raise HostError(self.host, f"could not prepare a restart: {result.stderr.strip()}")
        local = self.local_dir / "workers" / str(self.index)
        for name in commands.ATTEMPT_FILES:
            (local / name).unlink(missing_ok=True)
            if self.mirror is not None:
                self.mirror.seen.pop(f"workers/{self.index}/{name}", None)
        self.exit_code = None
        self.ended = self.gone = self.frozen = False
        self.contact_errors = 0

    def share_backup(self, files: Sequence[Path], backup: Path) -> None:
        """Give a non-chief SSH host the chief's backup: every worker restores from its own
        run directory, but only the chief's copy survives training."""
        for path in files:
            rel = path.relative_to(backup).as_posix()
            target = f"{self.run_dir}/{BACKUP_DIR}/{rel}"
            parent = target.rsplit("/", 1)[0]
            self.shell.run(f"mkdir -p {commands.q(parent)}", timeout=30)
            self.shell.write_file(target, path.read_bytes(), 0o600)

    def sync(self) -> None:
        if self.mirror is not None:
            self.mirror.sync()


def _local_poll(wdir: Path) -> str:
    try:
        return f"exit {(wdir / 'exit_code').read_text().strip()}"
    except OSError:
        pass
    try:
        pgid = int((wdir / "pgid").read_text().strip())
    except (OSError, ValueError):
        return "pending"
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return "gone"
    except PermissionError:
        return "alive"
    return "frozen" if _group_stopped(pgid) else "alive"


def _group_stopped(pgid: int) -> bool:
    """True if a process of the group is stopped (state T), e.g. by SIGSTOP."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] == "T":
            return True
    return False


@dataclass
class Failure:
    index: int
    host: str
    reason: str
    log_tail: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "host": self.host,
            "reason": self.reason,
            "log_tail": self.log_tail,
        }


def latest_backup(backup: Path) -> list[Path]:
    """The files of the newest checkpoint in a backup folder, with its `checkpoint` index.

    A mirrored folder may also hold older checkpoints the chief's host has deleted since, and
    the other workers' scratch copies (`workertemp_<i>`): neither is needed to resume.
    """
    files: list[Path] = []
    indexes = sorted(backup.rglob("checkpoint")) if backup.is_dir() else []
    for index in indexes:
        if index.relative_to(backup).parts[0].startswith("workertemp"):
            continue
        try:
            found = _LATEST.search(index.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            continue
        if found:
            prefix = PurePath(found.group(1)).name + "."
            shards = [p for p in index.parent.iterdir() if p.name.startswith(prefix)]
            files += [index, *sorted(shards)]
    return files


def may_restart(exit_code: int | None, restarts: int, max_restarts: int) -> bool:
    """Restart after a failure while restarts are left, unless the worker refused its input
    (exit 2): the same options would fail the same way again."""
    return restarts < max_restarts and exit_code != EXIT_BAD_INPUT


def log_tail(path: Path, n: int = LOG_TAIL_LINES) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    return [line for line in lines if line.strip()][-n:]


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into Interrupted too, so every ending goes through stop."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum)

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    for s in saved:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


@contextmanager
def signals_ignored() -> Iterator[None]:
    """While stopping, a second Ctrl-C must not leave workers behind."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    for s in saved:
        signal.signal(s, signal.SIG_IGN)
    try:
        yield
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


class Job:
    """Start, watch and end all workers of one run; keeps cluster.json up to date."""

    def __init__(
        self,
        workers: Sequence[Worker],
        local_dir: Path,
        cluster: dict[str, Any],
        out: Output,
        start_timeout: float = 120.0,
        grace: float = 5.0,
        interval: float = 2.0,
        stall_timeout: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        max_restarts: int = 0,
    ) -> None:
        self.workers = list(workers)
        self.local_dir = local_dir
        self.cluster = cluster
        self.out = out
        self.start_timeout = start_timeout
        self.grace = grace
        self.interval = interval
        self.stall_timeout = stall_timeout
        self.clock = clock
        # Progress as this machine saw it (step, when): hosts' clocks may disagree with ours.
        self.progress_seen: dict[int, tuple[object, float]] = {}
        self.failure: Failure | None = None
        self.max_restarts = max_restarts
        self.restarts = 0
        self.attempts: list[dict[str, Any]] = []

    def save(self, **changes: Any) -> None:
        self.cluster.update(changes)
        write_json_atomic(self.local_dir / "cluster.json", self.cluster)

    def run(self) -> int:
        """The whole job; returns the launcher's exit code (0, 1, or 128+signal)."""
        try:
            with signals_interrupt():
                while True:
                    self._begin_attempt()
                    self._start_all()
                    self.save(state="running")
                    self._watch()
                    if self.failure is None or not self._can_restart(self.failure):
                        break
                    self._restart(self.failure)
        except Interrupted as exc:
            return self._end_stopped(exc.signum)
        except StoppedByUser:
            return self._end_stopped(None)
        except KeyboardInterrupt:
            return self._end_stopped(signal.SIGINT)
        except HostError as exc:
            self.failure = Failure(exc.host.index, exc.host.label, exc.message, [])
        if self.failure is not None:
            return self._end_failed(self.failure)
        return self._end_finished()

    def _begin_attempt(self) -> None:
        self.attempts.append(
            {
                "attempt": len(self.attempts) + 1,
                "started": time.time(),
                "ended": None,
                "failure": None,
            }
        )
        self.save(attempts=self.attempts)

    def _end_attempt(self, failure: Failure | None) -> None:
        if self.attempts and self.attempts[-1]["ended"] is None:
            self.attempts[-1].update(
                ended=time.time(), failure=failure.as_dict() if failure else None
            )

    def _can_restart(self, failure: Failure) -> bool:
        code = self.workers[failure.index].exit_code
        return may_restart(code, self.restarts, self.max_restarts)

    def _restart(self, failure: Failure) -> None:
        """Stop the job as a whole, keep the failure in `attempts`, and prepare every worker
        (and every host's backup) for the next attempt on the same run directory."""
        self.stop_all()
        failure.log_tail = log_tail(self.workers[failure.index].tail.path)
        self._end_attempt(failure)
        self.restarts += 1
        self.failure = None
        self.progress_seen.clear()
        self.out.line(
            f"RESTART {self.restarts}/{self.max_restarts}: worker {failure.index} "
            f"({failure.host}) {failure.reason}; starting every worker again, resuming from "
            "the last completed epoch"
        )
        self.save(state="starting", restarts=self.restarts, attempts=self.attempts)
        note = f"--- restart {self.restarts}: attempt {self.restarts + 1} ---"
        _raise_first(self.workers, each_host(self.workers, lambda w: w.reset(note)))
        backup = self.local_dir / BACKUP_DIR
        files = latest_backup(backup)
        others = [w for w in self.workers if w.mirror is not None and w.index != 0]
        _raise_first(others, each_host(others, lambda w: w.share_backup(files, backup)))

    def _start_all(self) -> None:
        self.out.line(f"starting {len(self.workers)} worker(s)")
        results = each_host(self.workers, lambda w: w.start())
        for worker, res in zip(self.workers, results, strict=True):
            if isinstance(res, HostError):
                raise res
            if isinstance(res, Exception):
                raise HostError(worker.host, f"could not start: {res}")

    def _started(self, worker: Worker) -> bool:
        status = worker.status()
        if worker.ended:
            return True
        if status is None:
            return False
        return status.get("state") in ("running", "finished") or bool(status.get("step"))

    def _stopped_by_user(self) -> bool:
        """`fab stop` from another terminal marks cluster.json stopped before it stops workers."""
        try:
            state = json.loads((self.local_dir / "cluster.json").read_text()).get("state")
        except (OSError, ValueError, AttributeError):
            return False
        return bool(state == "stopped")

    def _watch(self) -> None:
        t0 = self.clock()
        while True:
            self._tick()
            if self._stopped_by_user():
                raise StoppedByUser
            if self.failure is not None:
                return
            if all(w.ended for w in self.workers):
                return
            if self.clock() - t0 > self.start_timeout:
                late = [w for w in self.workers if not self._started(w)]
                if late:
                    silent = [w for w in late if w.status() is None] or late
                    w = silent[0]
                    what = (
                        "never reported (no status.json)"
                        if w.status() is None
                        else "did not begin training"
                    )
                    self.failure = self._failure(
                        w, f"did not start within {self.start_timeout:g} s: {what}"
                    )
                    return
            stalled = self._silent_worker()
            if stalled is not None:
                self.failure = self._failure(
                    stalled,
                    f"went silent: no progress for {self.stall_timeout:g} s while running "
                    "(hung, stopped, or its host is overloaded)",
                )
                return
            time.sleep(self.interval)

    def _silent_worker(self) -> Worker | None:
        """A running worker whose step has not moved for stall_timeout seconds, if any."""
        now = self.clock()
        # Collective ops stall every worker at once: check a stopped one first.
        for w in sorted(self.workers, key=lambda w: not w.frozen):
            status = w.status()
            if w.ended or status is None or status.get("state") != "running":
                continue
            mark = (status.get("step"), status.get("epoch"), status.get("updated"))
            seen = self.progress_seen.get(w.index)
            if seen is None or seen[0] != mark:
                self.progress_seen[w.index] = (mark, now)
            elif now - seen[1] > self.stall_timeout:
                return w
        return None

    def _tick(self) -> None:
        results = each_host(self.workers, lambda w: w.tick())
        self._print_logs()
        self._print_warnings()
        found: list[tuple[int, Failure]] = []
        for worker, res in zip(self.workers, results, strict=True):
            if worker.ended:
                continue
            if isinstance(res, Exception):
                worker.contact_errors += 1
                if worker.contact_errors >= MAX_CONTACT_ERRORS:
                    msg = res.message if isinstance(res, HostError) else str(res)
                    found.append((0, self._failure(worker, f"lost contact: {msg}")))
                continue
            worker.contact_errors = 0
            state = str(res)
            worker.frozen = state == "frozen"
            if state.startswith("exit"):
                worker.ended = True
                try:
                    worker.exit_code = normalize_exit(int(state.split()[1]))
                except (IndexError, ValueError):
                    worker.exit_code = None
                if worker.exit_code != 0:
                    killed = worker.exit_code is None or worker.exit_code < 0
                    found.append(
                        (0 if killed else 1, self._failure(worker, describe_exit(worker.exit_code)))
                    )
            elif state == "gone":
                worker.ended = worker.gone = True
                found.append((0, self._failure(worker, describe_exit(None))))
        frozen = [w for w in self.workers if w.frozen and not w.ended]
        if found and frozen and all(rank > 0 for rank, _ in found):
            # Peers of a stopped (SIGSTOP) worker abort after missing its heartbeats: it is
            # the cause, not them.
            found = [(0, self._failure(frozen[0], "was stopped (SIGSTOP?) and went silent"))]
        if found and self.failure is None:
            # A killed or vanished worker makes the others abort within a second or two; when
            # both are seen in one tick, the cause is the killed one, not the aborted ones.
            self.failure = min(found, key=lambda f: (f[0], f[1].index))[1]
        self.out.progress([(w.prefix, self._progress(w)) for w in self.workers])

    def _progress(self, worker: Worker) -> str:
        if worker.frozen and not worker.ended:
            return "STOPPED (a process of it is stopped, e.g. by SIGSTOP)"
        if worker.ended:
            return describe_exit(worker.exit_code) if not worker.gone else "gone"
        return progress_text(worker.status())

    def _print_warnings(self) -> None:
        for w in self.workers:
            warnings, w.warnings = w.warnings, []
            self.out.lines([f"WARNING: {w.prefix} {text}" for text in warnings])

    def _print_logs(self, final: bool = False) -> None:
        for w in self.workers:
            lines = w.tail.flush() if final else w.tail.new_lines()
            self.out.lines([f"{w.prefix} {line}" for line in lines])

    def _failure(self, worker: Worker, reason: str) -> Failure:
        return Failure(worker.index, worker.host.label, reason, [])

    def stop_all(self) -> None:
        """TERM, grace, KILL on every host at once; then one last mirror of every host."""
        live = [w for w in self.workers if not (w.ended and w.exit_code is not None)]
        self.out.line(f"stopping {len(live)} worker(s): TERM, up to {self.grace:g} s, then KILL")
        results = each_host(live, lambda w: w.stop(self.grace))
        for w, res in zip(live, results, strict=True):
            if isinstance(res, Exception):
                self.out.line(f"{w.prefix} could not stop: {res}")
        self._final_sync()

    def _final_sync(self) -> None:
        results = each_host(self.workers, lambda w: w.tick())
        for w, res in zip(self.workers, results, strict=True):
            if isinstance(res, Exception):
                self.out.line(f"{w.prefix} could not fetch its files: {res}")
            elif not w.ended and str(res).startswith("exit"):
                try:
                    w.exit_code = normalize_exit(int(str(res).split()[1]))
                except (IndexError, ValueError):
                    w.exit_code = None
                w.ended = True
        self._print_logs(final=True)
        self._print_warnings()

    def _drop_backups(self) -> None:
        """A finished job needs no backup: the chief's host empties its own, the mirrored and
        shared copies go here."""
        shutil.rmtree(self.local_dir / BACKUP_DIR, ignore_errors=True)
        others = [w for w in self.workers if w.mirror is not None and w.index != 0]
        each_host(
            others,
            lambda w: w.shell.run(f"rm -rf {commands.q(w.run_dir + '/' + BACKUP_DIR)}", timeout=30),
        )

    def _exit_codes(self) -> dict[str, int | None]:
        return {str(w.index): w.exit_code for w in self.workers}

    def save_end(self, **changes: Any) -> None:
        """The final cluster.json: exit codes, and the bytes mirrored from each SSH host."""
        synced = {str(w.index): w.mirror.bytes_received for w in self.workers if w.mirror}
        self.save(
            finished=time.time(),
            exit_codes=self._exit_codes(),
            sync_bytes=synced,
            restarts=self.restarts,
            attempts=self.attempts,
            **changes,
        )

    def _end_failed(self, failure: Failure) -> int:
        with signals_ignored():
            self.stop_all()
        worker = self.workers[failure.index]
        failure.log_tail = log_tail(worker.tail.path)
        self.failure = failure
        self._end_attempt(failure)
        self.save_end(state="failed", failure=failure.as_dict())
        self.out.line(f"FAILED: worker {failure.index} ({failure.host}) {failure.reason}")
        if failure.log_tail:
            self.out.line(f"last lines of workers/{failure.index}/worker.log:")
            self.out.lines([f"  {line}" for line in failure.log_tail])
        self.out.line(f"all workers stopped; logs are in {self.local_dir}")
        return 1

    def _end_stopped(self, signum: int | None) -> int:
        """Ctrl-C, a termination signal (exit 128+N) or `fab stop` elsewhere (exit 1)."""
        with signals_ignored():
            if signum is None:
                self.out.line("stopped by `fab stop`: stopping every worker")
            else:
                self.out.line(f"interrupted ({signal.Signals(signum).name}): stopping every worker")
            self.stop_all()
            self._end_attempt(None)
            self.save_end(state="stopped")
            self.out.line(f"stopped; logs are in {self.local_dir}")
        return 1 if signum is None else 128 + int(signum)

    def _end_finished(self) -> int:
        self._final_sync()
        codes = {w.index: w.exit_code for w in self.workers}
        code = job_exit_code(codes, len(self.workers))
        if code != 0:
            bad = self.workers[first_failure(codes) or 0]
            return self._end_failed(self._failure(bad, describe_exit(bad.exit_code)))
        self._drop_backups()
        self._end_attempt(None)
        self.save_end(state="finished")
        self.out.line(summary(self.local_dir))
        return 0


def _raise_first(workers: Sequence[Worker], results: Sequence[object]) -> None:
    """The first host that could not do its part, as a HostError naming it."""
    for worker, res in zip(workers, results, strict=True):
        if isinstance(res, HostError):
            raise res
        if isinstance(res, Exception):
            raise HostError(worker.host, str(res))


def summary(local_dir: Path) -> str:
    """What a user wants after a good run: accuracy, where the model is, how to look at it."""
    lines = ["finished: every worker exited 0"]
    try:
        m = json.loads((local_dir / "metrics.json").read_text())
        lines.append(
            f"  test accuracy {m.get('test_accuracy', float('nan')):.4f}, "
            f"test loss {m.get('test_loss', float('nan')):.4f}, "
            f"{m.get('epochs', '?')} epoch(s) on {m.get('workers', '?')} worker(s) "
            f"in {m.get('wall_time_sec', m.get('train_time_sec', float('nan'))):.1f} s"
        )
    except (OSError, ValueError, TypeError):
        lines.append("  (no metrics.json from the chief)")
    model = local_dir / "model.h5"
    if model.exists():
        lines.append(f"  model: {model}  (keras.models.load_model(path) in tf-keras or Keras 3)")
    lines.append("  dashboard: streamlit run dashboard/app.py")
    lines.append(f"  tensorboard --logdir {local_dir}")
    return "\n".join(lines)


def launcher_identity() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}
