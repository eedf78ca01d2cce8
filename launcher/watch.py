"""Polling: one tick asks every worker at once how its process is and mirrors its files, and
keeps, on this machine's clock, when each worker's status last changed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from launcher.failure import MAX_CONTACT_ERRORS, WorkerView
from launcher.remote import HostError
from launcher.results import HostResults
from launcher.worker import Poll, ProcessState, Worker, WorkerState


def poll_all(workers: Sequence[Worker]) -> HostResults[Worker, Poll]:
    """Poll and mirror every worker at once; a worker that already ended keeps its record."""
    results = HostResults.run(workers, lambda w: w.tick())
    for worker, res in results:
        if worker.ended:
            continue
        if isinstance(res, HostError):
            worker.contact_errors += 1
            worker.contact_error = res.message
        else:
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

    def clear(self) -> None:
        self.seen.clear()


def view(worker: Worker, quiet: QuietClock) -> WorkerView:
    """What the failure decision needs to know about one worker now."""
    if worker.ended:
        state = ProcessState.GONE if worker.gone else ProcessState.EXITED
    else:
        state = ProcessState.FROZEN if worker.frozen else ProcessState.ALIVE
    lost = worker.contact_errors >= MAX_CONTACT_ERRORS
    status = worker.status()
    return WorkerView(
        index=worker.index,
        host=worker.host.label,
        state=state,
        exit_code=worker.exit_code,
        lost_contact=worker.contact_error if lost else None,
        status=status,
        quiet_since=quiet.since(worker, status),
    )
