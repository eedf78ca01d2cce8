"""The failure decision as a table: what the launcher saw of each worker, the clock, and which
worker it names as the cause (pure logic, no processes)."""

from __future__ import annotations

from typing import Any

import pytest

from launcher.failure import WorkerView, decide, silence_limit
from launcher.options import WatchOptions
from launcher.worker import Poll, ProcessState, WorkerState
from runformat import WORKER_STATES

ALIVE, FROZEN, EXITED, GONE, PENDING = (
    ProcessState.ALIVE,
    ProcessState.FROZEN,
    ProcessState.EXITED,
    ProcessState.GONE,
    ProcessState.PENDING,
)
WATCH = WatchOptions(start_timeout=120, stall_timeout=300)
RUNNING: dict[str, Any] = {"state": "running", "step": 40}


def w(
    index: int,
    state: ProcessState = ALIVE,
    code: int | None = None,
    status: dict[str, Any] | None = RUNNING,
    quiet: float | None = 0.0,
    lost: str | None = None,
    disk: str | None = None,
) -> WorkerView:
    return WorkerView(index, f"h{index}", state, code, lost, status, quiet, disk)


CASES = [
    # (name, views, now, expected (index, reason start) or None)
    ("all training", [w(0), w(1)], 10, None),
    ("all finished", [w(0, EXITED, 0), w(1, EXITED, 0)], 10, None),
    ("killed", [w(0), w(1, EXITED, -9)], 10, (1, "killed by SIGKILL")),
    ("killed beats its aborted peer", [w(0, EXITED, 1), w(1, EXITED, -9)], 10, (1, "killed")),
    (
        "lowest of two plain failures",
        [w(0, EXITED, 0), w(1, EXITED, 2), w(2, EXITED, 1)],
        10,
        (1, "exited with code 2"),
    ),
    ("terminated", [w(0, EXITED, -15), w(1, EXITED, 1)], 10, (0, "killed by SIGTERM")),
    ("vanished without exit code", [w(0), w(1, GONE)], 10, (1, "died without an exit code")),
    ("unreadable exit code", [w(0), w(1, EXITED, None)], 10, (1, "died without an exit code")),
    ("frozen, peers aborted", [w(0, EXITED, 1), w(1, FROZEN)], 10, (1, "was stopped (SIGSTOP?)")),
    ("frozen, but a peer was killed", [w(0, EXITED, -9), w(1, FROZEN)], 10, (0, "killed")),
    ("frozen, nobody aborted yet", [w(0), w(1, FROZEN)], 10, None),
    (
        "lost contact",
        [w(0), w(1, lost="connection reset")],
        10,
        (1, "lost contact: connection reset"),
    ),
    ("lost contact after it ended is not a failure", [w(0), w(1, EXITED, 0, lost="x")], 10, None),
    (
        "never started by the deadline",
        [w(0), w(1, PENDING, status=None, quiet=None)],
        121,
        (1, "did not start within 120 s: never reported (no status.json)"),
    ),
    (
        "before the deadline, waiting is fine",
        [w(0), w(1, PENDING, status=None, quiet=None)],
        119,
        None,
    ),
    (
        "started but not training by the deadline",
        [w(0), w(1, status={"state": "starting", "step": 0}, quiet=None)],
        121,
        (1, "did not start within 120 s: did not begin training"),
    ),
    (
        "a silent worker is named before one that reported",
        [w(0, status={"state": "starting"}, quiet=None), w(1, status=None, quiet=None)],
        121,
        (1, "did not start within 120 s: never reported"),
    ),
    (
        "stalled in training",
        [w(0, quiet=100), w(1, quiet=0)],
        301,
        (1, "went silent: no progress for 300 s while running"),
    ),
    (
        "stalled with a phase",
        [w(0, quiet=100), w(1, status={**RUNNING, "phase": "training"})],
        301,
        (1, "went silent: no progress for 300 s while running"),
    ),
    (
        "silent while its disk is full: it cannot write its status",
        [w(0, quiet=900), w(1, quiet=0, disk="no space left in /r (0 MB free)")],
        1000,
        None,
    ),
    (
        "stopped on a full disk: its process shows it",
        [w(0, quiet=250), w(1, FROZEN, quiet=0, disk="no space left in /r (0 MB free)")],
        301,
        (1, "went silent: no progress for 300 s"),
    ),
    (
        "peers held by a worker that cannot report: named, with it",
        [w(0, quiet=0), w(1, quiet=0, disk="no space left in /r (0 MB free)")],
        301,
        (
            0,
            "went silent: no progress for 300 s while running (hung, stopped, or its host is "
            "overloaded); worker 1 (h1) cannot report its progress (no space left in /r (0 MB "
            "free)): the others may be waiting for it",
        ),
    ),
    (
        "peers waiting at fit's end for a worker that cannot report",
        [
            w(0, quiet=0, status={**RUNNING, "phase": "evaluating"}),
            w(1, quiet=0, status={**RUNNING, "phase": "training"}, disk="no space left"),
        ],
        500,
        None,
    ),
    (
        "silent once its disk has room again",
        [w(0, quiet=900), w(1, quiet=0)],
        1000,
        (1, "went silent"),
    ),
    (
        "frozen and silent is named first",
        [w(0, quiet=0), w(1, FROZEN, quiet=0)],
        301,
        (1, "went silent"),
    ),
    (
        "evaluating within its bound",
        [w(0, quiet=500), w(1, status={**RUNNING, "phase": "evaluating"})],
        500,
        None,
    ),
    (
        "saving past its bound",
        [w(0, quiet=700), w(1, status={**RUNNING, "phase": "saving"})],
        601,
        (1, "went silent: no progress for 600 s while saving"),
    ),
    (
        "connecting is bounded by the start timeout only when longer",
        [w(0, quiet=290), w(1, status={**RUNNING, "phase": "connecting"})],
        290,
        None,
    ),
    (
        "not running yet: silence does not count",
        [w(0, quiet=900), w(1, status={"state": "starting", "step": 5}, quiet=None)],
        901,
        None,
    ),
]


@pytest.mark.parametrize(
    ("views", "now", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_decide(views: list[WorkerView], now: float, expected: tuple[int, str] | None) -> None:
    failure = decide(views, now, 0.0, WATCH)
    if expected is None:
        assert failure is None
    else:
        assert failure is not None
        assert (failure.index, failure.host) == (expected[0], f"h{expected[0]}")
        assert failure.reason.startswith(expected[1]), failure.reason


@pytest.mark.parametrize(
    ("phase", "limit"),
    [
        (None, 300),
        ("training", 300),
        ("evaluating", 600),
        ("loading_data", 600),
        ("saving", 600),
        ("connecting", 300),
        ("ended", 300),
        ("running", float("inf")),
    ],
)
def test_silence_limit(phase: str | None, limit: float) -> None:
    status = {"state": "running"} if phase is None else {"state": "running", "phase": phase}
    assert silence_limit(status, WATCH)[0] == limit


@pytest.mark.parametrize(
    ("text", "state", "code"),
    [
        ("exit 0", EXITED, 0),
        ("exit 137\n", EXITED, -9),
        ("exit 2", EXITED, 2),
        ("exit ", EXITED, None),
        ("alive", ALIVE, None),
        ("frozen", FROZEN, None),
        ("gone", GONE, None),
        ("pending", PENDING, None),
        ("", PENDING, None),
    ],
)
def test_poll_is_parsed_in_one_place(text: str, state: ProcessState, code: int | None) -> None:
    assert Poll.parse(text) == Poll(state, code)


def test_the_launchers_worker_states_are_the_run_formats() -> None:
    """The enum is how the launcher reads `state`; the run format says what may be written."""
    assert {s.value for s in WorkerState} - {WorkerState.UNKNOWN.value} == set(WORKER_STATES)
