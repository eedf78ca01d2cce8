"""The per-worker rows: who is where, in which phase, how far along, how fast, who went quiet,
who caused a failure and who was only aborted after it; plus the run's ETA and throughput.

Pure functions of a :class:`~dashboard.runs.Run` and what the event files said, so the
rules are tested without a page.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from dashboard import text
from dashboard.events import Arrays
from dashboard.runs import ACTIVE_STATES, Run, WorkerStatus
from runformat import (
    DEFAULT_PHASE_SILENCE,
    PROGRESS_EXAMPLES_PER_SEC,
    PROGRESS_LOSS,
    PROGRESS_TAGS,
    SYSTEM_CPU_PERCENT,
    SYSTEM_MEMORY_MB,
    UNTIMED_PHASES,
)

if TYPE_CHECKING:
    import pandas as pd

# A training worker is stalled when it has been silent this many times its usual interval
# between progress points, and at least STALL_MIN_SECONDS (writers flush in bursts, so a few
# missed intervals are normal). Before any interval is known (TensorFlow may wait for
# every worker to connect) the bar is STALL_UNKNOWN_SECONDS.
STALL_FACTOR = 10.0
STALL_MIN_SECONDS = 30.0
STALL_UNKNOWN_SECONDS = 180.0
# Evaluating, saving or loading data say nothing for a while: silent that long is normal.
PHASE_SILENCE_SECONDS = DEFAULT_PHASE_SILENCE
QUIET_PHASES = frozenset({"loading_data", "evaluating", "saving"})
# The step rate behind the ETA is measured over this many recent seconds of progress.
ETA_WINDOW_SECONDS = 60.0

PROGRESS_TAG = PROGRESS_LOSS
THROUGHPUT_TAG = PROGRESS_EXAMPLES_PER_SEC


@dataclass(frozen=True)
class WorkerProgress:
    """What a worker's event files say: its last point and its usual interval."""

    last_step: int | None = None
    last_wall: float | None = None
    interval: float | None = None
    examples_per_sec: float | None = None
    cpu_percent: float | None = None
    memory_mb: float | None = None


def progress_of(series: Mapping[str, Arrays]) -> WorkerProgress:
    """Last step and wall time of the progress tags, and the median gap between points."""
    steps, walls, _ = series.get(PROGRESS_TAG) or next(
        (value for tag, value in series.items() if tag in PROGRESS_TAGS),
        (np.empty(0), np.empty(0), np.empty(0)),
    )
    throughput, cpu, memory = (
        _latest(series, tag) for tag in (THROUGHPUT_TAG, SYSTEM_CPU_PERCENT, SYSTEM_MEMORY_MB)
    )
    if not len(steps):
        return WorkerProgress(examples_per_sec=throughput, cpu_percent=cpu, memory_mb=memory)
    recent = np.unique(walls[-64:])
    gaps = np.diff(recent)
    interval = float(np.median(gaps)) if len(gaps) else None
    return WorkerProgress(int(steps.max()), float(walls.max()), interval, throughput, cpu, memory)


def _latest(series: Mapping[str, Arrays], tag: str) -> float | None:
    arrays = series.get(tag)
    return float(arrays[2][-1]) if arrays is not None and len(arrays[2]) else None


@dataclass(frozen=True)
class WorkerRow:
    """One worker as the page shows it.

    ``state`` is the worker's own state, or what the launcher's view makes of it: ``failed``
    for the worker that caused a failure (``cause``), ``aborted`` for a worker that failed
    after it, ``stopped`` for one that never said it ended.
    """

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
    phase: str | None = None
    in_phase: float | None = None
    cause: bool = False
    cpu_percent: float | None = None
    memory_mb: float | None = None
    updated: float | None = None
    disk: str | None = None
    loss: float | None = None
    accuracy: float | None = None

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
    """Seconds without step progress after which a training worker counts as stalled."""
    if interval is None or interval <= 0:
        return STALL_UNKNOWN_SECONDS
    return max(STALL_FACTOR * interval, STALL_MIN_SECONDS)


def silence_bound(phase: str | None, interval: float | None, at_last_step: bool) -> float | None:
    """How long a worker in `phase` may be silent; None: never judged (it has ended, or it
    runs a program that reports no steps).

    Only training is judged by its step rate. A worker of a run written before phases
    existed that has done every step is evaluating or saving: it gets their bound.
    """
    if phase == "ended" or phase in UNTIMED_PHASES:
        return None
    if phase in QUIET_PHASES or (phase is None and at_last_step):
        return PHASE_SILENCE_SECONDS
    if phase in ("starting", "connecting"):
        return STALL_UNKNOWN_SECONDS
    return stall_limit(interval)


def _max(*values: float | None) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _first(*values: float | None) -> float | None:
    return next((value for value in values if value is not None), None)


def _system(status: WorkerStatus | None, name: str) -> float | None:
    """One figure of the worker's latest system sample (status.json `system`), if any."""
    system = status.system if status is not None else None
    value = getattr(system, name, None) if system is not None else None
    return float(value) if isinstance(value, int | float) else None


def _state(run: Run, index: int, status: WorkerStatus | None) -> tuple[str, bool]:
    """The state shown for one worker, and whether it caused the run's failure."""
    failure = run.cluster.failure if run.cluster else None
    state = (status.state if status else None) or ("starting" if run.active else run.state)
    if failure is not None and failure.index == index:
        return "failed", True
    if failure is not None and failure.index is not None and state == "failed":
        return "aborted", False
    if not run.active and state in ACTIVE_STATES:
        # The job is over but this worker never said so: it was stopped from outside.
        return "stopped", False
    return state, False


def worker_rows(run: Run, progress: Mapping[int, WorkerProgress], now: float) -> list[WorkerRow]:
    """One row per worker, with lag behind the fastest worker and a stalled flag."""
    failure = run.cluster.failure if run.cluster else None
    rows = []
    for index in run.indices:
        status = run.workers.get(index)
        events = progress.get(index, WorkerProgress())
        host = run.host(index)
        state, cause = _state(run, index, status)
        step = _max(status.step if status else None, events.last_step)
        # The host's times on our clock (`progress` comes from events already put on it): a
        # host whose clock is off never looks silent for an hour, nor updated in the future.
        updated = _max(run.local_time(index, status.updated if status else None), events.last_wall)
        updated = min(updated, now) if updated is not None else run.started
        since = max(0.0, now - updated) if updated is not None else None
        phase = status.phase if status else None
        phase_since = run.local_time(index, status.phase_since if status else None)
        in_phase = max(0.0, now - phase_since) if phase_since is not None else None
        steps_total = status.steps_total if status else None
        at_last_step = bool(steps_total and step is not None and step >= steps_total)
        bound = silence_bound(phase, events.interval, at_last_step)
        silence = in_phase if phase in QUIET_PHASES and in_phase is not None else since
        stalled = (
            run.active
            and state in ACTIVE_STATES
            and bound is not None
            and silence is not None
            and silence > bound
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
                steps_total=steps_total,
                examples_per_sec=(status.examples_per_sec if status else None)
                or events.examples_per_sec,
                since_update=since,
                lag=None,
                stalled=bool(stalled),
                interval=events.interval,
                error=(status.error if status else None)
                or (failure.reason if failure and failure.index == index else None),
                phase=phase,
                in_phase=in_phase,
                cause=cause,
                cpu_percent=_first(_system(status, "cpu_percent"), events.cpu_percent),
                memory_mb=_first(_system(status, "memory_mb"), events.memory_mb),
                updated=updated,
                disk=str(run.disks[index]) if index in run.disks else None,
                loss=status.loss if status else None,
                accuracy=status.accuracy if status else None,
            )
        )
    fastest = max((row.step for row in rows if row.step is not None), default=None)
    return [
        replace(row, lag=None if fastest is None or row.step is None else fastest - row.step)
        for row in rows
    ]


def slowest_epoch(rows: Sequence[WorkerRow]) -> tuple[int | None, int | None]:
    """(epochs completed by the slowest worker, epochs in all): the run's epoch."""
    done = [row.epoch for row in rows if row.epoch is not None]
    total = next((row.epochs for row in rows if row.epochs), None)
    return (min(done) if done else None), total


def phase_summary(rows: Sequence[WorkerRow]) -> tuple[str, str]:
    """(the phase most workers are in, 'training 14 · evaluating 2' or '' when all agree).

    A worker that does not say its phase (runs from before phases) counts by its state.
    """
    counts = Counter((row.phase or row.shown_state).replace("_", " ") for row in rows)
    if not counts:
        return text.MISSING, ""
    ranked = counts.most_common()
    detail = " · ".join(f"{name} {n}" for name, n in ranked) if len(ranked) > 1 else ""
    return ranked[0][0], detail


def total_throughput(rows: Sequence[WorkerRow]) -> float | None:
    """Examples per second of the whole cluster: the sum of the working workers' latest."""
    rates = [
        row.examples_per_sec
        for row in rows
        if row.examples_per_sec is not None and row.state in ACTIVE_STATES
    ]
    return sum(rates) if rates else None


def eta_seconds(
    series: Mapping[str, Arrays], steps_total: int | None, window: float = ETA_WINDOW_SECONDS
) -> float | None:
    """Seconds left at the step rate of the last `window` seconds of progress points."""
    arrays = series.get(PROGRESS_TAG)
    if arrays is None or not steps_total:
        return None
    steps, walls, _ = arrays
    if len(steps) < 2:
        return None
    recent = walls >= walls[-1] - window
    if recent.sum() < 2:
        recent[-2:] = True
    step_span = float(steps[recent][-1] - steps[recent][0])
    wall_span = float(walls[recent][-1] - walls[recent][0])
    if step_span <= 0 or wall_span <= 0:
        return None
    left = max(0, steps_total - int(steps[-1]) - 1)
    return left * wall_span / step_span


def rows_frame(rows: list[WorkerRow]) -> pd.DataFrame:
    """The table as shown: one row per worker, every cell text, '-' where unknown."""
    import pandas as pd  # lazily: 1-3 s to import, not before the first chart (app.py)

    return pd.DataFrame(
        [
            {
                "worker": row.index,
                "role": row.role,
                "host": text.clip(row.host, 80),
                "address": text.clip(row.address, 80) or text.MISSING,
                "state": row.state + (" (cause)" if row.cause else ""),
                "phase": (row.phase or text.MISSING).replace("_", " "),
                "epoch": text.of_total(row.epoch, row.epochs),
                "step": text.of_total(row.step, row.steps_total),
                "loss": text.number(row.loss, 4),
                "accuracy": text.number(row.accuracy, 4),
                "examples/s": text.number(row.examples_per_sec),
                "CPU %": text.number(row.cpu_percent, 0),
                "memory MB": text.number(row.memory_mb, 0),
                "last update": text.ago(row.since_update),
                "lag (steps)": text.MISSING if row.lag is None else str(row.lag),
                "stalled": row.stalled,
                "disk": text.clip(row.disk, 120) if row.disk else text.MISSING,
                "error": text.clip(row.error, 200) if row.error else text.MISSING,
            }
            for row in rows
        ],
        columns=[
            "worker",
            "role",
            "host",
            "address",
            "state",
            "phase",
            "epoch",
            "step",
            "loss",
            "accuracy",
            "examples/s",
            "CPU %",
            "memory MB",
            "last update",
            "lag (steps)",
            "stalled",
            "disk",
            "error",
        ],
    )


def run_rows(run: Run, workers: Mapping[int, Mapping[str, Arrays]], now: float) -> list[WorkerRow]:
    """The run's rows from its status files and what each worker's events said."""
    return worker_rows(run, {index: progress_of(series) for index, series in workers.items()}, now)


def run_eta(
    run: Run, workers: Mapping[int, Mapping[str, Arrays]], rows: Sequence[WorkerRow]
) -> float | None:
    """Seconds left for an active run, at the chief's (the lowest index's) recent step rate:
    `workers` are the series of its events, or of the progress its program printed
    (dashboard.printed, under the same tags)."""
    if not run.active or not workers:
        return None
    total = next((row.steps_total for row in rows if row.steps_total), None)
    return eta_seconds(workers[min(workers)], total)
