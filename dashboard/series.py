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
are carried forward: dashboard.carry).
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

# At most this many points per tag and worker: 2.4 MB (int64 step, float64 wall and value).
MAX_POINTS_PER_SERIES = 100_000
# Points per line sent to the browser: shape-preserving, and small enough to redraw live.
LINE_POINTS = 500
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

    def __init__(self, limit: int = MAX_POINTS_PER_SERIES, first: int = _FIRST_CAPACITY) -> None:
        """`first`: room allocated at once (it doubles as points come), small for buffers
        that may stay small."""
        if limit < 16:
            raise ValueError(f"a series must keep at least 16 points, not {limit}")
        self.limit = limit
        self.thinned = 0
        self.stride = 1
        self._coarse = 0
        self._size = 0
        capacity = max(1, min(first, limit))
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
