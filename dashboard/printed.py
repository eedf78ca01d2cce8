"""The progress a user's program printed, as the page saw it: the charts, ETA and table of a
script run without ClusterProgress.

Such a program writes no `progress/*` events. Its wrapper reads the bar Keras prints and
keeps each worker's status.json at the newest epoch, step, loss and accuracy (at most once a
second); the file holds no history. The page reads every status.json at each refresh
(every few seconds while it is open), and a :class:`StatusTrail` keeps the samples it saw,
across reruns and shared by every viewer, as points of the tags the callback would have
written (`progress/loss`, `progress/accuracy`): the same chart, CSV and ETA code draws them.
So the lines start when a page first watched the run and have its refresh's resolution; the
newest values and every worker's epoch and step are in status.json itself, seen or not.

Keeping them costs a few hundred bytes per worker and sample (bounded: older points are
thinned, as for events), which is why the page keeps them instead of re-reading the bars
in worker.log, whose size a program decides.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping

import numpy as np

from dashboard.events import Arrays
from dashboard.live import Snapshot
from dashboard.runs import Run, WorkerStatus
from dashboard.series import PointBuffer, SeriesCache
from runformat import PROGRESS_ACCURACY, PROGRESS_LOSS, PROGRESS_TAGS

TRAIL_POINTS = 20_000
"""Samples kept per worker and tag (about 16 h at the page's 3 s pace), then thinned."""
FIRST_ROOM = 16
"""Room a worker's buffer starts with: a thousand idle workers cost little."""

PRINTED: tuple[tuple[str, Callable[[WorkerStatus], float | None]], ...] = (
    (PROGRESS_LOSS, lambda status: status.loss),
    (PROGRESS_ACCURACY, lambda status: status.accuracy),
)
"""The status.json fields the wrapper fills from Keras' bar, under the tag of their chart."""
PRINTED_TAGS = frozenset(tag for tag, _ in PRINTED)


def reports_progress(workers: Mapping[int, Mapping[str, Arrays]]) -> bool:
    """Whether any worker's events hold progress points (the trainer, or ClusterProgress)."""
    return any(
        len(series[tag][0]) for series in workers.values() for tag in PROGRESS_TAGS if tag in series
    )


def shows_printed(run: Run, snapshot: Snapshot) -> bool:
    """A script run whose workers write no progress events (the whole of them read): what
    the page knows of its training is what Keras printed. A worker whose status has a
    throughput runs ClusterProgress (Keras prints none), whose events may not be flushed yet."""
    if not run.program.is_script or snapshot.loading is not None:
        return False
    if any(status.examples_per_sec is not None for status in run.workers.values()):
        return False
    return not reports_progress(snapshot.workers)


def has_line(seen: Snapshot, tag: str) -> bool:
    """Whether some worker's samples of `tag` span two steps or more: a line to draw (a run
    the page first saw once it had ended has one sample, a point on no line)."""
    return any(
        tag in series and len(series[tag][0]) > 1 and series[tag][0].min() < series[tag][0].max()
        for series in seen.workers.values()
    )


def latest(run: Run) -> WorkerStatus | None:
    """The status that printed progress most recently (the chief first on a tie)."""
    printed = [s for s in run.workers.values() if s.step is not None and s.updated is not None]
    return max(printed, key=lambda s: (s.updated or 0.0, -s.index), default=None)


class StatusTrail:
    """The status.json samples of one run's workers the page has seen, as chartable points.

    Shared by every viewer and live part of the run (they record the same files: a sample is
    kept once per worker and `updated`), so it locks itself. :meth:`record` returns a
    :class:`Snapshot` that stays the same object until a new sample arrives (its figures are
    built once per sample, dashboard.live).
    """

    def __init__(self, name: str) -> None:
        self._lock = threading.Lock()
        self._buffers: dict[int, dict[str, PointBuffer]] = {}
        self._seen: dict[int, float] = {}
        self._lines = SeriesCache()
        self._version = 0
        self._snapshot = Snapshot(name=name, lines=self._lines)

    def record(
        self,
        statuses: Mapping[int, WorkerStatus],
        clock: Callable[[int, float | None], float | None] = lambda index, stamp: stamp,
    ) -> Snapshot:
        """Keep each worker's sample if it is newer than the last one kept; `clock` puts a
        worker's `updated` on our clock (Run.local_time). Samples without a step (Keras did
        not say how far it is) are not points."""
        with self._lock:
            changed = False
            for index, status in statuses.items():
                if status.step is None or status.updated is None:
                    continue
                if status.updated <= self._seen.get(index, -math.inf):
                    continue
                self._seen[index] = status.updated
                wall = clock(index, status.updated)
                if wall is None:
                    continue
                buffers = self._buffers.setdefault(index, {})
                for tag, value_of in PRINTED:
                    value = value_of(status)
                    if value is None:
                        continue
                    if tag not in buffers:
                        buffers[tag] = PointBuffer(TRAIL_POINTS, first=FIRST_ROOM)
                    buffers[tag].extend(
                        np.array([status.step]), np.array([wall]), np.array([value])
                    )
                    changed = True
            if changed:
                self._version += 1
                self._snapshot = Snapshot(
                    name=self._snapshot.name,
                    workers={
                        index: {tag: buffer.arrays() for tag, buffer in buffers.items()}
                        for index, buffers in sorted(self._buffers.items())
                    },
                    version=self._version,
                    lines=self._lines,
                )
            return self._snapshot
