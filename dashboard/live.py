"""The event readers of one run, kept between page refreshes and shared by every viewer.

Streamlit reruns the page script on every refresh; the readers must outlive those reruns so
that a refresh reads only the bytes written since the last one. One :class:`RunEvents` per
run lives in ``st.cache_resource``, which every browser session and thread shares, so each
method takes the lock.

A refresh costs what was added, not what was kept: the snapshot holds read-only views of
the readers' growing buffers (no copy), and it is the same object for every viewer until new
points arrive, so whatever a page derives from it (frames, downsampled lines, bands) is
computed once per snapshot with :meth:`Snapshot.memo` and reused by every rerun and viewer.

A first load of a big run reads the workers' folders in parallel processes: the reader is
pure Python and its CRC library holds the GIL, so threads would not help.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from dashboard.events import Arrays, EventDirectory, PollResult, Problem
from dashboard.runs import safe_dir
from runformat import TENSORBOARD_SPLITS, events_rel, tensorboard_rel

# However many viewers and live parts ask, the files are read at most this often (seconds).
POLL_INTERVAL = 1.0
# A load with at least this many unread bytes in two or more folders is spread over processes.
PARALLEL_BYTES = 16 << 20

T = TypeVar("T")


@dataclass(frozen=True)
class Snapshot:
    """Everything read so far, as arrays that later reads never touch."""

    workers: dict[int, dict[str, Arrays]] = field(default_factory=dict)
    chief: dict[str, dict[str, Arrays]] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    pending: dict[int, int] = field(default_factory=dict)
    events: int = 0
    version: int = 0
    _memo: dict[Hashable, Any] = field(default_factory=dict, compare=False, repr=False)
    _memo_lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

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
        self._workers: dict[int, EventDirectory] = {}
        self._chief: dict[str, EventDirectory] = {}
        self._arrays: dict[str, dict[str, Arrays]] = {}
        self._snapshot = Snapshot()
        self._polled = 0.0
        self._version = 0

    def refresh(self, indices: Iterable[int], min_interval: float | None = None) -> Snapshot:
        """Read new bytes (at most once per min_interval, however many viewers ask)."""
        interval = POLL_INTERVAL if min_interval is None else min_interval
        with self._lock:
            now = time.monotonic()
            if self._version and now - self._polled < interval:
                return self._snapshot
            self._polled = now
            readers: list[tuple[str, EventDirectory]] = []
            for index in indices:
                reader = self._reader(self._workers, index, events_rel(index))
                if reader is not None:
                    readers.append((f"w{index}", reader))
            for split in TENSORBOARD_SPLITS:
                reader = self._reader(self._chief, split, tensorboard_rel(split))
                if reader is not None:
                    readers.append((f"c{split}", reader))
            changed = False
            for (key, reader), (polled, result, problems) in zip(
                readers, poll_all([reader for _, reader in readers]), strict=True
            ):
                if polled is not reader:
                    self._replace(reader, polled)
                changed |= self._take(key, polled, result, problems)
            if changed or not self._version:
                self._version += 1
                self._snapshot = self._build()
            return self._snapshot

    def _replace(self, old: EventDirectory, new: EventDirectory) -> None:
        for readers in (self._workers, self._chief):
            for key, reader in list(readers.items()):
                if reader is old:
                    readers[key] = new  # type: ignore[index]

    def _reader(
        self, readers: dict[Any, EventDirectory], key: int | str, relative: str
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

    def _problem_text(self, problem: Problem) -> str:
        path = Path(problem.path)
        try:
            shown = str(path.relative_to(self.run_dir.resolve()))
        except ValueError:
            shown = path.name
        return f"{shown} at byte {problem.offset}: {problem.message}"

    def _build(self) -> Snapshot:
        problems = [
            self._problem_text(p)
            for reader in [*self._workers.values(), *self._chief.values()]
            for p in reader.problems
        ]
        return Snapshot(
            workers={i: self._arrays.get(f"w{i}", {}) for i in self._workers},
            chief={s: self._arrays.get(f"c{s}", {}) for s in self._chief},
            problems=tuple(problems),
            pending={i: r.pending_bytes for i, r in self._workers.items() if r.pending_bytes},
            events=sum(r.events for r in [*self._workers.values(), *self._chief.values()]),
            version=self._version,
        )


def _poll(reader: EventDirectory) -> tuple[EventDirectory, PollResult, int]:
    """Poll one reader: (the reader, what the poll found, how many problems it added)."""
    before = len(reader.problems)
    result = reader.poll()
    return reader, result, len(reader.problems) - before


def poll_all(readers: Sequence[EventDirectory]) -> list[tuple[EventDirectory, PollResult, int]]:
    """Poll every reader; a big first load goes to one process per core.

    Each process returns its reader with everything it read (its buffers travel as numpy
    arrays), and the caller carries on with that reader from where it stopped. A small or
    incremental poll stays in this process, where it costs far less than starting one.
    """
    cores = os.cpu_count() or 1
    sizes = [reader.unread_bytes() if cores > 1 and reader.fresh else 0 for reader in readers]
    heavy = sorted((i for i, size in enumerate(sizes) if size), key=lambda i: -sizes[i])
    if (
        len(heavy) < 2
        or sum(sizes) < PARALLEL_BYTES
        or "fork" not in multiprocessing.get_all_start_methods()
    ):
        return [_poll(reader) for reader in readers]
    # Largest folders first (above), so that no process is left with a big one at the end.
    context = multiprocessing.get_context("fork")
    try:
        with ProcessPoolExecutor(max_workers=min(cores, len(heavy)), mp_context=context) as pool:
            done = dict(zip(heavy, pool.map(_poll, [readers[i] for i in heavy]), strict=True))
    except (OSError, BrokenProcessPool):
        # No process to be had (limits, memory): the same reads, here.
        return [_poll(reader) for reader in readers]
    return [done[i] if i in done else _poll(reader) for i, reader in enumerate(readers)]
