"""The event readers of one run, kept between page refreshes and shared by every viewer.

Streamlit reruns the page script on every refresh; the readers must outlive those reruns so
that a refresh reads only the bytes written since the last one. One :class:`RunEvents` per
run lives in ``st.cache_resource``, which every browser session and thread shares, so each
method takes the lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dashboard.events import Arrays, EventDirectory, Problem
from dashboard.runs import safe_dir

CHIEF_SPLITS = ("train", "validation")
# However many viewers and live parts ask, the files are read at most this often (seconds).
POLL_INTERVAL = 1.0


@dataclass(frozen=True)
class Snapshot:
    """Everything read so far, as arrays that later reads never touch."""

    workers: dict[int, dict[str, Arrays]] = field(default_factory=dict)
    chief: dict[str, dict[str, Arrays]] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    pending: dict[int, int] = field(default_factory=dict)
    events: int = 0
    version: int = 0


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
            changed = False
            for index in indices:
                reader = self._reader(self._workers, index, f"workers/{index}/events")
                if reader is not None:
                    changed |= self._poll(f"w{index}", reader)
            for split in CHIEF_SPLITS:
                reader = self._reader(self._chief, split, f"tensorboard/{split}")
                if reader is not None:
                    changed |= self._poll(f"c{split}", reader)
            if changed or not self._version:
                self._version += 1
                self._snapshot = self._build()
            return self._snapshot

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

    def _poll(self, key: str, reader: EventDirectory) -> bool:
        before = len(reader.problems)
        result = reader.poll()
        if result.events or result.reset or key not in self._arrays:
            self._arrays[key] = {tag: s.to_numpy() for tag, s in reader.series.items()}
            return True
        return len(reader.problems) != before

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
