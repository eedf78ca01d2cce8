"""Images, histograms and text from event files, read incrementally like the scalars.

TensorBoard users log more than scalars: ``tf.summary.image`` (a string tensor ``[width,
height, png, ...]``), ``tf.summary.histogram`` and Keras' ``TensorBoard(histogram_freq=1)``
(a ``[k, 3]`` tensor of bucket left edges, right edges and counts) and ``tf.summary.text`` (a
string tensor). TF2 names the kind once per tag, in the first value's plugin metadata; older
writers use the ``image`` and ``histo`` fields, which TensorBoard's own ``data_compat``
turns into the same tensors, as it does here. dashboard.mediascan sorts a chunk's records out
in bulk, dashboard.mediadecode turns one tensor into an entry.

:class:`MediaDirectory` is :class:`dashboard.events.EventDirectory` (same framing, CRC
checks, partial records, damaged and replaced files) over a whole folder tree, keeping per
tag only the newest few entries (and bytes), with a count of those dropped. Whatever is wrong
with one record (not a PNG, too big, NaN buckets, too much text) becomes a :class:`Problem`
and the rest is read. :class:`RunMedia` holds the readers of one run between page refreshes.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from array import array
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from tensorboard import data_compat
from tensorboard.compat.proto import event_pb2

from dashboard.events import EventDirectory, PollResult, _FileState
from dashboard.mediadecode import (
    HISTOGRAMS,
    IMAGES,
    KINDS,
    TEXT,
    Entry,
    Histogram,
    HistogramBlock,
    Image,
    Text,
    decode,
)
from dashboard.mediascan import TagRecords, histogram_blocks, scan
from dashboard.runs import safe_dir
from dashboard.scalardecode import _scalar_point
from dashboard.tfrecord import U64 as _U64
from runformat import TENSORBOARD_DIR, worker_rel

__all__ = [
    "HISTOGRAMS",
    "IMAGES",
    "KINDS",
    "TEXT",
    "Entry",
    "Histogram",
    "Image",
    "MediaDirectory",
    "MediaSnapshot",
    "RunMedia",
    "Text",
    "Track",
    "TrackView",
    "event_files",
    "read_media",
]

# Entries kept per tag (the newest); TensorBoard keeps 10 images and 500 histograms.
MAX_ENTRIES = {IMAGES: 20, HISTOGRAMS: 500, TEXT: 100}
# Bytes of images kept per tag: the oldest go first when a tag holds more.
MAX_IMAGE_BYTES_PER_TAG = 32 << 20
# Tags per kind and folder tree.
MAX_TAGS = 256
# Folders below a run's root searched for event files, and event files read per root.
MAX_DEPTH = 6
MAX_FILES = 2_000

Part = Entry | HistogramBlock


@dataclass
class Track:
    """One tag's newest entries of one kind, in the order read, and how many were dropped.

    Histograms read in bulk stay in blocks (columns) until the page asks for them.
    """

    kind: str
    limit: int
    parts: deque[Part] = field(default_factory=deque)
    count: int = 0
    dropped: int = 0
    nbytes: int = 0

    def add(self, part: Part) -> None:
        self.parts.append(part)
        self.count += len(part) if isinstance(part, HistogramBlock) else 1
        self.nbytes += part.nbytes
        budget = MAX_IMAGE_BYTES_PER_TAG if self.kind == IMAGES else 1 << 62
        while self.count > self.limit or (self.nbytes > budget and self.count > 1):
            first = self.parts[0]
            size = len(first) if isinstance(first, HistogramBlock) else 1
            over = max(1, self.count - self.limit)
            if isinstance(first, HistogramBlock) and size > over:
                self.parts[0] = first.tail(size - over)
                self.nbytes -= first.nbytes - self.parts[0].nbytes
                size = over
            else:
                self.parts.popleft()
                self.nbytes -= first.nbytes
            self.count -= size
            self.dropped += size

    def drop_all(self, more: int) -> None:
        """Forget every entry kept, and `more` never kept: newer ones replace them all."""
        self.dropped += self.count + more
        self.parts.clear()
        self.count = self.nbytes = 0

    def view(self) -> TrackView:
        return TrackView(self.kind, tuple(self.parts), self.dropped)


@dataclass(frozen=True)
class TrackView:
    """A track as the page sees it: later reads never change it."""

    kind: str
    parts: tuple[Part, ...]
    dropped: int

    @cached_property
    def entries(self) -> tuple[Entry, ...]:
        """Every entry kept, oldest first (histogram blocks become entries here, once)."""
        out: list[Entry] = []
        for part in self.parts:
            if isinstance(part, HistogramBlock):
                out.extend(part.entries())
            else:
                out.append(part)
        return tuple(out)

    @property
    def latest_wall(self) -> float:
        """The newest wall time among the entries (0 without any)."""
        return max(
            (
                float(part.walls.max()) if isinstance(part, HistogramBlock) else part.wall
                for part in self.parts
                if not isinstance(part, HistogramBlock) or len(part)
            ),
            default=0.0,
        )

    def note(self) -> str | None:
        """What a viewer should know about entries that are not here."""
        if not self.dropped:
            return None
        count = sum(len(p) if isinstance(p, HistogramBlock) else 1 for p in self.parts)
        return f"{self.dropped:,} older {self.kind} dropped: the newest {count:,} are kept"


def event_files(directory: Path) -> list[Path]:
    """The event files under a folder, MAX_DEPTH deep and MAX_FILES at most, in name order;
    links are not followed."""
    found: list[Path] = []
    root = str(directory)
    for folder, dirs, files in os.walk(root):
        depth = folder[len(root) :].count(os.sep)
        if depth >= MAX_DEPTH:
            dirs.clear()
        dirs.sort()
        found.extend(
            Path(folder, name)
            for name in sorted(files)
            if "tfevents" in name and not os.path.islink(os.path.join(folder, name))
        )
        if len(found) >= MAX_FILES:
            break
    return found[:MAX_FILES]


class MediaDirectory(EventDirectory):
    """Every event file under one folder (any depth), its media kept per (folder, tag).

    ``tracks`` maps (the file's folder relative to ``label``, tag) to a :class:`Track`.
    """

    def __init__(self, directory: str | os.PathLike[str], label: str = "", **kwargs: Any) -> None:
        super().__init__(directory, **kwargs)
        self.label = label
        self.tracks: dict[tuple[str, str], Track] = {}
        self._plugins: dict[tuple[str, str], str] = {}
        self._refused: set[tuple[str, str]] = set()

    def _clear(self) -> None:
        super()._clear()
        self.tracks.clear()
        self._plugins.clear()
        self._refused.clear()

    def views(self) -> dict[tuple[str, str], TrackView]:
        return {key: track.view() for key, track in self.tracks.items()}

    def _list_files(self) -> list[Path]:
        return event_files(self.directory)

    def _run_of(self, path: Path) -> str:
        relative = path.parent.relative_to(self.directory).as_posix()
        if not self.label:
            return relative
        return self.label if relative == "." else f"{self.label}/{relative}"

    def _decode(self, state: _FileState, buf: bytes, starts: array, crcs: array) -> None:
        """Check each record's CRC and keep its media, in the order the records were read.

        TF2 summaries are sorted out in bulk (:func:`dashboard.mediascan.scan`); the
        rest (a tag's first record with its plugin's name, legacy fields) go through the
        protobuf parser first, so the plugin of every tag is known before its records are
        kept. Of each tag only the newest its bound keeps are decoded; the others are
        counted.
        """
        found = scan(buf, starts, crcs)
        for index in found.damaged:
            self._problem(state.path, state.offset + starts[index], "record fails its CRC; skipped")
        run = self._run_of(state.path)
        parsed = self._parse_rest(state, buf, starts, found.slow, run)
        scanned = {(run, records.tag): records for records in found.groups}
        for key in dict.fromkeys([*scanned, *parsed]):
            if self._plugins.get(key) not in KINDS:
                continue
            records = scanned.get(key)
            items = parsed.get(key, [])
            self._take(
                state,
                key,
                buf,
                starts,
                records.joined(items) if records else TagRecords.parsed_only(key[1], items),
            )

    def _parse_rest(
        self, state: _FileState, buf: bytes, starts: array, indices: list[int], run: str
    ) -> dict[tuple[str, str], list[tuple[int, int, float, Any]]]:
        """The records scan left, parsed one by one: per (folder, tag), each media value's
        (record index, step, wall time, tensor); plain scalars are skipped unparsed."""
        found: dict[tuple[str, str], list[tuple[int, int, float, Any]]] = {}
        plugins = self._plugins
        for index in indices:
            pos = starts[index]
            data = buf[pos + 12 : pos + 12 + _U64.unpack_from(buf, pos)[0]]
            if _scalar_point(data) is not None:
                continue
            try:
                event = event_pb2.Event.FromString(data)
            except Exception:  # protobuf's DecodeError types: all mean "bad bytes"
                self._problem(state.path, state.offset + pos, "record is not an Event; skipped")
                continue
            for value in event.summary.value:
                key = (run, value.tag)
                if value.HasField("metadata") and value.metadata.plugin_data.plugin_name:
                    plugins[key] = value.metadata.plugin_data.plugin_name
                kind = value.WhichOneof("value")
                if kind in ("image", "histo"):
                    value = data_compat.migrate_value(value)
                    plugins[key] = value.metadata.plugin_data.plugin_name
                elif kind != "tensor":
                    continue
                item = (index, event.step, event.wall_time, value.tensor)
                found.setdefault(key, []).append(item)
        return found

    def _take(
        self,
        state: _FileState,
        key: tuple[str, str],
        buf: bytes,
        starts: array,
        records: TagRecords,
    ) -> None:
        """One tag's records of a chunk into its track: the newest its bound keeps, decoded
        (histograms in bulk where they share a layout), in the order they were read."""
        track = self._track(state.path, state.offset + starts[int(records.rows[0])], key)
        if track is None:
            return
        self.events += len(records)
        if len(records) > track.limit:
            track.drop_all(len(records) - track.limit)
            records = records.newest(track.limit)
        pieces: list[tuple[int, Part | None]] = []
        alone: Iterable[int] = range(len(records))
        if track.kind == HISTOGRAMS:
            blocks, alone = histogram_blocks(buf, records)
            pieces.extend(
                (
                    int(positions[0]),
                    HistogramBlock(records.steps[positions], records.walls[positions], buckets),
                )
                for positions, buckets in blocks
            )
        for position in alone:
            offset = state.offset + starts[int(records.rows[position])]
            pieces.append(
                (position, self._entry(state.path, offset, track.kind, records, buf, position))
            )
        for _, piece in sorted(pieces, key=lambda item: item[0]):
            if piece is not None:
                track.add(piece)

    def _track(self, path: Path, offset: int, key: tuple[str, str]) -> Track | None:
        """The tag's track, made on its first record unless its kind has MAX_TAGS already."""
        track = self.tracks.get(key)
        if track is not None:
            return track
        plugin = self._plugins[key]
        if sum(t.kind == plugin for t in self.tracks.values()) >= MAX_TAGS:
            if key not in self._refused:
                self._refused.add(key)
                message = f"more than {MAX_TAGS} {plugin} tags: {key[1]!r} not kept"
                self._problem(path, offset, message)
            return None
        track = self.tracks[key] = Track(plugin, MAX_ENTRIES[plugin])
        return track

    def _entry(
        self, path: Path, offset: int, plugin: str, records: TagRecords, buf: bytes, position: int
    ) -> Entry | None:
        """One record's entry; what is wrong with it becomes a problem at `offset`."""
        step, wall = int(records.steps[position]), float(records.walls[position])
        try:
            entry, trouble = decode(plugin, step, wall, records.tensor(buf, position))
        except (ValueError, TypeError, IndexError, struct.error) as error:
            entry, trouble = None, f"not a readable {plugin} tensor ({error})"
        except Exception:  # protobuf's DecodeError types: all mean "bad bytes"
            entry, trouble = None, "not a tensor; skipped"
        if trouble:
            self._problem(path, offset, f"{records.tag!r} at step {step}: {trouble}")
        return entry


@dataclass(frozen=True)
class MediaSnapshot:
    """A run's media per worker: (folder, tag) -> track; the chief's includes tensorboard/."""

    workers: dict[int, dict[tuple[str, str], TrackView]]
    problems: tuple[str, ...] = ()


class RunMedia:
    """The media readers of one run, kept between refreshes and shared by viewers (locked)."""

    def __init__(self, run_dir: Path, min_interval: float = 1.0) -> None:
        self.run_dir = run_dir
        self.min_interval = min_interval
        self._lock = threading.Lock()
        self._readers: dict[str, MediaDirectory] = {}
        self._snapshot = MediaSnapshot({})
        self._polled = 0.0

    def refresh(self, indices: Iterable[int]) -> MediaSnapshot:
        """Read what was added since the last refresh (at most once per min_interval)."""
        with self._lock:
            now = time.monotonic()
            if self._polled and now - self._polled < self.min_interval:
                return self._snapshot
            self._polled = now
            roots = [(index, worker_rel(index)) for index in indices]
            roots.append((0, TENSORBOARD_DIR))
            readers = [(i, r) for i, r in ((i, self._reader(rel)) for i, rel in roots) if r]
            # Read here, not in one process per core as the scalars' first load is: sending
            # the decoded histograms back costs more than reading them (benchmarks/
            # bench_dashboard.py, part 5).
            fresh = [reader for _, reader in readers if reader.fresh]
            workers: dict[int, dict[tuple[str, str], TrackView]] = {}
            changed = not self._snapshot.workers
            problems: list[str] = []
            for index, reader in readers:
                result: PollResult = reader.poll()
                changed |= bool(result.events or result.reset or reader in fresh)
                workers.setdefault(index, {}).update(reader.views())
                problems.extend(p.within(self.run_dir) for p in reader.problems)
            if changed or tuple(problems) != self._snapshot.problems:
                self._snapshot = MediaSnapshot(workers, tuple(problems))
            return self._snapshot

    def _reader(self, relative: str) -> MediaDirectory | None:
        reader = self._readers.get(relative)
        if reader is None:
            path = safe_dir(self.run_dir, relative)
            if path is None:
                return None
            reader = self._readers[relative] = MediaDirectory(path, label=relative)
        return reader


def read_media(directory: str | os.PathLike[str]) -> dict[tuple[str, str], TrackView]:
    """All media under one folder, read once, keyed by (folder below it, tag)."""
    reader = MediaDirectory(directory)
    reader.poll()
    return reader.views()
