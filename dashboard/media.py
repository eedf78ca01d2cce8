"""Images, histograms and text from event files, read incrementally like the scalars.

TensorBoard users log more than scalars: ``tf.summary.image`` (a string tensor ``[width,
height, png, ...]``), ``tf.summary.histogram`` and Keras' ``TensorBoard(histogram_freq=1)``
(a ``[k, 3]`` tensor of bucket left edges, right edges and counts) and ``tf.summary.text`` (a
string tensor). TF2 names the kind once per tag, in the first value's plugin metadata; older
writers use the ``image`` and ``histo`` fields, which TensorBoard's own ``data_compat``
turns into the same tensors, as it does here.

:class:`MediaDirectory` is :class:`dashboard.events.EventDirectory` (same framing, CRC
checks, partial records, damaged and replaced files) over a whole folder tree, keeping per
tag only the newest few entries (and bytes), with a count of those dropped. Whatever is wrong
with one record (not a PNG, too big, NaN buckets, too much text) becomes a :class:`Problem`
and the rest is read. :class:`RunMedia` holds the readers of one run between page refreshes.
"""

from __future__ import annotations

import io
import os
import struct
import threading
import time
from array import array
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage
from tensorboard import data_compat
from tensorboard.compat.proto import event_pb2
from tensorboard.util import tensor_util

from dashboard.events import EventDirectory, PollResult, _FileState
from dashboard.live import poll_each
from dashboard.runs import safe_dir
from dashboard.scalardecode import _scalar_point
from dashboard.tfrecord import U32S as _U32S
from dashboard.tfrecord import U64 as _U64
from runformat import TENSORBOARD_DIR, worker_rel
from runformat.tfrecord import MASK_DELTA as _MASK_DELTA
from runformat.tfrecord import U32 as _U32

IMAGES = "images"
HISTOGRAMS = "histograms"
TEXT = "text"
KINDS = (IMAGES, HISTOGRAMS, TEXT)

# Entries kept per tag (the newest); TensorBoard keeps 10 images and 500 histograms.
MAX_ENTRIES = {IMAGES: 20, HISTOGRAMS: 500, TEXT: 100}
# Bytes of images kept per tag: the oldest go first when a tag holds more.
MAX_IMAGE_BYTES_PER_TAG = 32 << 20
# One image bigger than this, or with more pixels, is not kept (a warning says so).
MAX_IMAGE_BYTES = 8 << 20
MAX_IMAGE_PIXELS = 16_000_000
# Tags per kind and folder tree; text is clipped per string and per entry.
MAX_TAGS = 256
MAX_TEXT_CHARS = 10_000
MAX_TEXT_CELLS = 1_000
MAX_BUCKETS = 10_000
# Folders below a run's root searched for event files, and event files read per root.
MAX_DEPTH = 6
MAX_FILES = 2_000
# A first read of at least this many bytes in all is shared among the cores.
PARALLEL_BYTES = 4 << 20

_PNG_SIZE = struct.Struct(">II")
_GIF_SIZE = struct.Struct("<HH")
# dtype enum -> bytes per element of the float tensors a histogram may come in.
_FLOATS = {1: 4, 2: 8}
_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")


@dataclass(frozen=True)
class Image:
    """One image event: its step, wall time and pictures (PNG/JPEG/GIF bytes, checked)."""

    step: int
    wall: float
    width: int
    height: int
    pictures: tuple[bytes, ...]

    @property
    def nbytes(self) -> int:
        return sum(len(p) for p in self.pictures)


@dataclass(frozen=True)
class Histogram:
    """One histogram event: finite bucket edges and counts, as ``[k, 3]`` float64 rows."""

    step: int
    wall: float
    buckets: np.ndarray

    @property
    def nbytes(self) -> int:
        return int(self.buckets.nbytes)


@dataclass(frozen=True)
class Text:
    """One text event: its strings (clipped) and the tensor's shape (``()``, ``(n,)``...)."""

    step: int
    wall: float
    strings: tuple[str, ...]
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return sum(len(s) for s in self.strings)


Entry = Image | Histogram | Text


@dataclass
class Track:
    """One tag's newest entries of one kind, in the order read, and how many were dropped."""

    kind: str
    limit: int
    entries: deque[Entry] = field(default_factory=deque)
    dropped: int = 0
    nbytes: int = 0

    def add(self, entry: Entry) -> None:
        self.entries.append(entry)
        self.nbytes += entry.nbytes
        budget = MAX_IMAGE_BYTES_PER_TAG if self.kind == IMAGES else 1 << 62
        while len(self.entries) > self.limit or (self.nbytes > budget and len(self.entries) > 1):
            self.nbytes -= self.entries.popleft().nbytes
            self.dropped += 1

    def view(self) -> TrackView:
        return TrackView(self.kind, tuple(self.entries), self.dropped)


@dataclass(frozen=True)
class TrackView:
    """A track as the page sees it: later reads never change it."""

    kind: str
    entries: tuple[Entry, ...]
    dropped: int

    def note(self) -> str | None:
        """What a viewer should know about entries that are not here."""
        if not self.dropped:
            return None
        return (
            f"{self.dropped:,} older {self.kind} dropped: the newest {len(self.entries):,} are kept"
        )


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
        found: list[Path] = []
        root = str(self.directory)
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

    def _run_of(self, path: Path) -> str:
        relative = path.parent.relative_to(self.directory).as_posix()
        if not self.label:
            return relative
        return self.label if relative == "." else f"{self.label}/{relative}"

    def _decode(self, state: _FileState, buf: bytes, starts: array, crcs: array) -> None:
        """Check each record's CRC and keep its media; plain scalars are skipped unparsed.

        A chunk's values are gathered per tag first, so that those its bound would drop
        anyway are counted, not decoded, and a tag's histograms are decoded together.
        """
        run = self._run_of(state.path)
        found: dict[tuple[str, str], list[tuple[int, float, Any, int]]] = {}
        plugins = self._plugins
        for pos, crc in zip(starts, crcs, strict=True):
            end = pos + 12 + _U64.unpack_from(buf, pos)[0]
            if (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & _U32 != _U32S.unpack_from(buf, end)[0]:
                self._problem(state.path, state.offset + pos, "record fails its CRC; skipped")
                continue
            data = buf[pos + 12 : end]
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
                if plugins.get(key) in KINDS:
                    item = (event.step, event.wall_time, value.tensor, state.offset + pos)
                    found.setdefault(key, []).append(item)
        for key, items in found.items():
            self._take(state, key, items)

    def _take(
        self, state: _FileState, key: tuple[str, str], items: list[tuple[int, float, Any, int]]
    ) -> None:
        """Decode one tag's values of a chunk (the newest its bound keeps) into its track."""
        plugin = self._plugins[key]
        track = self.tracks.get(key)
        if track is None:
            if sum(t.kind == plugin for t in self.tracks.values()) >= MAX_TAGS:
                if key not in self._refused:
                    self._refused.add(key)
                    self._problem(
                        state.path,
                        items[0][3],
                        f"more than {MAX_TAGS} {plugin} tags: {key[1]!r} not kept",
                    )
                return
            track = self.tracks[key] = Track(plugin, MAX_ENTRIES[plugin])
        skipped = max(0, len(items) - track.limit)
        if skipped:
            track.dropped += skipped + len(track.entries)
            track.entries.clear()
            track.nbytes = 0
            items = items[skipped:]
        decoded: list[Histogram | None] = (
            _histograms(items) if plugin == HISTOGRAMS else [None] * len(items)
        )
        for position, (step, wall, tensor, offset) in enumerate(items):
            entry: Entry | None = decoded[position]
            trouble: str | None = None
            if entry is None:
                try:
                    entry, trouble = decode(plugin, step, wall, tensor)
                except (ValueError, TypeError, IndexError, struct.error) as error:
                    entry, trouble = None, f"not a readable {plugin} tensor ({error})"
            if trouble:
                self._problem(state.path, offset, f"{key[1]!r} at step {step}: {trouble}")
            if entry is not None:
                track.add(entry)
        self.events += len(items) + skipped


def _histograms(items: list[tuple[int, float, Any, int]]) -> list[Histogram | None]:
    """Histograms of one tag decoded together: the float64 [k, 3] tensors of one k whose
    numbers are all finite; None for any other (decoded alone, with its problem)."""
    out: list[Histogram | None] = [None] * len(items)
    picked, contents = [], []
    size = -1
    for position, (_, _, tensor, _) in enumerate(items):
        dims = tensor.tensor_shape.dim
        content = tensor.tensor_content
        if tensor.dtype != 2 or len(dims) != 2 or dims[1].size != 3 or not content:
            continue
        if size == -1:
            size = len(content)
        if len(content) == size == 24 * dims[0].size and size <= 24 * MAX_BUCKETS:
            picked.append(position)
            contents.append(content)
    if not picked:
        return out
    buckets = np.frombuffer(b"".join(contents), "<f8").reshape(len(picked), size // 24, 3)
    finite = np.isfinite(buckets).all(axis=(1, 2))
    for row, position in enumerate(picked):
        if finite[row]:
            step, wall, _, _ = items[position]
            out[position] = Histogram(step, wall, buckets[row].copy())
    return out


def decode(plugin: str, step: int, wall: float, tensor: Any) -> tuple[Entry | None, str | None]:
    """One media tensor as an entry, and what was wrong with it (None: nothing)."""
    elements = 1
    for dim in tensor.tensor_shape.dim:
        elements *= max(0, dim.size)
    if plugin == HISTOGRAMS:
        if elements > 3 * MAX_BUCKETS:
            return None, f"{elements // 3:,} buckets, over the {MAX_BUCKETS:,} shown; skipped"
        content = tensor.tensor_content
        if tensor.dtype in _FLOATS and content and len(content) == elements * _FLOATS[tensor.dtype]:
            kind = "<f8" if _FLOATS[tensor.dtype] == 8 else "<f4"
            shape = [d.size for d in tensor.tensor_shape.dim]
            return _histogram(step, wall, np.frombuffer(content, kind).reshape(shape))
        return _histogram(step, wall, tensor_util.make_ndarray(tensor))
    if tensor.dtype != 7:  # DT_STRING
        return None, f"a {plugin} tensor should hold strings; skipped"
    if plugin == IMAGES:
        return _image(step, wall, list(tensor.string_val))
    return _text(step, wall, list(tensor.string_val), [d.size for d in tensor.tensor_shape.dim])


def _histogram(step: int, wall: float, array_: np.ndarray) -> tuple[Entry | None, str | None]:
    if array_.size == 0:
        return Histogram(step, wall, np.zeros((0, 3))), None
    if array_.ndim != 2 or array_.shape[1] != 3:
        return None, f"a histogram is a [k, 3] tensor, not {list(array_.shape)}; skipped"
    buckets = np.asarray(array_, dtype=np.float64)
    trouble = None
    if not np.isfinite(buckets.sum()):  # one pass; a NaN or infinity anywhere shows in the sum
        finite = np.isfinite(buckets).all(axis=1)
        bad = int((~finite).sum())
        trouble = f"{bad:,} of {len(buckets):,} histogram buckets are not finite; left out"
        buckets = buckets[finite]
    return Histogram(step, wall, buckets), trouble


def picture_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG, JPEG or GIF picture from its header, else None.

    The page decodes the picture later, so its own size (not the tensor's word for it) is
    what is checked against MAX_IMAGE_PIXELS. PNG and GIF headers are read here; a JPEG's
    size is found by Pillow, which reads only the header.
    """
    if data.startswith(_SIGNATURES[0]):
        if len(data) < 33 or data[12:16] != b"IHDR":
            return None
        width, height = _PNG_SIZE.unpack_from(data, 16)
        return width, height
    if data.startswith((b"GIF87a", b"GIF89a")):
        return _GIF_SIZE.unpack_from(data, 6) if len(data) >= 13 else None
    if not data.startswith(_SIGNATURES[1]):
        return None
    try:
        with PILImage.open(io.BytesIO(data)) as picture:
            return picture.size if picture.format in ("PNG", "JPEG", "GIF") else None
    except Exception:  # Pillow raises many types for bytes that are not a picture
        return None


def _image(step: int, wall: float, strings: list[bytes]) -> tuple[Entry | None, str | None]:
    if len(strings) < 2:
        return None, "an image tensor holds width, height and pictures; skipped"
    try:
        width, height = int(strings[0]), int(strings[1])
    except ValueError:
        return None, "the image's width and height are not numbers; skipped"
    if width * height > MAX_IMAGE_PIXELS:
        return (
            None,
            f"{width:,} x {height:,} pixels is over the {MAX_IMAGE_PIXELS:,} shown; skipped",
        )
    kept: list[bytes] = []
    troubles: list[str] = []
    for number, picture in enumerate(strings[2:]):
        if len(picture) > MAX_IMAGE_BYTES:
            troubles.append(
                f"image {number} is {len(picture) / 1e6:,.1f} MB, over the"
                f" {MAX_IMAGE_BYTES >> 20} MB shown"
            )
        elif (size := picture_size(picture)) is None:
            troubles.append(f"image {number} is not a PNG, JPEG or GIF")
        elif size[0] * size[1] > MAX_IMAGE_PIXELS:
            troubles.append(
                f"image {number} has {size[0]:,} x {size[1]:,} pixels, over the"
                f" {MAX_IMAGE_PIXELS:,} shown"
            )
        else:
            kept.append(picture)
    trouble = "; ".join(troubles) + "; skipped" if troubles else None
    if not kept:
        return None, trouble or "no pictures in the image tensor"
    return Image(step, wall, width, height, tuple(kept)), trouble


def _text(
    step: int, wall: float, strings: list[bytes], shape: list[int]
) -> tuple[Entry | None, str | None]:
    troubles = []
    if len(strings) > MAX_TEXT_CELLS:
        troubles.append(f"{len(strings):,} strings, the first {MAX_TEXT_CELLS:,} kept")
        strings = strings[:MAX_TEXT_CELLS]
        shape = [len(strings)]
    decoded = []
    clipped = 0
    for raw in strings:
        value = raw.decode("utf-8", "replace")
        if len(value) > MAX_TEXT_CHARS:
            value = value[:MAX_TEXT_CHARS] + "…"
            clipped += 1
        decoded.append(value)
    if clipped:
        troubles.append(f"{clipped:,} strings clipped to {MAX_TEXT_CHARS:,} characters")
    if int(np.prod(shape, dtype=np.int64)) != len(decoded):
        shape = [len(decoded)]
    return Text(step, wall, tuple(decoded), tuple(shape)), "; ".join(troubles) or None


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
            fresh = [reader for _, reader in readers if reader.fresh]
            # A first read of many folders goes to one process per core (dashboard.live).
            if sum(reader.unread_bytes() for reader in fresh) >= PARALLEL_BYTES:
                for position, (polled, _, _) in poll_each(fresh):
                    assert isinstance(polled, MediaDirectory)
                    self._readers[polled.label] = polled
                    if polled is not fresh[position]:
                        readers = [(i, polled if r is fresh[position] else r) for i, r in readers]
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
