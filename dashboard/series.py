"""Bounded per-tag point buffers, and the pure functions that shrink them for a browser.

A live run adds a few points per refresh to series that may already hold a million: the
buffers grow by doubling (amortised O(1) per point, history is never recopied on an append)
and hand out read-only views, so a refresh costs what was added, not what was kept.

Memory is bounded: a series keeps at most ``MAX_POINTS_PER_SERIES`` points. When it is full
its older points are thinned to a coarser, uniform resolution that halves as the run grows
(of each group the minimum and maximum survive, so spikes, dips and the envelope stay
visible over the whole history), while the newest half of the bound is always exact. A
200 MB event file thus costs a few MB, however long the run.

What goes to the browser is smaller still: :func:`downsample` keeps ~500 points per line
(first, last and each bucket's minimum and maximum), and :func:`band` turns many workers'
lines into one min/median/max band on a common step grid with the outlying workers named.
What that costs per worker is kept in a bounded :class:`SeriesCache` until the worker's
points change, so a redraw processes only the workers with new points, and those from their
new points only (the smoothing state, power-of-two downsampling buckets and band-row sums
are carried forward; see the end of this module).
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np

# At most this many points per tag and worker: 2.4 MB (int64 step, float64 wall and value).
MAX_POINTS_PER_SERIES = 100_000
# Points per line sent to the browser: shape-preserving, and small enough to redraw live.
LINE_POINTS = 500
# Above this many workers, per-worker metrics are drawn as a band with outliers named.
BAND_ABOVE_WORKERS = 8
# What the charts derive per worker and tag is kept up to this many bytes per run.
SERIES_CACHE_BYTES = 8 << 20
_FIRST_CAPACITY = 256
_ENTRY_BYTES = 256  # a cache entry's own cost, besides its arrays

T = TypeVar("T")

# One tag's points as numpy arrays: (steps int64, wall times float64, values float64).
Arrays = tuple[np.ndarray, np.ndarray, np.ndarray]


def _read_only(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view


class PointBuffer:
    """Growable, bounded (step, wall, value) columns; :meth:`arrays` gives stable views.

    Appends write only past the current end and growth or thinning move the points into
    new arrays, so a view handed out earlier never changes under its holder.

    Kept points are an exact newest part and, once the bound was hit, an older part at one
    uniform, coarser resolution: every ``stride`` original points of it are represented by
    their extremes. When full, the exact part's older points move into the coarse part (at
    its resolution), and when that part passes a quarter of the bound its resolution halves.
    Each thinning handles at least a quarter of the bound, so an append stays O(1) amortised.
    """

    __slots__ = ("_coarse", "_size", "_steps", "_values", "_walls", "limit", "stride", "thinned")

    def __init__(self, limit: int = MAX_POINTS_PER_SERIES) -> None:
        if limit < 16:
            raise ValueError(f"a series must keep at least 16 points, not {limit}")
        self.limit = limit
        self.thinned = 0
        self.stride = 1
        self._coarse = 0
        self._size = 0
        capacity = min(_FIRST_CAPACITY, limit)
        self._steps = np.empty(capacity, dtype=np.int64)
        self._walls = np.empty(capacity, dtype=np.float64)
        self._values = np.empty(capacity, dtype=np.float64)

    def __len__(self) -> int:
        return self._size

    @property
    def capacity(self) -> int:
        return len(self._steps)

    @property
    def exact(self) -> int:
        """How many of the newest points are kept exactly (at least half the bound)."""
        return self._size - self._coarse

    def extend(self, steps: np.ndarray, walls: np.ndarray, values: np.ndarray) -> None:
        """Append points (already in read order); thin the oldest when the bound is hit."""
        count = len(steps)
        done = 0
        while done < count:
            room = self.limit - self._size
            if room == 0:
                self._thin()
                continue
            take = min(room, count - done)
            end = self._size + take
            if end > self.capacity:
                self._resize(min(self.limit, max(end, 2 * self.capacity)))
            self._steps[self._size : end] = steps[done : done + take]
            self._walls[self._size : end] = walls[done : done + take]
            self._values[self._size : end] = values[done : done + take]
            self._size = end
            done += take

    def arrays(self) -> Arrays:
        """Read-only views of every kept point: no copy, unaffected by later appends."""
        size = self._size
        return (
            _read_only(self._steps[:size]),
            _read_only(self._walls[:size]),
            _read_only(self._values[:size]),
        )

    def _resize(self, capacity: int) -> None:
        size = self._size
        for name in ("_steps", "_walls", "_values"):
            old = getattr(self, name)
            new = np.empty(capacity, dtype=old.dtype)
            new[:size] = old[:size]
            setattr(self, name, new)

    def _thin(self) -> None:
        """Move the exact part's older points into the coarse part (into new arrays)."""
        coarse, size, quarter = self._coarse, self._size, self.limit // 4
        movable = size - coarse - self.limit // 2
        group = min(2 * self.stride, movable & ~1)
        moved = (movable // group) * group
        keep = [np.arange(coarse), coarse + extremes(self._values[coarse : coarse + moved], group)]
        kept_coarse = coarse + len(keep[1])
        if kept_coarse > quarter:
            # Halve the coarse part's resolution: two of every four of its points.
            whole = kept_coarse & ~3
            joined = np.concatenate(keep)
            keep = [joined[extremes(self._values[joined[:whole]], 4)], joined[whole:]]
            self.stride *= 2
        keep.append(np.arange(coarse + moved, size))
        order = np.concatenate(keep)
        for name in ("_steps", "_walls", "_values"):
            old = getattr(self, name)
            new = np.empty(self.capacity, dtype=old.dtype)
            new[: len(order)] = old[order]
            setattr(self, name, new)
        self._coarse = len(order) - (size - coarse - moved)
        self.thinned += size - len(order)
        self._size = len(order)


class SeriesCache:
    """What the charts derive from one worker's series, kept while that series is unchanged.

    A page redraws every chart from every worker's points, but between two snapshots most
    workers' series are the same objects (a reader hands out new views only when a worker
    got new points), so a redraw needs to process only the workers whose points changed.
    An entry is kept under a key (worker, tag, what, settings) and holds weak references to
    the arrays it was built from: it is used while the caller passes the very same arrays
    (views handed out are never changed, see :class:`PointBuffer`) and the same ``params``,
    and rebuilt otherwise. Weak references, so an entry never keeps a replaced buffer alive.

    Memory is bounded: at most ``max_bytes`` of entries (their arrays counted), the least
    recently used dropped first. ``SeriesCache(0)`` keeps nothing: every call builds.
    Shared by every viewer of a run (threads), so it locks itself; a build runs unlocked.
    """

    def __init__(self, max_bytes: int = SERIES_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self.extended = 0
        self._bytes = 0
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def get(
        self,
        key: Hashable,
        arrays: Sequence[np.ndarray],
        build: Callable[[], T],
        params: Hashable = None,
        extend: Callable[[T, int], T | None] | None = None,
    ) -> T:
        """build(), or what it returned before for this key, these arrays and params.

        `arrays` are what build() reads: one worker's series, or several workers' in a row.
        With `extend`, an entry built from a shorter view of the same growing buffers (the
        points before are unchanged, see :class:`PointBuffer`) is carried forward:
        ``extend(value, length before)`` gives the new value from the new points alone, or
        None to rebuild.
        """
        grown: tuple[Any, int] | None = None
        start = -1
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.params == params and entry.holds(arrays):
                self._entries.move_to_end(key)
                self.hits += 1
                return entry.value  # type: ignore[no-any-return]
            if extend is not None and entry is not None and entry.params == params:
                start = _start(arrays)
                if entry.grew_into(arrays, start):
                    grown = (entry.value, entry.length)
            if grown is None:
                self.misses += 1
        value = extend(*grown) if extend is not None and grown is not None else None
        if value is not None:
            with self._lock:
                self.extended += 1
        else:
            if grown is not None:
                with self._lock:
                    self.misses += 1
            value = build()
        size = _nbytes(value) + _ENTRY_BYTES
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.size
            if size <= self.max_bytes:
                start = start if start != -1 else _start(arrays)
                self._entries[key] = _Entry.of(arrays, params, value, size, start)
                self._bytes += size
                while self._bytes > self.max_bytes:
                    _, dropped = self._entries.popitem(last=False)
                    self._bytes -= dropped.size
        return value

    @property
    def nbytes(self) -> int:
        """What the kept entries cost (at most ``max_bytes``)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True)
class _Entry:
    sources: tuple[weakref.ref[np.ndarray], ...]
    params: Hashable
    value: Any
    size: int
    # The buffers the sources are views of, where the first view starts, and its length.
    owners: tuple[weakref.ref[np.ndarray], ...] = ()
    start: int = -1
    length: int = 0

    @classmethod
    def of(
        cls, arrays: Sequence[np.ndarray], params: Hashable, value: Any, size: int, start: int
    ) -> _Entry:
        owners = tuple(weakref.ref(_owner(array)) for array in arrays)
        length = len(arrays[0]) if arrays else 0
        sources = tuple(weakref.ref(array) for array in arrays)
        return cls(sources, params, value, size, owners, start, length)

    def holds(self, arrays: Sequence[np.ndarray]) -> bool:
        """Whether it was built from these very arrays (still alive, so not a reused id)."""
        return len(arrays) == len(self.sources) and all(
            ref() is array for ref, array in zip(self.sources, arrays, strict=True)
        )

    def grew_into(self, arrays: Sequence[np.ndarray], start: int) -> bool:
        """Whether `arrays` are longer views of the buffers this was built from, from the
        same start (so their first ``length`` points are the ones it was built from). The
        columns of one series share their buffers' fate, so the first one's start stands
        for all (reading a view's address costs microseconds)."""
        return (
            start == self.start
            and len(arrays) == len(self.owners)
            and all(len(array) >= self.length for array in arrays)
            and all(ref() is _owner(array) for ref, array in zip(self.owners, arrays, strict=True))
        )


def _owner(array: np.ndarray) -> np.ndarray:
    """The array that owns a view's memory."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


def _start(arrays: Sequence[np.ndarray]) -> int:
    """The address of the first array's first point (-2 for no arrays)."""
    return int(arrays[0].__array_interface__["data"][0]) if len(arrays) else -2


def _nbytes(value: object) -> int:
    """The bytes of the arrays in a cached value (a dataclass's fields looked into)."""
    if isinstance(value, np.ndarray):
        return value.nbytes
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(_nbytes(getattr(value, f.name)) for f in dataclasses.fields(value))
    if isinstance(value, tuple):
        return sum(_nbytes(item) for item in value)
    return 0


def extremes(values: np.ndarray, group: int) -> np.ndarray:
    """Indices keeping two points of every ``group``: the group's minimum and maximum.

    The classic min/max decimation: a spike or a dip is the extreme of its group, so it
    survives any number of thinnings. NaNs are passed over (a group of only NaNs keeps its
    first and last point). ``len(values)`` must be a multiple of ``group`` (>= 2).
    """
    groups = np.asarray(values, dtype=np.float64).reshape(-1, group)
    nan = np.isnan(groups)
    low = np.where(nan, np.inf, groups).argmin(axis=1)
    high = np.where(nan, -np.inf, groups).argmax(axis=1)
    same = low == high
    high = np.where(same, np.where(low == group - 1, 0, group - 1), high)
    base = group * np.arange(len(groups))
    return (base[:, None] + np.sort(np.stack([low, high], axis=1), axis=1)).ravel()


def latest_per_step(steps: np.ndarray, walls: np.ndarray, values: np.ndarray) -> Arrays:
    """The points sorted by step, one per step: the last one read.

    A worker that restarted from a checkpoint logs some steps twice; its newer values
    count. The usual case, steps already increasing, costs one comparison and no copy.
    """
    if len(steps) < 2 or bool(np.all(steps[1:] > steps[:-1])):
        return steps, walls, values
    _, first = np.unique(steps[::-1], return_index=True)
    keep = len(steps) - 1 - first
    return steps[keep], walls[keep], values[keep]


def downsample(values: np.ndarray, limit: int = LINE_POINTS) -> np.ndarray:
    """Indices of at most ``limit`` points that keep a line's shape.

    The first and last points are always kept; the rest is cut into ``(limit - 2) // 2``
    equal buckets, each contributing its minimum and maximum (in their original order), so
    spikes, dips and the envelope of a noisy line look as with every point. A NaN counts as
    a bucket's extreme, so a gap in the data stays a gap. Pure: values in, sorted indices out.
    """
    values = np.asarray(values, dtype=np.float64)
    count = len(values)
    if count <= limit:
        return np.arange(count)
    if limit < 4:
        raise ValueError(f"downsampling keeps at least 4 points, not {limit}")
    buckets = (limit - 2) // 2
    inner = values[1:-1]
    size = -(-len(inner) // buckets)
    whole = (len(inner) // size) * size
    grid = inner[:whole].reshape(-1, size)
    starts = np.arange(len(grid)) * size
    picked = [starts + grid.argmin(axis=1), starts + grid.argmax(axis=1)]
    if whole < len(inner):
        rest = inner[whole:]
        picked.append(np.array([whole + rest.argmin(), whole + rest.argmax()]))
    indices = np.unique(np.concatenate(picked)) + 1
    return np.concatenate(([0], indices, [count - 1]))


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


# --- Lines and band rows carried forward from a worker's new points only -------------------
#
# A live synchronous run gives every worker a few new points per refresh. Rebuilding every
# worker's line and band row from all its points costs O(points x workers) per refresh; the
# functions below extend what was built from the points before (through SeriesCache.get's
# ``extend``) and cost O(new points + one bucket). They apply when the new points come after
# every step before (the usual case); anything else (a restarted worker's repeated steps)
# rebuilds. A full build and a build extended point by point give the same line.

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
    """A worker's band row on `grid` (as :func:`band_row`) and its state."""
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
