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

import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from launcher.display import Output
from launcher.options import WatchOptions
from launcher.remote import HostError
from launcher.signals import Interrupted, signals_interrupt
from runformat import CLUSTER_JSON, write_json_atomic


class StoppedByUser(Exception):
    """`fab stop` was run for this run while the launcher was watching it."""


class JobFailure(Protocol):
    def as_dict(self) -> dict[str, Any]: ...


F = TypeVar("F", bound=JobFailure)


class AttemptedJob(ABC, Generic[F]):
    """Run attempts until one ends without a failure that may be retried, then end the job."""

    failure: F | None
    attempts: list[dict[str, Any]]
    local_dir: Path
    cluster: dict[str, Any]  # cluster.json as the job keeps it
    out: Output
    watch: WatchOptions
    clock: Callable[[], float]  # monotonic seconds
    unsaved: str | None = None  # why the last write of cluster.json failed

    def run(self) -> int:
        """The whole job; returns the launcher's exit code (0, 1, or 128+signal)."""
        try:
            with signals_interrupt():
                while True:
                    self._start_attempt()
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
            self.failure = self._host_failure(exc)
        except Exception as exc:
            return self._end_broken(exc)
        if self.failure is not None:
            return self._end_failed(self.failure)
        return self._end_finished()

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

    @abstractmethod
    def save_end(self, **changes: Any) -> bool:
        """The final cluster.json: exit codes, bytes mirrored, attempts, and `changes`."""

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

    @abstractmethod
    def _start_attempt(self) -> None:
        """Begin an attempt: record it and start (or submit) every worker."""

    @abstractmethod
    def _watch(self) -> None:
        """Until the attempt ends; sets `failure` when it failed."""

    @abstractmethod
    def _can_restart(self, failure: F) -> bool: ...

    @abstractmethod
    def _restart(self, failure: F) -> None:
        """Stop what is left of the attempt and prepare the next one."""

    @abstractmethod
    def _host_failure(self, exc: HostError) -> F:
        """The failure a host that cannot be reached (or refuses) stands for."""

    @abstractmethod
    def _end_failed(self, failure: F) -> int: ...

    @abstractmethod
    def _end_stopped(self, signum: int | None) -> int: ...

    @abstractmethod
    def _end_finished(self) -> int: ...

    @abstractmethod
    def _end_broken(self, exc: Exception) -> int:
        """An error of the launcher itself: stop every worker anyway, never orphan them."""
