"""The event readers of one run, kept between page refreshes and shared by every viewer.

Streamlit reruns the page script on every refresh; the readers must outlive those reruns so
that a refresh reads only the bytes written since the last one. One :class:`RunEvents` per
run lives in ``st.cache_resource``, which every browser session and thread shares, so each
method takes the lock.

A refresh costs what was added, not what was kept: the snapshot holds read-only views of
the readers' growing buffers (no copy), and it is the same object for every viewer until new
points arrive, so whatever a page derives from it (frames, downsampled lines, bands) is
computed once per snapshot with :meth:`Snapshot.memo` and reused by every rerun and viewer;
and a new snapshot's charts redo only the workers whose points changed (``Snapshot.lines``).

A big first load (a run opened for the first time) never makes a page wait: it is read in
the background, in one process per core (the reader is pure Python and its CRC library holds
the GIL, so threads would not help), and each worker's points join the snapshot as soon as
its folder is read, with :class:`Loading` telling how far it has got. The page draws what is
there and asks again about once a second, the way TensorBoard shows charts while it loads.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from dashboard.events import Arrays, EventDirectory, PollResult
from dashboard.runs import safe_dir
from dashboard.series import SeriesCache
from runformat import (
    EPOCH_TAGS,
    EVENT_FILE_PREFIX,
    EVENTS_DIR,
    PROGRESS_TAGS,
    SYSTEM_TAGS,
    TENSORBOARD_SPLITS,
    events_rel,
    tensorboard_rel,
    worker_rel,
)

# However many viewers and live parts ask, the files are read at most this often (seconds).
POLL_INTERVAL = 1.0
# A program's own event folders anywhere under workers/<i>/ (Keras' TensorBoard callback,
# tf.summary): looked for this often (seconds), this deep, at most this many per worker.
DISCOVER_INTERVAL = 5.0
DISCOVER_DEPTH = 4
OWN_FOLDERS_PER_WORKER = 16
# The tags of our own (workers/<i>/events) that the page charts in its own places: the
# progress and epoch tags, and every system/ tag (GPU tags are numbered).
OURS = frozenset((*PROGRESS_TAGS, *EPOCH_TAGS))
SYSTEM_PREFIX = SYSTEM_TAGS[0].split("/")[0] + "/"
# New folders with at least this many unread bytes in all are read in the background (one
# process per core); less is read at once, faster than a page could show it in parts.
BIG_LOAD_BYTES = 16 << 20

T = TypeVar("T")


@dataclass(frozen=True)
class Loading:
    """How far a big first load in the background has got."""

    workers_done: int
    workers: int
    bytes_done: int
    bytes: int

    @property
    def fraction(self) -> float:
        """Share of the bytes read, 0..1."""
        return min(1.0, self.bytes_done / self.bytes) if self.bytes else 0.0

    def __str__(self) -> str:
        return (
            f"Reading events: {self.workers_done} of {self.workers} workers, "
            f"{self.fraction:.0%} of {self.bytes / 1e6:,.0f} MB"
        )


@dataclass(frozen=True)
class Snapshot:
    """Everything read so far, as arrays that later reads never touch."""

    # The run's folder name (the charts' dashboard.charts.Source).
    name: str = ""
    workers: dict[int, dict[str, Arrays]] = field(default_factory=dict)
    chief: dict[str, dict[str, Arrays]] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    pending: dict[int, int] = field(default_factory=dict)
    events: int = 0
    version: int = 0
    # Set while a big first load runs in the background: what is here is a part of it.
    loading: Loading | None = None
    # The program's own scalars per worker, by name: the tags of workers/<i>/events that
    # are not ours, and `tag · folder` for event folders elsewhere under workers/<i>/.
    own: dict[int, dict[str, Arrays]] = field(default_factory=dict)
    # The run's per-worker chart data, shared by its snapshots: a new snapshot's charts
    # redo only the workers whose points changed.
    lines: SeriesCache = field(default_factory=SeriesCache, compare=False, repr=False)
    _memo: dict[Hashable, Any] = field(default_factory=dict, compare=False, repr=False)
    _memo_lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    @property
    def own_names(self) -> list[str]:
        """Every name of the program's own scalars, whichever workers wrote it."""
        return sorted({name for series in self.own.values() for name in series})

    def own_source(self) -> Snapshot:
        """The program's own scalars as a snapshot of their own (for the charts)."""
        return self.memo(("own",), lambda: Snapshot(self.name, self.own, lines=self.lines))

    def on_our_clock(self, offsets: Mapping[int, float]) -> Snapshot:
        """This snapshot with each worker's wall times moved by its host's clock offset
        (seconds ahead of ours), so that every time on the page is on one clock; itself
        when no host is off."""
        moved = {index: offset for index, offset in offsets.items() if offset}
        if not moved:
            return self

        def shifted(workers: dict[int, dict[str, Arrays]]) -> dict[int, dict[str, Arrays]]:
            return {
                index: {
                    tag: (steps, walls - moved[index], values)
                    for tag, (steps, walls, values) in series.items()
                }
                if index in moved
                else series
                for index, series in workers.items()
            }

        def build() -> Snapshot:
            return replace(
                self,
                workers=shifted(self.workers),
                own=shifted(self.own),
                _memo={},
                _memo_lock=threading.Lock(),
            )

        return self.memo(("clock", tuple(sorted(moved.items()))), build)

    def memo(self, key: Hashable, build: Callable[[], T]) -> T:
        """build(), computed once per snapshot and key, shared by every rerun and viewer.

        Build only from this snapshot's data (and the key): the result is kept as long as
        the snapshot is the current one.
        """
        with self._memo_lock:
            if key in self._memo:
                return self._memo[key]  # type: ignore[no-any-return]
            value = self._memo[key] = build()
            return value


class RunEvents:
    """Incremental readers for workers/<i>/events and the chief's tensorboard/ folders."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._lock = threading.Lock()
        self._loaded = threading.Condition(self._lock)
        self._workers: dict[int, EventDirectory] = {}
        self._chief: dict[str, EventDirectory] = {}
        self._own: dict[tuple[int, str], EventDirectory] = {}
        self._discovered = -DISCOVER_INTERVAL
        self._arrays: dict[str, dict[str, Arrays]] = {}
        self._lines = SeriesCache()
        self._snapshot = Snapshot(name=run_dir.name, lines=self._lines)
        self._polled = 0.0
        self._version = 0
        self._loading: Loading | None = None
        self._background = True

    def refresh(self, indices: Iterable[int], min_interval: float | None = None) -> Snapshot:
        """Read new bytes (at most once per min_interval, however many viewers ask).

        Never waits for a big first load: that starts in the background, and until it is
        done every call returns the latest partial snapshot (``snapshot.loading`` is set).
        """
        interval = POLL_INTERVAL if min_interval is None else min_interval
        with self._lock:
            now = time.monotonic()
            if self._loading is not None or (self._version and now - self._polled < interval):
                return self._snapshot
            self._polled = now
            readers = self._readers(indices)
            fresh = [(key, r, r.unread_bytes()) for key, r in readers if r.fresh]
            if self._background and sum(size for *_, size in fresh) >= BIG_LOAD_BYTES:
                self._start_load(fresh)
                return self._snapshot
            changed = False
            for key, reader in readers:
                _, result, problems = _poll(reader)
                changed |= self._take(key, reader, result, problems)
            if changed or not self._version:
                self._publish()
            return self._snapshot

    def wait(self, timeout: float | None = None) -> Snapshot:
        """The snapshot once no load runs in the background (or when timeout runs out)."""
        with self._loaded:
            self._loaded.wait_for(lambda: self._loading is None, timeout)
            return self._snapshot

    def _readers(self, indices: Iterable[int]) -> list[tuple[str, EventDirectory]]:
        readers: list[tuple[str, EventDirectory]] = []
        indices_list = list(indices)
        for index in indices_list:
            reader = self._reader(self._workers, index, events_rel(index))
            if reader is not None:
                readers.append((f"w{index}", reader))
        for split in TENSORBOARD_SPLITS:
            reader = self._reader(self._chief, split, tensorboard_rel(split))
            if reader is not None:
                readers.append((f"c{split}", reader))
        if time.monotonic() - self._discovered >= DISCOVER_INTERVAL:
            self._discovered = time.monotonic()
            for index in indices_list:
                for folder in own_folders(self.run_dir, index):
                    self._reader(self._own, (index, folder), f"{worker_rel(index)}/{folder}")
        readers += [(f"s{index}:{folder}", r) for (index, folder), r in self._own.items()]
        return readers

    def _publish(self) -> None:
        """A new snapshot of everything read so far (call with the lock held)."""
        self._version += 1
        self._snapshot = self._build()

    def _start_load(self, fresh: list[tuple[str, EventDirectory, int]]) -> None:
        """Read the new folders in a background thread, biggest first (lock held)."""
        jobs = sorted(fresh, key=lambda job: -job[2])
        workers = sum(key.startswith("w") for key, *_ in jobs)
        self._loading = Loading(0, workers, 0, sum(size for *_, size in jobs))
        self._publish()
        thread = threading.Thread(
            target=self._load, args=(jobs,), name=f"events {self.run_dir.name}", daemon=True
        )
        thread.start()

    def _load(self, jobs: list[tuple[str, EventDirectory, int]]) -> None:
        """The background load: each folder joins the snapshot as soon as it is read."""
        try:
            for position, (polled, result, problems) in poll_each([r for _, r, _ in jobs]):
                key, reader, size = jobs[position]
                with self._lock:
                    if polled is not reader:
                        self._replace(reader, polled)
                    self._take(key, polled, result, problems)
                    loading = self._loading
                    assert loading is not None  # only this thread clears it
                    self._loading = replace(
                        loading,
                        workers_done=loading.workers_done + key.startswith("w"),
                        bytes_done=loading.bytes_done + size,
                    )
                    self._publish()
        except BaseException:
            # Not again in the background: the next refresh reads here, where the error
            # reaches the page.
            self._background = False
            raise
        finally:
            with self._lock:
                self._loading = None
                self._polled = time.monotonic()
                self._publish()
                self._loaded.notify_all()

    def _replace(self, old: EventDirectory, new: EventDirectory) -> None:
        for readers in (self._workers, self._chief, self._own):
            for key, reader in list(readers.items()):
                if reader is old:
                    readers[key] = new  # type: ignore[index]

    def _reader(
        self, readers: dict[Any, EventDirectory], key: Hashable, relative: str
    ) -> EventDirectory | None:
        reader = readers.get(key)
        if reader is None:
            path = safe_dir(self.run_dir, relative)
            if path is None:
                return None
            reader = readers[key] = EventDirectory(path)
        return reader

    def _take(self, key: str, reader: EventDirectory, result: PollResult, problems: int) -> bool:
        """Views of a reader's series after a poll; True when something changed."""
        if result.events or result.reset or key not in self._arrays:
            self._arrays[key] = {tag: s.arrays() for tag, s in reader.series.items()}
            return True
        return problems != 0

    def _build(self) -> Snapshot:
        every = [*self._workers.values(), *self._chief.values(), *self._own.values()]
        problems = [p.within(self.run_dir) for reader in every for p in reader.problems]
        own: dict[int, dict[str, Arrays]] = {}
        for index in self._workers:
            series = self._arrays.get(f"w{index}", {})
            mine = {tag: a for tag, a in series.items() if not ours(tag)}
            if mine:
                own[index] = mine
        for index, folder in self._own:
            for tag, arrays in self._arrays.get(f"s{index}:{folder}", {}).items():
                own.setdefault(index, {})[f"{tag} · {folder}"] = arrays
        return Snapshot(
            name=self.run_dir.name,
            workers={i: self._arrays.get(f"w{i}", {}) for i in self._workers},
            chief={s: self._arrays.get(f"c{s}", {}) for s in self._chief},
            problems=tuple(problems),
            pending={i: r.pending_bytes for i, r in self._workers.items() if r.pending_bytes},
            events=sum(r.events for r in every),
            own=own,
            version=self._version,
            loading=self._loading,
            lines=self._lines,
        )


def ours(tag: str) -> bool:
    """A tag the page charts in its own places (not among a program's own scalars)."""
    return tag in OURS or tag.startswith(SYSTEM_PREFIX)


def own_folders(run_dir: Path, index: int) -> list[str]:
    """The folders under workers/<index>/ (but not its events/) that hold event files, as
    paths relative to it, the shallowest first; links are not followed."""
    root = run_dir / worker_rel(index)
    found: list[str] = []
    for folder, subfolders, files in os.walk(root):
        depth = len(Path(folder).relative_to(root).parts)
        if depth == 0 and EVENTS_DIR in subfolders:
            subfolders.remove(EVENTS_DIR)
        subfolders.sort()
        if depth >= DISCOVER_DEPTH:
            subfolders.clear()
        if depth and any(name.startswith(EVENT_FILE_PREFIX) for name in files):
            found.append(Path(folder).relative_to(root).as_posix())
    found.sort(key=lambda name: (name.count("/"), name))
    return found[:OWN_FOLDERS_PER_WORKER]


def _poll(reader: EventDirectory) -> tuple[EventDirectory, PollResult, int]:
    """Poll one reader: (the reader, what the poll found, how many problems it added)."""
    before = len(reader.problems)
    result = reader.poll()
    return reader, result, len(reader.problems) - before


def poll_each(
    readers: Sequence[EventDirectory],
) -> Iterator[tuple[int, tuple[EventDirectory, PollResult, int]]]:
    """Poll every reader, yielding (its position, what :func:`_poll` returns) as each is done.

    With two or more readers and two or more cores they are read in one process per core,
    in the order given: each process returns its reader with everything it read (its
    buffers travel as numpy arrays), and the caller carries on with that reader from where
    it stopped. Without processes to be had, the same reads happen here.
    """
    done: set[int] = set()
    if (
        len(readers) > 1
        and (os.cpu_count() or 1) > 1
        and "fork" in multiprocessing.get_all_start_methods()
    ):
        context = multiprocessing.get_context("fork")
        processes = min(os.cpu_count() or 1, len(readers))
        try:
            with ProcessPoolExecutor(max_workers=processes, mp_context=context) as pool:
                futures = {pool.submit(_poll, reader): i for i, reader in enumerate(readers)}
                for future in as_completed(futures):
                    position = futures[future]
                    polled = future.result()
                    done.add(position)
                    yield position, polled
        except (OSError, BrokenProcessPool):
            pass  # no process to be had (limits, memory): the rest is read below
    for position, reader in enumerate(readers):
        if position not in done:
            yield position, _poll(reader)
