"""What a chart is drawn from, and what it derives per worker: one point per step, smoothed
the way TensorBoard smooths, cut to ~``LINE_POINTS`` shape-keeping points, a worker's row of
a band. Derived data is kept in the run's :class:`~dashboard.series.SeriesCache` (shared by
every viewer) until the worker's points change, so a redraw processes only the workers with
new points. Also a tag's points as a table, and that table as CSV.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from dashboard.bands import Grid, Row
from dashboard.carry import (
    LineState,
    RowState,
    extend_line_state,
    extend_row_state,
    line_state,
    new_points,
    row_state,
)
from dashboard.events import Arrays
from dashboard.series import SeriesCache, latest_per_step

if TYPE_CHECKING:
    import pandas as pd

Workers = Mapping[int, Mapping[str, Arrays]]


class Source(Protocol):
    """What a run's charts are drawn from (a :class:`dashboard.live.Snapshot`)."""

    @property
    def name(self) -> str:
        """The run's name: a chart keeps its zoom for as long as it shows the same run."""

    @property
    def workers(self) -> Workers:
        """Every worker's series by tag."""

    @property
    def chief(self) -> Mapping[str, Mapping[str, Arrays]]:
        """The chief's Keras logs by split (train, validation)."""

    @property
    def lines(self) -> SeriesCache:
        """Where what is derived per worker is kept until its points change."""


def ema(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: an exponential moving average divided by 1 - weight**n.

    The division (debiasing) keeps the first points from being pulled towards zero.
    Non-finite values pass through untouched and do not disturb the average, as in
    TensorBoard. pandas' ``ewm(adjust=True)`` computes exactly this weighted mean.
    """
    import pandas as pd  # lazily: 1-3 s to import, not before the first chart (app.py)

    values = np.asarray(values, dtype=np.float64)
    weight = min(max(weight, 0.0), 0.999)
    if weight == 0.0 or not len(values):
        return values.copy()
    out = values.copy()
    finite = np.isfinite(values)
    if finite.any():
        smoothed = pd.Series(values[finite]).ewm(alpha=1.0 - weight, adjust=True).mean()
        out[finite] = smoothed.to_numpy()
    return out


def scalar_frame(
    series_by_worker: Mapping[int, Mapping[str, Arrays]], tag: str, start: float | None = None
) -> pd.DataFrame:
    """One tag of every worker as rows (worker, step, wall, relative, value).

    A step seen twice (a worker restarted and redid it) keeps its latest value.
    """
    import pandas as pd  # lazily: 1-3 s to import, not before the first chart (app.py)

    parts = []
    for index, series in sorted(series_by_worker.items()):
        arrays = series.get(tag)
        if arrays is None or not len(arrays[0]):
            continue
        steps, walls, values = latest_per_step(*arrays)
        parts.append((np.full(len(steps), index), steps, walls, values))
    if not parts:
        return pd.DataFrame(columns=["worker", "step", "wall", "relative", "value"])
    worker, steps, walls, values = (np.concatenate(column) for column in zip(*parts, strict=True))
    frame = pd.DataFrame({"worker": worker, "step": steps, "wall": walls, "value": values})
    origin = start if start is not None else float(frame["wall"].min())
    frame["relative"] = frame["wall"] - origin
    return frame


def csv_bytes(frame: pd.DataFrame) -> bytes:
    """A chart's data as CSV: worker, step, wall time (unix s), seconds since start, value."""
    out = io.StringIO()
    columns = [c for c in ("run", "worker", "step", "wall", "relative", "value") if c in frame]
    frame.to_csv(out, columns=columns, index=False, float_format="%.8g")
    return out.getvalue().encode("utf-8")


@dataclass(frozen=True)
class Extent:
    """How many points (one per step) a worker has of a tag, over which steps and times."""

    points: int
    first_step: int
    last_step: int
    first_wall: float


def extent_of(arrays: Arrays) -> Extent:
    steps, walls, _ = latest_per_step(*arrays)
    return Extent(len(steps), int(steps[0]), int(steps[-1]), float(np.min(walls)))


@dataclass(frozen=True)
class Line:
    """One worker's line as drawn: one point per step (the latest), smoothed, cut to
    LINE_POINTS shape-keeping points; with smoothing also its raw points, cut the same way."""

    steps: np.ndarray
    walls: np.ndarray
    values: np.ndarray
    raw: Arrays | None
    # What lets the line take new points without a rebuild (dashboard.series).
    state: LineState | None = None


def line_of(arrays: Arrays, smoothing: float) -> Line:
    steps, walls, values = latest_per_step(*arrays)
    return _drawn(steps, walls, line_state(steps, values, ema(values, smoothing), smoothing))


def _drawn(steps: np.ndarray, walls: np.ndarray, state: LineState) -> Line:
    keep, drawn = state.smooth.indices_and_values()
    raw = None
    if state.raw is not None:
        raw_keep, raw_values = state.raw.indices_and_values()
        raw = (steps[raw_keep], walls[raw_keep], raw_values)
    return Line(steps[keep], walls[keep], drawn, raw, state)


def extend_line(line: Line, arrays: Arrays, before: int) -> Line | None:
    """The line after the points past `before` (None: rebuild it, see dashboard.series)."""
    state = line.state
    if state is None or state.count != before:  # steps logged twice: indices moved
        return None
    new = new_points(arrays, before, state.last_step)
    extended = None if new is None else extend_line_state(state, new[0], new[2])
    return None if extended is None else _drawn(arrays[0], arrays[1], extended[0])


def extend_extent(extent: Extent, arrays: Arrays, before: int) -> Extent | None:
    new = new_points(arrays, before, extent.last_step)
    if new is None or not len(new[0]):
        return None if new is None else extent
    walls = new[1]
    wall = min(extent.first_wall, float(walls[0]) if len(walls) == 1 else float(walls.min()))
    return Extent(extent.points + len(new[0]), extent.first_step, int(new[0][-1]), wall)


def row_of(arrays: Arrays, smoothing: float, grid: Grid) -> RowState:
    steps, _, values = latest_per_step(*arrays)
    return row_state(steps, ema(values, smoothing), values, grid, smoothing)


def extend_row(row: RowState, arrays: Arrays, before: int, grid: Grid) -> RowState | None:
    new = new_points(arrays, before, row.last_step)
    return None if new is None else extend_row_state(row, new[0], new[2], grid)


@dataclass(frozen=True)
class WorkerLines:
    """One tag of every worker that has points of it; what is derived per worker comes
    from the cache (built on a miss)."""

    tag: str
    arrays: dict[int, Arrays]
    cache: SeriesCache

    def extent(self, index: int) -> Extent:
        arrays = self.arrays[index]
        return self.cache.get(
            ("extent", index, self.tag),
            arrays,
            lambda: extent_of(arrays),
            extend=lambda old, before: extend_extent(old, arrays, before),
        )

    def line(self, index: int, smoothing: float) -> Line:
        arrays = self.arrays[index]
        key = ("line", index, self.tag, smoothing)
        return self.cache.get(
            key,
            arrays,
            lambda: line_of(arrays, smoothing),
            extend=lambda old, before: extend_line(old, arrays, before),
        )

    def row(self, index: int, smoothing: float, grid: Grid) -> Row:
        """The worker's row of a band on `grid` (kept while the grid stays the same)."""
        arrays = self.arrays[index]
        key = ("row", index, self.tag, smoothing)
        return self.cache.get(
            key,
            arrays,
            lambda: row_of(arrays, smoothing, grid),
            params=grid,
            extend=lambda old, before: extend_row(old, arrays, before, grid),
        ).row


def worker_lines(source: Source, tag: str) -> WorkerLines:
    """The workers with points of `tag`, by index, with the run's cache."""
    arrays = {
        index: series[tag]
        for index, series in sorted(source.workers.items())
        if tag in series and len(series[tag][0])
    }
    return WorkerLines(tag, arrays, source.lines)
