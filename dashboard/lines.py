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

from dashboard.events import Arrays
from dashboard.series import (
    LINE_POINTS,
    Grid,
    Row,
    SeriesCache,
    band_row,
    downsample,
    latest_per_step,
)

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


def line_of(arrays: Arrays, smoothing: float) -> Line:
    steps, walls, values = latest_per_step(*arrays)
    smooth = ema(values, smoothing)
    keep = downsample(smooth, LINE_POINTS)
    raw = None
    if smoothing > 0:
        raw_keep = downsample(values, LINE_POINTS)
        raw = (steps[raw_keep], walls[raw_keep], values[raw_keep])
    return Line(steps[keep], walls[keep], smooth[keep], raw)


def _smoothed(arrays: Arrays, smoothing: float) -> tuple[np.ndarray, np.ndarray]:
    steps, _, values = latest_per_step(*arrays)
    return steps, ema(values, smoothing)


@dataclass(frozen=True)
class WorkerLines:
    """One tag of every worker that has points of it; what is derived per worker comes
    from the cache (built on a miss)."""

    tag: str
    arrays: dict[int, Arrays]
    cache: SeriesCache

    def extent(self, index: int) -> Extent:
        arrays = self.arrays[index]
        return self.cache.get(("extent", index, self.tag), arrays, lambda: extent_of(arrays))

    def line(self, index: int, smoothing: float) -> Line:
        arrays = self.arrays[index]
        key = ("line", index, self.tag, smoothing)
        return self.cache.get(key, arrays, lambda: line_of(arrays, smoothing))

    def row(self, index: int, smoothing: float, grid: Grid) -> Row:
        """The worker's row of a band on `grid` (kept while the grid stays the same)."""
        arrays = self.arrays[index]
        key = ("row", index, self.tag, smoothing)
        return self.cache.get(
            key, arrays, lambda: band_row(*_smoothed(arrays, smoothing), grid), params=grid
        )


def worker_lines(source: Source, tag: str) -> WorkerLines:
    """The workers with points of `tag`, by index, with the run's cache."""
    arrays = {
        index: series[tag]
        for index, series in sorted(source.workers.items())
        if tag in series and len(series[tag][0])
    }
    return WorkerLines(tag, arrays, source.lines)
