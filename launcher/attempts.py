"""The life of a launched job, whatever runs its workers: attempts, restarts, how it ends.

An SSH or local job (launcher/job.py) starts one process per worker; a Slurm job
(launcher/slurm_job.py) submits one batch job. Both go through the same attempts (start,
watch, and after a failure that may be retried, start again from the trainer's backup), and
both end in one of four ways: finished, failed, stopped (Ctrl-C, a signal, `fab stop`) or
broken (an error of the launcher itself, which must still stop every worker). This skeleton
holds that once, with the run's record (cluster.json) that a full local disk must not end the
job over; each job fills in its steps.
"""

from __future__ import annotations

import shutil
import signal
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from launcher.display import Output, log_tail
from launcher.failure import may_restart
from launcher.options import WatchOptions
from launcher.remote import HostError
from launcher.signals import Interrupted, signals_ignored, signals_interrupt
from launcher.summary import summary
from runformat import BACKUP_DIR, CLUSTER_JSON, worker_log_path, write_json_atomic


class StoppedByUser(Exception):
    """`fab stop` was run for this run while the launcher was watching it."""


class JobFailure(Protocol):
    log_tail: list[str]
    retry: bool  # False when a restart would meet the same cause (a full disk)

    def as_dict(self) -> dict[str, Any]: ...

    def line(self) -> str:
        """`worker 1 (gpu-b) killed by SIGKILL`"""


F = TypeVar("F", bound=JobFailure)


class AttemptedJob(ABC, Generic[F]):
    """Run attempts until one ends without a failure that may be retried, then end the job
    in one of its four ways, each written once here.

    A job says how to do the four things of an attempt's life (start every worker, watch
    them, stop every one, make ready for the next attempt) and, for the endings, how to
    bring the rest home, what the final record holds and how to tell a failure.
    """

    failure: F | None
    attempts: list[dict[str, Any]]
    local_dir: Path
    cluster: dict[str, Any]  # cluster.json as the job keeps it
    out: Output
    watch: WatchOptions
    clock: Callable[[], float]  # monotonic seconds
    restarts: int
    began: float | None = None  # when run() began (monotonic)
    unsaved: str | None = None  # why the last write of cluster.json failed
    stopping = "stopping every worker"  # what `_stop` does, for a user
    again = "starting every worker again"  # what the next attempt does, for a user

    def run(self) -> int:
        """The whole job; returns the launcher's exit code (0, 1, or 128+signal)."""
        self.began = time.monotonic()
        try:
            with signals_interrupt():
                while True:
                    self._new_attempt()
                    self.save(state="starting", restarts=self.restarts, attempts=self.attempts)
                    self._start()
                    self._watch()
                    if self.failure is not None:
                        self._explain(self.failure)
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
            self.failure = self._host_failure(exc)
        except Exception as exc:
            return self._end_broken(exc)
        if self.failure is not None:
            return self._end_failed(self.failure)
        return self._end_finished()

    # What a job does.

    @abstractmethod
    def _start(self) -> None:
        """Start (or submit) every worker of a new attempt."""

    @abstractmethod
    def _watch(self) -> None:
        """Until the attempt ends; sets `failure` when it failed."""

    @abstractmethod
    def _stop(self, bring_home: bool = True) -> None:
        """Stop every worker still running, then (bring_home) mirror the run one last time."""

    @abstractmethod
    def _reset(self, note: str) -> None:
        """Make every worker ready for the next attempt on the same run directory; each
        worker's log goes on after `note`."""

    @abstractmethod
    def _bring_home(self) -> list[str]:
        """One last pass of mirroring; what could not be brought home."""

    @abstractmethod
    def save_end(self, **changes: Any) -> bool:
        """The final cluster.json: exit codes, bytes mirrored, attempts, and `changes`."""

    @abstractmethod
    def _report(self, failure: F) -> list[str]:
        """The lines that tell the user why the job failed."""

    @abstractmethod
    def _host_failure(self, exc: HostError) -> F:
        """The failure a host that cannot be reached (or refuses) stands for."""

    @abstractmethod
    def _exit_code(self, failure: F) -> int | None:
        """The failed worker's exit code, if it is known."""

    def _explain(self, failure: F) -> None:
        """Look further into `failure` before it is acted on (the SSH and local job check the
        network between the workers when they lost their peers); nothing by default."""

    def _can_restart(self, failure: F) -> bool:
        """Whether the job starts again after `failure` (launcher.failure.may_restart); a
        restart refused because of a full disk is said."""
        if not failure.retry and self.restarts < self.watch.max_restarts:
            self.out.line(f"not restarting: {failure.line()}; make room there first")
        code = self._exit_code(failure)
        return may_restart(code, self.restarts, self.watch.max_restarts, failure.retry)

    def _tail(self, failure: F) -> list[str]:
        """The end of the log that tells most about a failure."""
        index = getattr(failure, "index", None)
        return log_tail(worker_log_path(self.local_dir, index)) if index is not None else []

    def _failed_after_all(self) -> F | None:
        """A failure found only once every worker has ended (a non-zero exit code)."""
        return None

    def _drop_backups(self) -> None:
        """A finished job needs no backup (--max-restarts): the copy here goes."""
        shutil.rmtree(self.local_dir / BACKUP_DIR, ignore_errors=True)

    # The attempts and the four endings.

    def _restart(self, failure: F) -> None:
        """Stop what is left of the attempt, keep its failure in `attempts`, and make every
        worker ready for the next one, which resumes from the trainer's backup."""
        self._stop()
        failure.log_tail = self._tail(failure)
        self._end_attempt(failure)
        self.restarts += 1
        self.failure = None
        self.out.line(
            f"RESTART {self.restarts}/{self.watch.max_restarts}: {failure.line()}; "
            f"{self.again}, resuming from the last completed epoch"
        )
        self._reset(f"--- restart {self.restarts}: attempt {self.restarts + 1} ---")

    def _end_failed(self, failure: F) -> int:
        self.failure = failure
        with signals_ignored():
            self._stop()
        self.out.freeze()
        failure.log_tail = self._tail(failure)
        self._end_attempt(failure)
        self.save_end(state="failed", failure=failure.as_dict())
        self.out.lines(self._report(failure))
        return 1

    def _end_stopped(self, signum: int | None) -> int:
        """Ctrl-C, a termination signal (exit 128+N) or `fab stop` elsewhere (exit 1)."""
        with signals_ignored():
            name = "stopped by `fab stop`" if signum is None else "interrupted"
            why = name if signum is None else f"{name} ({signal.Signals(signum).name})"
            self.out.line(f"{why}: {self.stopping}")
            self._stop()
            self.out.freeze()
            self._end_attempt(None)
            self.save_end(state="stopped")
            self.out.line(f"stopped; logs are in {self.local_dir}")
        return 1 if signum is None else 128 + int(signum)

    def _end_broken(self, exc: Exception) -> int:
        """An error the launcher did not expect (a bug, a failing local disk): no worker may
        be left training unwatched, so every one is stopped, and the record says why."""
        reason = f"launcher error: {type(exc).__name__}: {exc}"
        with signals_ignored():
            self.out.line(f"{reason}; {self.stopping} so that none is left unwatched")
            self.out.log_only(traceback.format_exc())
            try:
                self._stop()
            except Exception:  # the last mirror failed too: still stop every worker
                self.out.log_only(traceback.format_exc())
                self._stop(bring_home=False)
            self._end_attempt(None)
            broken: dict[str, Any] = {
                "index": None,
                "host": "launcher",
                "reason": reason,
                "log_tail": [],
            }
            self.save_end(state="failed", failure=broken)
        self.out.line(f"FAILED: {reason}; every worker was stopped")
        return 1

    def _end_finished(self) -> int:
        """Bring the rest home and write the record, waiting for room on a full local disk."""
        left = self._until_done(self._bring_home)
        failure = self._failed_after_all()
        if failure is not None:
            return self._end_failed(failure)
        self.out.freeze()
        if not left:
            self._drop_backups()
        self._end_attempt(None)
        left += self._until_done(lambda: self._save_end_problems(state="finished"))
        if left:
            self.out.line(
                f"WARNING: every worker finished, but not all of the run is here: "
                f"{'; '.join(left)}. Make room, then `fab fetch --run {self.local_dir.name}` "
                "brings the files (cluster.json keeps its last state)."
            )
            return 1
        took = time.monotonic() - self.began if self.began is not None else None
        self.out.line(summary(self.local_dir, took))
        return 0

    # The record.

    def save(self, **changes: Any) -> bool:
        """Update cluster.json. A full or failing local disk must not end the job (its
        workers would be left unwatched): warn once, and the next save writes it all."""
        self.cluster.update(changes)
        try:
            write_json_atomic(self.local_dir / CLUSTER_JSON, self.cluster)
        except OSError as exc:
            if self.unsaved is None:
                self.out.line(
                    f"WARNING: cannot write {self.local_dir / CLUSTER_JSON}: "
                    f"{exc.strerror or exc}; the job goes on"
                )
            self.unsaved = f"cannot write cluster.json: {exc.strerror or exc}"
            return False
        self.unsaved = None
        return True

    def _save_end_problems(self, **changes: Any) -> list[str]:
        self.save_end(**changes)
        return [self.unsaved] if self.unsaved else []

    def _until_done(self, attempt: Callable[[], list[str]]) -> list[str]:
        """Repeat `attempt` while it reports problems (a full local disk, a host out of
        contact), for up to --contact-timeout: the job's results are on the hosts, and the
        user can make room or wait for the network. Returns the problems left."""
        problems = attempt()
        if not problems:
            return []
        limit, every = self.watch.contact_timeout, max(self.watch.interval, 1.0)
        self.out.line(
            f"WARNING: waiting for disk space or contact to bring the run home: "
            f"{'; '.join(problems)}; trying again every {every:g} s for up to {limit:g} s "
            "(Ctrl-C leaves the files on the hosts; `fab fetch` brings them later)"
        )
        deadline = self.clock() + limit
        while problems and self.clock() < deadline:
            time.sleep(every)
            problems = attempt()
        if not problems:
            self.out.line("brought the run home")
        return problems

    def _new_attempt(self) -> None:
        self.attempts.append(
            {
                "attempt": len(self.attempts) + 1,
                "started": time.time(),
                "ended": None,
                "failure": None,
            }
        )

    def _end_attempt(self, failure: F | None, **extra: Any) -> None:
        """Close the current attempt's record (once: a later call changes nothing)."""
        if self.attempts and self.attempts[-1]["ended"] is None:
            self.attempts[-1].update(
                ended=time.time(), failure=failure.as_dict() if failure else None, **extra
            )
