"""Lines and band rows carried forward from a worker's new points only. A live synchronous run
gives every worker a few new points per refresh. Rebuilding every worker's line and band row
from all its points costs O(points x workers) per refresh; the functions below extend what was
built from the points before (through SeriesCache.get's ``extend``) and cost O(new points + one
bucket). They apply when the new points come after every step before (the usual case); anything
else (a restarted worker's repeated steps) rebuilds. A full build and a build extended point by
point give the same line.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import numpy as np

from dashboard.bands import Grid, Row
from dashboard.series import LINE_POINTS, Arrays

# New points extended at most this many at a time (more: a rebuild costs about the same).
EXTEND_AT_MOST = 4096


@dataclass(frozen=True)
class Ema:
    """TensorBoard's debiased exponential moving average as a running state: pandas'
    ``ewm(alpha=1 - weight, adjust=True).mean()`` one point at a time, with its very float
    operations, so that a line carried forward is the line rebuilt, to the last bit.
    """

    weight: float
    average: float = float("nan")
    total: float = 0.0  # pandas' old_wt: the sum of the weights so far

    @property
    def factor(self) -> float:
        """pandas' old_wt_factor for alpha = 1 - weight (through its centre of mass)."""
        return _ema_factor(self.weight)

    @classmethod
    def after(cls, weight: float, smoothed: np.ndarray, finite: int) -> Ema:
        """The state after `finite` finite values whose last average was smoothed's last."""
        weight = min(max(weight, 0.0), 0.999)
        values = smoothed[np.isfinite(smoothed)]
        if not finite or not len(values) or weight == 0.0:
            return cls(weight, float(values[-1]) if len(values) else float("nan"), 1.0)
        factor, total = cls(weight).factor, 1.0
        for _ in range(finite - 1):  # stops changing after a few hundred steps
            grown = total * factor + 1.0
            if grown == total:
                break
            total = grown
        return cls(weight, float(values[-1]), total)

    def run(self, values: np.ndarray) -> tuple[np.ndarray, Ema]:
        """The smoothed values of new points, and the state after them (non-finite values
        pass through untouched and leave the state as it was)."""
        out = np.array(values, dtype=np.float64)
        if self.weight == 0.0:
            finite = out[np.isfinite(out)]
            return out, Ema(0.0, float(finite[-1]), 1.0) if len(finite) else self
        factor, average, total = self.factor, self.average, self.total
        for position, value in enumerate(out.tolist()):
            if value - value != 0.0:  # NaN or infinite
                continue
            if average != average:  # the first finite value
                average, total = value, 1.0
            else:
                total *= factor
                if average != value:
                    average = (total * average + value) / (total + 1.0)
                total += 1.0
            out[position] = average
        return out, Ema(self.weight, average, total)


@functools.lru_cache(maxsize=64)
def _ema_factor(weight: float) -> float:
    alpha = 1.0 - weight
    return 1.0 - 1.0 / (1.0 + (1.0 - alpha) / alpha)


def bucket_width(count: int, limit: int = LINE_POINTS) -> int:
    """The power of two that cuts `count` points into at most (limit - 2) // 2 buckets (0
    when every point is kept). It changes only when the count doubles."""
    if count <= limit:
        return 0
    buckets = (limit - 2) // 2
    width = 1
    while -(-count // width) > buckets:
        width *= 2
    return width


def bucket_extremes(values: np.ndarray, start: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (from `start`, a multiple of width) of each bucket's minimum and maximum
    (a NaN counts as a bucket's extreme, so a gap stays a gap)."""
    whole = (len(values) // width) * width
    grid = values[:whole].reshape(-1, width)
    base = start + width * np.arange(len(grid))
    low, high = [base + grid.argmin(axis=1)], [base + grid.argmax(axis=1)]
    if whole < len(values):
        rest = values[whole:]
        low.append(np.array([start + whole + int(rest.argmin())]))
        high.append(np.array([start + whole + int(rest.argmax())]))
    return np.concatenate(low), np.concatenate(high)


@dataclass(frozen=True)
class Picks:
    """Which points of a line are drawn: the first, the last and each power-of-two
    bucket's minimum and maximum (every point while there are at most LINE_POINTS), with
    the drawn values; ``tail`` holds the values from the last bucket's start, so that new
    points can redo that bucket alone."""

    count: int
    width: int
    low: np.ndarray
    high: np.ndarray
    low_values: np.ndarray
    high_values: np.ndarray
    first: float
    tail: np.ndarray

    @property
    def tail_start(self) -> int:
        return self.count - len(self.tail)

    def indices_and_values(self) -> tuple[np.ndarray, np.ndarray]:
        """Sorted indices of the drawn points, and their values."""
        if not self.width:
            return np.arange(self.count), self.tail
        indices = np.concatenate(([0], self.low, self.high, [self.count - 1]))
        values = np.concatenate(([self.first], self.low_values, self.high_values, self.tail[-1:]))
        kept, where = np.unique(indices, return_index=True)
        return kept, values[where]


def picks_of(values: np.ndarray, limit: int = LINE_POINTS) -> Picks:
    """The drawn points of a whole line (see :class:`Picks`)."""
    values = np.asarray(values, dtype=np.float64)
    count = len(values)
    width = bucket_width(count, limit)
    if not width:
        none = np.empty(0, np.int64)
        return Picks(count, 0, none, none, np.empty(0), np.empty(0), 0.0, values)
    low, high = bucket_extremes(values, 0, width)
    tail = values[((count - 1) // width) * width :]
    return Picks(count, width, low, high, values[low], values[high], float(values[0]), tail)


def extend_picks(picks: Picks, new: np.ndarray, limit: int = LINE_POINTS) -> Picks | None:
    """The picks after appending `new` values, redoing the last bucket only; None when the
    bucket width changes (the caller rebuilds from every value)."""
    count = picks.count + len(new)
    width = bucket_width(count, limit)
    if width != picks.width or (not width and count > limit):
        return None
    values = np.concatenate((picks.tail, np.asarray(new, dtype=np.float64)))
    if not width:
        return replace(picks, count=count, tail=values)
    start = picks.tail_start
    kept = start // width
    low, high = bucket_extremes(values, start, width)
    offset = low - start, high - start
    tail_start = ((count - 1) // width) * width
    return Picks(
        count,
        width,
        np.concatenate((picks.low[:kept], low)),
        np.concatenate((picks.high[:kept], high)),
        np.concatenate((picks.low_values[:kept], values[offset[0]])),
        np.concatenate((picks.high_values[:kept], values[offset[1]])),
        picks.first if picks.count else float(values[0]),
        values[tail_start - start :],
    )


@dataclass(frozen=True)
class LineState:
    """What a worker's drawn line needs to take new points: the smoothing state and the
    picks of its smoothed and raw values (see :func:`line_state`)."""

    count: int
    last_step: int
    ema: Ema
    smooth: Picks
    raw: Picks | None


def new_points(arrays: Arrays, before: int, last_step: int) -> Arrays | None:
    """The points past `before` when they all come after last_step, in step order; else None."""
    steps, walls, values = arrays
    count = len(steps) - before
    if count < 0 or count > EXTEND_AT_MOST:
        return None
    new_steps = steps[before:]
    if count and (
        int(new_steps[0]) <= last_step
        or (count > 1 and not bool((new_steps[1:] > new_steps[:-1]).all()))
    ):
        return None
    return new_steps, walls[before:], values[before:]


def line_state(
    steps: np.ndarray, values: np.ndarray, smooth: np.ndarray, weight: float
) -> LineState:
    """The state of a line built whole from one point per step (values smoothed to `smooth`)."""
    finite = int(np.isfinite(values).sum())
    return LineState(
        len(steps),
        int(steps[-1]) if len(steps) else -(1 << 62),
        Ema.after(weight, smooth, finite),
        picks_of(smooth),
        picks_of(values) if weight > 0 else None,
    )


def extend_line_state(
    state: LineState, steps: np.ndarray, values: np.ndarray
) -> tuple[LineState, np.ndarray] | None:
    """The state after new points (strictly after the last step), and their smoothed values."""
    smoothed, ema = state.ema.run(values)
    smooth = extend_picks(state.smooth, smoothed)
    raw = extend_picks(state.raw, values) if state.raw is not None else None
    if smooth is None or (state.raw is not None and raw is None):
        return None
    last = int(steps[-1]) if len(steps) else state.last_step
    return LineState(state.count + len(steps), last, ema, smooth, raw), smoothed


@dataclass(frozen=True)
class RowState:
    """A band row with what lets it take new points: its buckets' sums and counts, and the
    smoothing state of the values it averages."""

    row: Row
    sums: np.ndarray
    counts: np.ndarray
    ema: Ema
    last_step: int


def _row_from(first: int, sums: np.ndarray, counts: np.ndarray) -> Row:
    filled = counts > 0
    have = np.flatnonzero(filled)
    if not len(have):
        return Row(0, np.empty(0))
    means = np.divide(sums, counts, out=np.full(len(sums), np.nan), where=filled)
    return Row(first, np.interp(np.arange(len(sums)), have, means[have]))


def row_state(
    steps: np.ndarray, smooth: np.ndarray, values: np.ndarray, grid: Grid, weight: float
) -> RowState:
    """A worker's band row on `grid` (as :func:`dashboard.bands.band_row`) and its state."""
    finite = np.isfinite(smooth)
    kept_steps, kept = np.asarray(steps)[finite], smooth[finite]
    ema = Ema.after(weight, smooth, int(np.isfinite(values).sum()))
    last = int(steps[-1]) if len(steps) else -(1 << 62)
    if not len(kept_steps):
        return RowState(Row(0, np.empty(0)), np.empty(0), np.empty(0, np.int64), ema, last)
    slot = kept_steps // grid.width
    first = int(slot.min())
    sums = np.bincount(slot - first, weights=kept)
    counts = np.bincount(slot - first)
    return RowState(_row_from(first, sums, counts), sums, counts, ema, last)


def extend_row_state(
    state: RowState, steps: np.ndarray, values: np.ndarray, grid: Grid
) -> RowState:
    """The row after new points strictly after its last step."""
    smoothed, ema = state.ema.run(values)
    if len(steps) == 1 and len(state.sums):
        # The usual live case: one point, in the row's last bucket (only that mean moves).
        value, step = float(smoothed[0]), int(steps[0])
        if step // grid.width - state.row.first == len(state.sums) - 1 and value - value == 0.0:
            sums, counts, means = state.sums.copy(), state.counts.copy(), state.row.means.copy()
            sums[-1] += value
            counts[-1] += 1
            means[-1] = sums[-1] / counts[-1]
            return RowState(Row(state.row.first, means), sums, counts, ema, step)
    finite = np.isfinite(smoothed)
    steps, smoothed = np.asarray(steps)[finite], smoothed[finite]
    last = int(steps[-1]) if len(steps) else state.last_step
    if not len(steps):
        return replace(state, ema=ema, last_step=last)
    if not len(state.sums):
        first = int(steps[0] // grid.width)
        sums, counts = np.empty(0), np.empty(0, np.int64)
    else:
        first, sums, counts = state.row.first, state.sums, state.counts
    slot = steps // grid.width - first
    size = max(len(sums), int(slot.max()) + 1)
    sums = np.concatenate((sums, np.zeros(size - len(sums))))
    counts = np.concatenate((counts, np.zeros(size - len(counts), np.int64)))
    sums += np.bincount(slot, weights=smoothed, minlength=size)
    counts += np.bincount(slot, minlength=size)
    return RowState(_row_from(first, sums, counts), sums, counts, ema, last)
