"""One worker's process, wherever it runs: start it detached in its own process group, poll
it, mirror its files, stop it, and prepare it for a restart.

A poll answers one line (`exit N`, `alive`, `frozen`, `gone`, `pending`), printed by the
shell's poll_command on an SSH host or by `local_poll` here; `Poll.parse` is the one place
that reads it.
"""

from __future__ import annotations

import enum
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launcher import commands
from launcher.contact import RECONNECTED, Contact, Reconnects
from launcher.display import LogTail, read_status
from launcher.exits import describe_exit, normalize_exit
from launcher.hostdisk import DiskWatch, HostDisk, local_disk, parse_disk
from launcher.hosts import Host
from launcher.remote import HostError, HostShell
from launcher.sync import DiskNotices, LocalWriteError, Mirror
from runformat import (
    BACKUP_DIR,
    EXIT_CODE_FILE,
    PGID_FILE,
    status_path,
    worker_dir,
    worker_log_path,
    worker_rel,
)


class WorkerState(enum.Enum):
    """The `state` a worker's trainer writes in its status.json."""

    STARTING = "starting"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    UNKNOWN = "?"  # no status.json yet, or a state this launcher does not know

    @classmethod
    def of(cls, status: dict[str, Any] | None) -> WorkerState:
        try:
            return cls(status.get("state")) if status else cls.UNKNOWN
        except ValueError:
            return cls.UNKNOWN


class ProcessState(enum.Enum):
    """A worker's process group as the last poll saw it."""

    PENDING = "pending"  # no process group recorded yet
    ALIVE = "alive"
    FROZEN = "frozen"  # a process of the group is stopped (SIGSTOP, a debugger)
    EXITED = "exit"  # the worker's shell recorded an exit code
    GONE = "gone"  # the group is dead and left no exit code

    @property
    def ended(self) -> bool:
        return self in (ProcessState.EXITED, ProcessState.GONE)


@dataclass(frozen=True)
class Poll:
    """One poll of one worker: its process state and, once exited, its exit code
    (death by signal N as -N; None when the code could not be read)."""

    state: ProcessState
    exit_code: int | None = None

    @classmethod
    def parse(cls, text: str) -> Poll:
        first = (text.strip().splitlines() or [""])[0]  # other lines: see hostdisk
        word, _, rest = first.strip().partition(" ")
        if word == "exit":
            try:
                return cls(ProcessState.EXITED, normalize_exit(int(rest.split()[0])))
            except (IndexError, ValueError):
                return cls(ProcessState.EXITED, None)
        try:
            return cls(ProcessState(word))
        except ValueError:
            return cls(ProcessState.PENDING)

    def describe(self) -> str:
        """`alive`, `killed by SIGKILL`, `finished`, ... for a user."""
        if self.state is ProcessState.EXITED:
            return describe_exit(self.exit_code)
        return self.state.value


def local_poll(wdir: Path, fallback: Path | None = None) -> str:
    """The poll line for a worker on this machine, without a subprocess (as poll_command);
    `fallback`: where its exit code is when its folder took nothing."""
    exited = _exit_line(wdir, fallback)
    if exited is not None:
        return exited
    try:
        pgid = int((wdir / PGID_FILE).read_text().strip())
    except (OSError, ValueError):
        return "pending"
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return _exit_line(wdir, fallback) or "gone"
    except PermissionError:
        return "alive"
    states = group_states(pgid)
    if not states:
        # The shell may have written its exit code and ended since the first look.
        return _exit_line(wdir, fallback) or "gone"
    return "frozen" if "T" in states else "alive"


def _exit_line(wdir: Path, fallback: Path | None = None) -> str | None:
    """`exit N` from the worker's exit-code file, in its folder or outside it."""
    for path in (wdir / EXIT_CODE_FILE, *([fallback] if fallback else [])):
        try:
            return f"exit {path.read_text().strip()}"
        except OSError:
            continue
    return None


def group_states(pgid: int) -> list[str]:
    """The states (R, S, T, ...) of the group's live processes; zombies left out.

    A group whose only member is a zombie counts as gone: where nothing reaps orphans
    (PID 1 of many containers) an ended worker's shell stays one forever.
    """
    states = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            states.append(fields[0])
    return states


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
    module: str = "trainer"  # the program: python -m MODULE --run-dir RUN_DIR ARGS
    exit_code: int | None = None
    ended: bool = False
    gone: bool = False
    frozen: bool = False
    contact: Contact = field(default_factory=Contact)  # set up with --contact-timeout
    warnings: list[str] = field(default_factory=list)  # for the terminal, once each
    reconnects: Reconnects = field(default_factory=Reconnects)  # already warned about
    disk: DiskNotices = field(default_factory=DiskNotices)  # this machine's disk
    host_disk: DiskWatch = field(default_factory=DiskWatch)  # the host's, where the run lives
    tail: LogTail = field(init=False)

    def __post_init__(self) -> None:
        self.tail = LogTail(worker_log_path(self.local_dir, self.host.index))

    @property
    def index(self) -> int:
        return self.host.index

    @property
    def prefix(self) -> str:
        return f"[{self.index} {self.host.label}]"

    def status(self) -> dict[str, Any] | None:
        return read_status(status_path(self.local_dir, self.index))

    def start(self) -> None:
        """Write the 0600 env file, then start the worker detached in its own session."""
        wdir = commands.worker_dir(self.run_dir, self.index)
        made = self.shell.run(f"umask 077 && mkdir -p {commands.q(wdir)}", timeout=30)
        if made.code != 0:
            raise HostError(self.host, f"cannot create {wdir}: {made.stderr.strip()}")
        content = commands.env_file_content(self.env).encode()
        self.shell.write_file(commands.env_file_path(self.run_dir, self.index), content, 0o600)
        cmd = commands.start_command(
            self.code_dir, self.python, self.module, self.run_dir, self.index, self.trainer_args
        )
        result = self.shell.run(cmd, timeout=30)
        if result.code != 0:
            raise HostError(self.host, f"could not start the worker: {result.stderr.strip()}")

    def poll(self) -> str:
        """The poll line; local hosts answer without a subprocess."""
        if self.host.local:
            wdir = Path(commands.worker_dir(self.run_dir, self.index))
            return local_poll(wdir, Path(commands.exit_fallback_path(self.run_dir, self.index)))
        result = self.shell.run(commands.poll_command(self.run_dir, self.index), timeout=30)
        return result.stdout.strip() or "pending"

    def tick(self) -> Poll:
        """Poll, then mirror: an exit seen here has its last bytes fetched in the same tick.

        On an SSH host both questions go in one command: one round trip per host per tick.
        """
        if self.mirror is None:
            poll = Poll.parse(self.poll())
            self._disk_news(local_disk(self.run_dir) if self.host.local else None)
            return poll
        asked = f"{commands.poll_command(self.run_dir, self.index)}; "
        asked += commands.disk_command(self.run_dir)
        cmd = commands.and_listing(asked, self.run_dir)
        state, listing = commands.split_listing(self.shell.run(cmd, timeout=60).stdout)
        self._disk_news(parse_disk(state, self.run_dir))
        if self.reconnects.news(self.shell):
            self.warnings.append(RECONNECTED)
        # Training does not need this machine's disk: a full one keeps the job, and every
        # tick tries again (the mirror resumes where it stopped).
        try:
            self.mirror.sync(listing)
        except LocalWriteError as exc:
            notice = self.disk.refused(exc)
        else:
            notice = self.disk.took()
        if notice is not None:
            self.warnings.append(notice)
        self.warnings += [f"refused {r}" for r in self.mirror.take_refused()]
        return Poll.parse(state)

    def _disk_news(self, disk: HostDisk | None) -> None:
        notice = self.host_disk.seen(disk, time.monotonic())
        if notice is not None:
            self.warnings.append(notice)

    def disk_trouble(self) -> str | None:
        """Its host's disk, when it is (or lately was) full or refuses writes."""
        return self.host_disk.trouble(time.monotonic())

    def observe(self, poll: Poll) -> bool:
        """Take in a poll of a worker still running; True when it ended with this poll."""
        self.frozen = poll.state is ProcessState.FROZEN
        if not poll.state.ended:
            return False
        self.ended = True
        self.gone = poll.state is ProcessState.GONE
        self.exit_code = poll.exit_code
        return True

    def stop(self, grace: float) -> None:
        self.shell.run(commands.stop_command(self.run_dir, self.index, grace), timeout=grace + 30)

    def reset(self, note: str) -> None:
        """Clear what the last attempt left (pgid, exit code, status) here and in the mirror, so
        the next attempt is watched from scratch; its log goes on after `note`."""
        reset_worker(self.shell, self.run_dir, self.local_dir, self.index, note, self.mirror)
        self.exit_code = None
        self.ended = self.gone = self.frozen = False
        self.contact.restored(0.0)
        self.host_disk.clear()

    def share_backup(self, files: Sequence[Path], backup: Path) -> None:
        """Give a non-chief SSH host the chief's backup: every worker restores from its own
        run directory, but only the chief's copy survives training."""
        for path in files:
            rel = path.relative_to(backup).as_posix()
            target = f"{self.run_dir}/{BACKUP_DIR}/{rel}"
            parent = target.rsplit("/", 1)[0]
            self.shell.run(f"umask 077 && mkdir -p {commands.q(parent)}", timeout=30)
            self.shell.write_file(target, path.read_bytes(), 0o600)

    def drop_backup(self) -> None:
        self.shell.run(f"rm -rf {commands.q(self.run_dir + '/' + BACKUP_DIR)}", timeout=30)

    def sync(self) -> None:
        if self.mirror is not None:
            self.mirror.sync()


def reset_worker(
    shell: HostShell, run_dir: str, local_dir: Path, index: int, note: str, mirror: Mirror | None
) -> None:
    """Clear what a worker's last attempt left (pgid, exit code, status) on its host, here and
    in the mirror, so that the next attempt is watched from scratch; its log goes on after
    `note`. SSH, local and Slurm workers alike."""
    result = shell.run(commands.reset_command(run_dir, index, note), timeout=30)
    if result.code != 0:
        raise HostError(shell.host, f"could not prepare a restart: {result.stderr.strip()}")
    local = worker_dir(local_dir, index)
    for name in commands.ATTEMPT_FILES:
        (local / name).unlink(missing_ok=True)
        if mirror is not None:
            mirror.seen.pop(f"{worker_rel(index)}/{name}", None)
