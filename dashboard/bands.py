"""Many workers' lines as one min/median/max band on a common step grid, with the workers that
stray from the crowd named: what a chart draws above ``BAND_ABOVE_WORKERS`` workers. Each
worker's row depends on its own points only (power-of-two, aligned buckets), so a redraw
redoes only the rows of workers with new points (dashboard.carry extends them).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from dashboard.series import LINE_POINTS

# Above this many workers, per-worker metrics are drawn as a band with outliers named.
BAND_ABOVE_WORKERS = 8


@dataclass(frozen=True)
class Band:
    """Many workers' lines as one band on a common step grid, plus the workers that stray.

    ``low``/``median``/``high`` are the minimum, median and maximum across workers at each
    grid step (NaN where no worker has data); ``outliers`` are worker indices, most
    deviant first, whose line lies outside the crowd for a sustained part of the run.
    """

    steps: np.ndarray
    low: np.ndarray
    median: np.ndarray
    high: np.ndarray
    outliers: tuple[int, ...]
    workers: int


@dataclass(frozen=True)
class Grid:
    """A band's step buckets: ``width`` steps each, bucket ``b`` holding steps from
    ``b * width`` to ``(b + 1) * width - 1``.

    :meth:`over` picks the smallest power of two that cuts a range into at most ``points``
    buckets: it changes only when the run's span doubles, and as the buckets are aligned to
    multiples of it, a worker's row depends on that worker's points alone. A new step of one
    worker thus changes that worker's row only (see :class:`SeriesCache`).
    """

    width: int

    @classmethod
    def over(cls, first: int, last: int, points: int = LINE_POINTS) -> Grid:
        width = 1
        while last // width - first // width + 1 > points:
            width *= 2
        return cls(width)

    def steps(self, first_bucket: int, buckets: int) -> np.ndarray:
        """Each bucket's middle step (the step itself when every step is a bucket)."""
        return (first_bucket + np.arange(buckets)) * self.width + (self.width - 1) / 2


@dataclass(frozen=True)
class Row:
    """One worker's line on a band's grid: the mean of its points in each bucket from
    bucket ``first`` on; buckets it logged nothing in are interpolated from their
    neighbours (outside its own range the band has no value of it)."""

    first: int
    means: np.ndarray


def band_row(steps: np.ndarray, values: np.ndarray, grid: Grid) -> Row:
    """One worker's :class:`Row` on `grid` (it depends on this worker's points only)."""
    steps = np.asarray(steps)
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    steps, values = steps[finite], values[finite]
    if not len(steps):
        return Row(0, np.empty(0))
    slot = steps // grid.width
    first = int(slot.min())
    slot = slot - first
    buckets = int(slot.max()) + 1
    sums = np.bincount(slot, weights=values, minlength=buckets)
    counts = np.bincount(slot, minlength=buckets)
    filled = counts > 0
    means = np.divide(sums, counts, out=np.full(buckets, np.nan), where=filled)
    have = np.flatnonzero(filled)
    return Row(first, np.interp(np.arange(buckets), have, means[have]))


def band(
    lines: Mapping[int, tuple[np.ndarray, np.ndarray]],
    points: int = LINE_POINTS,
    threshold: float = 3.5,
    sustained: float = 0.1,
    max_outliers: int = 3,
) -> Band:
    """The min/median/max band of per-worker (steps, values) lines and their outliers.

    Steps are cut into at most ``points`` buckets over the union of every worker's range
    (see :class:`Grid`, each worker's row :func:`band_row`); the band and its outliers are
    :func:`band_of_rows`.
    """
    order = sorted(index for index, (steps, _) in lines.items() if len(steps))
    if not order:
        return band_of_rows({}, Grid(1))
    first = min(int(np.min(lines[i][0])) for i in order)
    last = max(int(np.max(lines[i][0])) for i in order)
    grid = Grid.over(first, last, points)
    rows = {index: band_row(*lines[index], grid) for index in order}
    return band_of_rows(rows, grid, threshold, sustained, max_outliers)


def band_of_rows(
    rows: Mapping[int, Row],
    grid: Grid,
    threshold: float = 3.5,
    sustained: float = 0.1,
    max_outliers: int = 3,
) -> Band:
    """The band of workers' rows on one grid (see :func:`band_row`), and its outliers.

    ``low``/``median``/``high`` run over the buckets any worker has a value in.

    A worker is an outlier when its distance from the median exceeds ``threshold`` robust
    deviations (1.4826 x the median absolute deviation across workers, floored at 0.1 % of
    the median) in at least ``sustained`` of the buckets it covers; at most
    ``max_outliers`` are named, largest mean deviation first.
    """
    order = sorted(rows)
    drawn = [rows[index] for index in order if len(rows[index].means)]
    if not drawn:
        empty = np.empty(0)
        return Band(empty, empty, empty, empty, (), len(order))
    first = min(row.first for row in drawn)
    buckets = max(row.first + len(row.means) for row in drawn) - first
    matrix = np.full((len(order), buckets), np.nan)
    for position, index in enumerate(order):
        row = rows[index]
        start = row.first - first
        matrix[position, start : start + len(row.means)] = row.means
    # All-NaN columns (a step no worker logged) are expected: NaN out, no warning.
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        low = np.nanmin(matrix, axis=0)
        median = np.nanmedian(matrix, axis=0)
        high = np.nanmax(matrix, axis=0)
        deviation = np.abs(matrix - median)
        mad = 1.4826 * np.nanmedian(deviation, axis=0)
        z = deviation / np.maximum(np.maximum(mad, 1e-3 * np.abs(median)), 1e-12)
        covered_count = np.sum(np.isfinite(z), axis=1)
        far = np.sum(z > threshold, axis=1)
        strength = np.nanmean(z, axis=1)
    candidates = [
        (float(strength[row]), order[row])
        for row in range(len(order))
        if covered_count[row] and far[row] >= sustained * covered_count[row]
    ]
    candidates.sort(key=lambda item: (-item[0], item[1]))
    outliers = tuple(index for _, index in candidates[:max_outliers])
    return Band(grid.steps(first, buckets), low, median, high, outliers, len(order))
