"""Polling: one tick asks every worker at once how its process is and mirrors its files, and
keeps, on this machine's clock, when each worker's status last changed."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from launcher.contact import lost_message
from launcher.failure import WorkerView
from launcher.remote import HostError
from launcher.results import HostResults
from launcher.worker import Poll, ProcessState, Worker, WorkerState


def poll_all(
    workers: Sequence[Worker], clock: Callable[[], float] = time.monotonic, everyone: bool = False
) -> HostResults[Worker, Poll]:
    """Poll and mirror every worker at once; a worker that already ended keeps its record.

    A host that does not answer is tried again after a growing delay (its workers run on,
    detached); a warning says when contact is lost and when it is back. `everyone`: try
    every host now, whatever its delay (the end of a job).
    """
    due = [w for w in workers if everyone or w.contact.due(clock())]
    results = HostResults.run(due, lambda w: w.tick())
    now = clock()
    for worker, res in results:
        if isinstance(res, HostError):
            if worker.contact.failed(now, res.message):
                worker.warnings.append(
                    lost_message("", res.message, worker.contact.timeout).lstrip()
                )
            continue
        lost_for = worker.contact.restored(now)
        if lost_for is not None:
            worker.warnings.append(f"contact restored after {lost_for:.1f} s")
        if not worker.ended:
            worker.observe(res)
    return results


class Watched(Protocol):
    """What the quiet clock needs of a worker (an SSH worker or a Slurm task)."""

    @property
    def index(self) -> int: ...

    @property
    def ended(self) -> bool: ...


class QuietClock:
    """When each running worker's status last changed, as this machine saw it (the hosts'
    clocks may disagree with ours)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.seen: dict[int, tuple[object, float]] = {}

    def since(self, worker: Watched, status: dict[str, Any] | None) -> float | None:
        """Record the worker's progress mark; when it last changed (None unless running)."""
        if worker.ended or WorkerState.of(status) is not WorkerState.RUNNING or status is None:
            return None
        # Progress is a step, an epoch or a phase that moved: the trainer's heartbeat rewrites
        # status.json (`updated`) even while its training loop is stuck.
        mark = (status.get("step"), status.get("epoch"), status.get("phase"))
        seen = self.seen.get(worker.index)
        if seen is None or seen[0] != mark:
            seen = self.seen[worker.index] = (mark, self.clock())
        return seen[1]

    def forget(self, index: int) -> None:
        """Time this worker's progress afresh from its next status."""
        self.seen.pop(index, None)

    def clear(self) -> None:
        self.seen.clear()


def view(worker: Worker, quiet: QuietClock) -> WorkerView:
    """What the failure decision needs to know about one worker now."""
    if worker.ended:
        state = ProcessState.GONE if worker.gone else ProcessState.EXITED
    else:
        state = ProcessState.FROZEN if worker.frozen else ProcessState.ALIVE
    contact = worker.contact
    lost = contact.lost(quiet.clock())
    status = worker.status()
    if contact.failing:
        # Out of contact nothing new arrives: that silence is not the worker's, and its
        # progress is timed afresh once the host answers again.
        quiet.forget(worker.index)
    return WorkerView(
        index=worker.index,
        host=worker.host.label,
        state=state,
        exit_code=worker.exit_code,
        lost_contact=f"no answer for {contact.timeout:g} s: {contact.error}" if lost else None,
        status=status,
        quiet_since=None if contact.failing else quiet.since(worker, status),
        disk=worker.disk_trouble(),
    )
