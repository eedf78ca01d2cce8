"""Which worker made the job fail, and why: a pure function of what the launcher has seen
(each worker's last poll, its status.json, when its status last changed) and the clock.

No I/O here, so every rule is tested from a table of cases (tests/launcher/test_failure.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from launcher.exits import describe_exit
from launcher.options import WatchOptions
from launcher.worker import ProcessState, WorkerState
from runformat import UNTIMED_PHASES, phase_silence_bound

EXIT_BAD_INPUT = 2  # the trainer's exit code for bad options or data: a restart cannot help


@dataclass
class Failure:
    """The worker that made the job fail, why, and (once stopped) the end of its log."""

    index: int
    host: str
    reason: str
    log_tail: list[str]
    retry: bool = True  # False when a restart would meet the same cause (a full disk)
    # The network check's failing pairs after a loss of peers (launcher/partition.py); None
    # when it did not run, empty when every worker reached every other.
    network: list[str] | None = None

    def as_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "index": self.index,
            "host": self.host,
            "reason": self.reason,
            "log_tail": self.log_tail,
        }
        if self.network is not None:
            found["network"] = self.network
        return found

    def line(self) -> str:
        return f"worker {self.index} ({self.host}) {self.reason}"


@dataclass(frozen=True)
class WorkerView:
    """One worker as the launcher sees it at one moment."""

    index: int
    host: str
    state: ProcessState = ProcessState.PENDING  # from its last poll
    exit_code: int | None = None  # once EXITED; death by signal N is -N
    lost_contact: str | None = None  # why, once the host did not answer for --contact-timeout
    status: dict[str, Any] | None = None  # its status.json, None until it wrote one
    quiet_since: float | None = None  # launcher clock: when its running status last changed
    disk: str | None = None  # its host's disk trouble, full now or lately (launcher/hostdisk)

    @property
    def ended(self) -> bool:
        return self.state.ended

    @property
    def started(self) -> bool:
        """Ended, or its status says it trains (or trained)."""
        if self.ended:
            return True
        if self.status is None:
            return False
        state = WorkerState.of(self.status)
        return state in (WorkerState.RUNNING, WorkerState.FINISHED) or bool(self.status.get("step"))

    def failure(self, reason: str) -> Failure:
        return Failure(self.index, self.host, reason, [])

    def ending(self) -> tuple[int, str] | None:
        """How this worker ended, if it failed: (rank, reason), rank 0 for a sure cause.

        A full disk comes first in the reason: it is what a user must fix, and the exit
        (a failed save, a lost exit code) only follows from it.
        """
        if self.state is ProcessState.GONE:
            rank, how = 0, describe_exit(None)
        elif self.state is ProcessState.EXITED and self.exit_code != 0:
            killed = self.exit_code is None or self.exit_code < 0
            rank, how = 0 if killed else 1, describe_exit(self.exit_code)
        else:
            return None
        if self.disk is not None:
            return 0, f"{self.disk}; {how}"
        return rank, how


def decide(
    views: Sequence[WorkerView], now: float, started_at: float, watch: WatchOptions
) -> Failure | None:
    """The failure that ends the job now, if any: an exit or lost host first, then a worker
    that missed the start deadline, then one that went silent."""
    found = exit_failure(views)
    if found is not None or all(v.ended for v in views):
        return found
    if now - started_at > watch.start_timeout:
        found = start_failure(views, watch.start_timeout)
        if found is not None:
            return found
    return stall_failure(views, now, watch)


def exit_failure(views: Sequence[WorkerView]) -> Failure | None:
    """A worker that died, exited non-zero or was lost.

    A killed or vanished worker makes the others abort within a second or two; when both are
    seen at once, the killed one is the cause. Peers of a stopped (SIGSTOP) worker abort after
    missing its heartbeats: when only aborts are seen, the frozen worker is the cause.
    """
    found: list[tuple[int, int, str]] = []  # (rank, index, reason): rank 0 is a sure cause
    for v in views:
        if v.lost_contact is not None and not v.ended:
            found.append((0, v.index, f"lost contact: {v.lost_contact}"))
        elif (ended := v.ending()) is not None:
            found.append((ended[0], v.index, ended[1]))
    if not found:
        return None
    frozen = [v for v in views if v.state is ProcessState.FROZEN]
    if frozen and all(rank > 0 for rank, _, _ in found):
        return frozen[0].failure("was stopped (SIGSTOP?) and went silent")
    _, index, reason = min(found)
    cause = next(v for v in views if v.index == index)
    failure = cause.failure(reason)
    failure.retry = cause.disk is None
    return failure


def start_failure(views: Sequence[WorkerView], start_timeout: float) -> Failure | None:
    """After the start deadline: the first worker not training yet, one that never wrote a
    status.json before one that did."""
    late = [v for v in views if not v.started]
    if not late:
        return None
    v = next((v for v in late if v.status is None), late[0])
    what = "never reported (no status.json)" if v.status is None else "did not begin training"
    return v.failure(f"did not start within {start_timeout:g} s: {what}")


def silence_limit(status: dict[str, Any], watch: WatchOptions) -> tuple[float, str]:
    """How long a running worker may stay silent in its phase, and the phase's name.

    Silence counts against --stall-timeout only while training (or when the trainer writes no
    phase); loading data, evaluating and saving have their own, longer bound, and connecting
    to the other workers is bounded by --start-timeout.
    """
    phase = status.get("phase")
    if not isinstance(phase, str) or phase == "training":
        return watch.stall_timeout, "running"
    # The run format's bound for the phase (see runformat.phases), never below --stall-timeout.
    if phase in UNTIMED_PHASES:
        return math.inf, phase
    bound = phase_silence_bound(phase, watch.stall_timeout, watch.start_timeout)
    return max(bound if bound is not None else watch.stall_timeout, watch.stall_timeout), phase


def stall_failure(views: Sequence[WorkerView], now: float, watch: WatchOptions) -> Failure | None:
    """A running worker whose status has not changed for longer than its phase allows.

    Collective ops stall every worker at once: a frozen one is looked at first. A worker
    whose disk is full (or was a moment ago) cannot write its status: its silence proves
    nothing, and once there is room again its status moves within seconds (trainer.guard).
    Its process still shows: stopped (frozen), it is named like any other. Its peers write:
    they are judged as usual (a job held up by it holds them in a collective, silent, once
    their phase allows it: training; fit's ending is `evaluating`), and the reason names
    the worker that could not report, as the one they may be waiting for.
    """
    for v in sorted(views, key=lambda v: v.state is not ProcessState.FROZEN):
        if v.ended or v.quiet_since is None or WorkerState.of(v.status) is not WorkerState.RUNNING:
            continue
        if v.disk is not None and v.state is not ProcessState.FROZEN:
            continue
        limit, phase = silence_limit(v.status or {}, watch)
        if now - v.quiet_since > limit:
            failure = v.failure(
                f"went silent: no progress for {limit:g} s while {phase} "
                "(hung, stopped, or its host is overloaded)"
            )
            for other in views:
                if other is not v and other.disk is not None and not other.ended:
                    failure.reason += (
                        f"; worker {other.index} ({other.host}) cannot report its progress"
                        f" ({other.disk}): the others may be waiting for it"
                    )
            return failure
    return None


def may_restart(
    exit_code: int | None, restarts: int, max_restarts: int, retry: bool = True
) -> bool:
    """Restart after a failure while restarts are left, unless the worker refused its input
    (exit 2) or its host's disk was full (`retry` False): a restart would fail the same way."""
    return retry and restarts < max_restarts and exit_code != EXIT_BAD_INPUT
