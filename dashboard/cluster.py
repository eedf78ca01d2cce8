"""The per-worker table: who is where, how far along, how fast, and who has gone quiet.

Pure functions of a :class:`~dashboard.runs.Run` and what the event files said, so the
rules (lag, stalls, what a killed worker shows) are tested without a page.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dashboard.events import Arrays
from dashboard.runs import ACTIVE_STATES, Run
from runformat import PROGRESS_EXAMPLES_PER_SEC, PROGRESS_LOSS, PROGRESS_TAGS

# A worker is stalled when it has been silent this many times its usual interval between
# progress points, and at least STALL_MIN_SECONDS (writers flush in bursts, so a few
# missed intervals are normal). Before any interval is known (TensorFlow may wait for
# every worker to connect) the bar is STALL_UNKNOWN_SECONDS.
STALL_FACTOR = 10.0
STALL_MIN_SECONDS = 30.0
STALL_UNKNOWN_SECONDS = 180.0

PROGRESS_TAG = PROGRESS_LOSS
THROUGHPUT_TAG = PROGRESS_EXAMPLES_PER_SEC


@dataclass(frozen=True)
class WorkerProgress:
    """What a worker's event files say: its last point and its usual interval."""

    last_step: int | None = None
    last_wall: float | None = None
    interval: float | None = None
    examples_per_sec: float | None = None


def progress_of(series: Mapping[str, Arrays]) -> WorkerProgress:
    """Last step and wall time of the progress tags, and the median gap between points."""
    steps, walls, _ = series.get(PROGRESS_TAG) or next(
        (value for tag, value in series.items() if tag in PROGRESS_TAGS),
        (np.empty(0), np.empty(0), np.empty(0)),
    )
    rate = series.get(THROUGHPUT_TAG)
    throughput = float(rate[2][-1]) if rate is not None and len(rate[2]) else None
    if not len(steps):
        return WorkerProgress(examples_per_sec=throughput)
    recent = np.unique(walls[-64:])
    gaps = np.diff(recent)
    interval = float(np.median(gaps)) if len(gaps) else None
    return WorkerProgress(int(steps.max()), float(walls.max()), interval, throughput)


@dataclass(frozen=True)
class WorkerRow:
    """One line of the cluster table."""

    index: int
    role: str
    host: str
    address: str
    state: str
    epoch: int | None
    epochs: int | None
    step: int | None
    steps_total: int | None
    examples_per_sec: float | None
    since_update: float | None
    lag: int | None
    stalled: bool
    interval: float | None
    error: str | None = None

    @property
    def fraction(self) -> float | None:
        """Share of the run's steps done, 0..1, when the total is known."""
        if self.step is None or not self.steps_total:
            return None
        return min(1.0, max(0.0, self.step / self.steps_total))

    @property
    def shown_state(self) -> str:
        return "stalled" if self.stalled else self.state


def stall_limit(interval: float | None) -> float:
    """Seconds of silence after which a worker counts as stalled."""
    if interval is None or interval <= 0:
        return STALL_UNKNOWN_SECONDS
    return max(STALL_FACTOR * interval, STALL_MIN_SECONDS)


def _max(*values: float | None) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def worker_rows(run: Run, progress: Mapping[int, WorkerProgress], now: float) -> list[WorkerRow]:
    """One row per worker, with lag behind the fastest worker and a stalled flag."""
    failure = run.cluster.failure if run.cluster else None
    rows = []
    for index in run.indices:
        status = run.workers.get(index)
        events = progress.get(index, WorkerProgress())
        host = run.host(index)
        # No word from a worker of a live run yet: it is still starting (or never will, which
        # the stall rule below catches, counting from the start of the run).
        state = (status.state if status else None) or ("starting" if run.active else run.state)
        if failure is not None and failure.index == index:
            state = "failed"
        elif not run.active and state in ACTIVE_STATES:
            # The job is over but this worker never said so: it was stopped from outside.
            state = "stopped"
        step = _max(status.step if status else None, events.last_step)
        updated = _max(status.updated if status else None, events.last_wall) or run.started
        since = max(0.0, now - updated) if updated is not None else None
        stalled = (
            run.active
            and state in ACTIVE_STATES
            and since is not None
            and since > stall_limit(events.interval)
        )
        role = (host.role if host else None) or (status.role if status else None)
        rows.append(
            WorkerRow(
                index=index,
                role=role or ("chief" if index == 0 else "worker"),
                host=(host.name if host else None) or (status.host if status else None) or "?",
                address=host.address if host else "",
                state=state,
                epoch=status.epoch if status else None,
                epochs=(status.epochs if status else None)
                or (run.cluster.epochs if run.cluster else None),
                step=int(step) if step is not None else None,
                steps_total=status.steps_total if status else None,
                examples_per_sec=(status.examples_per_sec if status else None)
                or events.examples_per_sec,
                since_update=since,
                lag=None,
                stalled=bool(stalled),
                interval=events.interval,
                error=(status.error if status else None)
                or (failure.reason if failure and failure.index == index else None),
            )
        )
    fastest = max((row.step for row in rows if row.step is not None), default=None)
    return [
        _with_lag(row, fastest - row.step if fastest is not None and row.step is not None else None)
        for row in rows
    ]


def _with_lag(row: WorkerRow, lag: int | None) -> WorkerRow:
    return WorkerRow(**{**row.__dict__, "lag": lag})


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def rows_frame(rows: list[WorkerRow]) -> pd.DataFrame:
    """The table as shown: one row per worker, readable columns."""
    return pd.DataFrame(
        [
            {
                "worker": row.index,
                "role": row.role,
                "host": row.host,
                "address": row.address,
                "state": row.state,
                "epoch": f"{row.epoch if row.epoch is not None else '?'}/{row.epochs or '?'}",
                "step": f"{row.step if row.step is not None else '?'}/{row.steps_total or '?'}",
                "examples/s": round(row.examples_per_sec, 1)
                if row.examples_per_sec is not None
                else None,
                "last update": _ago(row.since_update),
                "lag (steps)": row.lag,
                "stalled": row.stalled,
            }
            for row in rows
        ],
        columns=[
            "worker",
            "role",
            "host",
            "address",
            "state",
            "epoch",
            "step",
            "examples/s",
            "last update",
            "lag (steps)",
            "stalled",
        ],
    )
