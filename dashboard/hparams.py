"""The hyperparameters a program logged for TensorBoard's HParams tab, per session.

``hp.hparams(dict)`` inside a summary writer, or Keras' ``hp.KerasCallback(logdir, hparams)``
(which the built-in trainer uses too), writes a summary whose plugin is ``hparams`` and whose
content is a serialized ``HParamsPluginData``: ``session_start_info`` (name -> number, string
or bool, a group name, a start time) when training begins, ``session_end_info`` (a status, an
end time) when it ends, and ``experiment`` for ``hp.hparams_config`` (the domains, not the
values: not shown). TensorBoard calls the folder holding a start a session.

Those records are rare in files that may hold millions of scalars, so this reader does not
walk every record as the others do: it looks for the plugin's name in the bytes (memchr
speed), finds the record around each hit (a header whose CRC checks, a few hundred bytes
before it), checks that record's CRC and parses it alone. It reads the same folders as the
Media tab (every worker's, the chief's tensorboard/), incrementally, and what is wrong with a
record (not HParamsPluginData, too many sessions or names, a 1 MB value) becomes a problem,
never an exception.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tensorboard.compat.proto import event_pb2
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

from dashboard import text
from dashboard.events import EventDirectory, _FileState
from dashboard.media import event_files
from dashboard.runs import safe_dir
from dashboard.tfrecord import HEADER, MAX_RECORD, U32S, masked_crc32c
from runformat import TENSORBOARD_DIR, worker_rel

PLUGIN = metadata.PLUGIN_NAME
START_TAG = metadata.SESSION_START_INFO_TAG
END_TAG = metadata.SESSION_END_INFO_TAG
# PluginData.plugin_name (field 1, a string of 7 bytes): in every hparams record, verbatim.
_MARKER = b"\x0a" + bytes([len(PLUGIN)]) + PLUGIN.encode()
# How far before the plugin's name a record may start: its header, wall time, step, the
# summary's and value's own headers, a tag, the empty tensor and the metadata's headers.
LOOKBACK = 512
# Sessions (folders with a start) kept per run, names kept per session, characters per
# name and per string value: more is a warning, not a bigger page.
MAX_SESSIONS = 64
MAX_HPARAMS = 100
MAX_NAME_CHARS = 100
MAX_VALUE_CHARS = 500

Value = float | str | bool


@dataclass(frozen=True)
class Session:
    """What one folder's program logged: its hyperparameters, when it started and (once a
    session_end_info is there) how and when it ended."""

    folder: str
    worker: int
    hparams: dict[str, Value]
    group: str = ""
    started: float | None = None
    status: str | None = None
    ended: float | None = None


@dataclass(frozen=True)
class HParamsSnapshot:
    """A run's sessions, in folder order, and what could not be read."""

    sessions: tuple[Session, ...] = ()
    problems: tuple[str, ...] = ()

    def values(self) -> dict[str, str]:
        """Every hyperparameter of the run as text: one session's value, or the different
        values of several sessions joined with ' | '."""
        found: dict[str, list[str]] = {}
        for session in self.sessions:
            for name, value in session.hparams.items():
                shown = found.setdefault(name, [])
                if (formatted := show(value)) not in shown:
                    shown.append(formatted)
        return {name: text.clip(" | ".join(v), MAX_VALUE_CHARS) for name, v in found.items()}


def show(value: Value) -> str:
    """A value as TensorBoard writes it: true/false, 32 (not 32.0), 0.001, a string as is."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        value = float(value)
        if math.isfinite(value) and value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    return value


def status_name(status: int) -> str:
    """api_pb2.Status as a word: success, failure, running or unknown."""
    try:
        return api_pb2.Status.Name(status).removeprefix("STATUS_").lower()  # type: ignore[arg-type]
    except ValueError:
        return "unknown"


def start_values(start: Any) -> tuple[dict[str, Value], list[str]]:
    """A SessionStartInfo's hyperparameters (names in order, clipped) and what was wrong."""
    troubles: list[str] = []
    names = sorted(start.hparams)
    if len(names) > MAX_HPARAMS:
        troubles.append(f"{len(names):,} hyperparameters, the first {MAX_HPARAMS} kept")
        names = names[:MAX_HPARAMS]
    values: dict[str, Value] = {}
    clipped = 0
    for name in names:
        value = start.hparams[name]
        kind = value.WhichOneof("kind")
        shown = text.clip(name, MAX_NAME_CHARS)
        clipped += shown != name
        if kind == "number_value":
            values[shown] = float(value.number_value)
        elif kind == "bool_value":
            values[shown] = bool(value.bool_value)
        elif kind == "string_value":
            string = value.string_value
            values[shown] = text.clip(string, MAX_VALUE_CHARS)
            clipped += len(string) > MAX_VALUE_CHARS
        else:
            troubles.append(f"{shown!r} is not a number, string or bool; skipped")
    if clipped:
        troubles.append(f"{clipped} names or values clipped to {MAX_VALUE_CHARS} characters")
    return values, troubles


class HParamsDirectory(EventDirectory):
    """The hparams records of every event file under one folder (any depth), kept per
    folder: the first session start (later ones, of a restart, are counted), the last end."""

    def __init__(self, directory: str | os.PathLike[str], label: str = "", worker: int = 0) -> None:
        super().__init__(directory)
        self.label = label
        self.worker = worker
        self.sessions: dict[str, Session] = {}
        self._ends: dict[str, tuple[str, float]] = {}
        self._warned: set[str] = set()

    def _clear(self) -> None:
        super()._clear()
        self.sessions.clear()
        self._ends.clear()
        self._warned.clear()

    def _list_files(self) -> list[Path]:
        return event_files(self.directory)

    def views(self, room: int = MAX_SESSIONS) -> list[Session]:
        """The sessions, each with its end when one was read (at most `room` of them)."""
        found = []
        for folder, session in list(self.sessions.items())[:room]:
            end = self._ends.get(folder)
            if end is not None:
                session = Session(
                    session.folder, session.worker, session.hparams, session.group,
                    session.started, end[0], end[1],
                )  # fmt: skip
            found.append(session)
        return found

    def _folder(self, path: Path) -> str:
        relative = path.parent.relative_to(self.directory).as_posix()
        if not self.label:
            return relative
        return self.label if relative == "." else f"{self.label}/{relative}"

    def _parse(self, state: _FileState, buf: bytes) -> int:
        """Take the whole hparams records in buf; return how many bytes need no second look
        (a record that is not whole yet is read again from its start)."""
        done = 0
        hit = buf.find(_MARKER)
        while hit >= 0:
            start = _record_start(buf, hit, done)
            if start is None:  # the bytes are in no record: a string that holds them
                hit = buf.find(_MARKER, hit + 1)
                continue
            length = HEADER.unpack_from(buf, start)[0]
            end = start + 12 + length
            if end + 4 > len(buf):
                return start
            data = buf[start + 12 : end]
            if masked_crc32c(data) != U32S.unpack_from(buf, end)[0]:
                self._problem(state.path, state.offset + start, "record fails its CRC; skipped")
                hit = buf.find(_MARKER, hit + 1)
                continue
            self._take(state.path, state.offset + start, data)
            done = end + 4
            hit = buf.find(_MARKER, done)
        return max(done, len(buf) - LOOKBACK, 0)

    def _take(self, path: Path, offset: int, data: bytes) -> None:
        """One record's hparams summaries into the folder's session."""
        try:
            event = event_pb2.Event.FromString(data)
        except Exception:  # protobuf's DecodeError types: all mean "bad bytes"
            self._problem(path, offset, "record is not an Event; skipped")
            return
        folder = self._folder(path)
        for value in event.summary.value:
            plugin = value.metadata.plugin_data
            if plugin.plugin_name != PLUGIN:
                continue
            self.events += 1
            tag = text.clip(value.tag, 80)
            try:
                data_pb = plugin_data_pb2.HParamsPluginData.FromString(plugin.content)
            except Exception:  # protobuf's DecodeError types
                self._problem(path, offset, f"{tag!r} is not TensorBoard hparams data; skipped")
                continue
            kind = data_pb.WhichOneof("data")
            if data_pb.version != metadata.PLUGIN_DATA_VERSION:
                self._problem(path, offset, f"{tag!r}: hparams data version {data_pb.version}")
            elif kind == "session_start_info":
                self._start(path, offset, folder, data_pb.session_start_info)
            elif kind == "session_end_info":
                end = data_pb.session_end_info
                self._ends[folder] = (status_name(end.status), end.end_time_secs or event.wall_time)
            elif kind is None:
                self._problem(path, offset, f"{tag!r} holds no session or experiment; skipped")

    def _start(self, path: Path, offset: int, folder: str, start: Any) -> None:
        values, troubles = start_values(start)
        for trouble in troubles:
            self._problem(path, offset, trouble)
        known = self.sessions.get(folder)
        if known is not None:
            if known.hparams != values and folder not in self._warned:
                self._warned.add(folder)
                self._problem(
                    path, offset, "more sessions with other hyperparameters in this folder:"
                    " the first is shown"
                )  # fmt: skip
            return
        if len(self.sessions) >= MAX_SESSIONS:
            if "" not in self._warned:
                self._warned.add("")
                self._problem(path, offset, f"more than {MAX_SESSIONS} sessions: the rest not kept")
            return
        self.sessions[folder] = Session(
            folder,
            self.worker,
            values,
            text.clip(start.group_name, MAX_NAME_CHARS),
            start.start_time_secs or None,
        )


def _record_start(buf: bytes, hit: int, floor: int) -> int | None:
    """The start of the record holding buf[hit:] (the nearest header before it whose CRC
    checks and whose record reaches past the hit), at or after `floor`; None if none."""
    last = hit + len(_MARKER)
    for start in range(hit - 12, max(floor, hit - LOOKBACK, 0) - 1, -1):
        length, crc = HEADER.unpack_from(buf, start)
        reaches = length <= MAX_RECORD and start + 12 + length >= last
        if reaches and masked_crc32c(buf[start : start + 8]) == crc:
            return start
    return None


@dataclass
class RunHParams:
    """The hparams readers of one run, kept between refreshes and shared by viewers (locked)."""

    run_dir: Path
    # A session logs twice (its start and end): every few seconds is soon enough, and a
    # refresh lists every worker's folder tree (55 ms of CPU for 1,000 workers).
    min_interval: float = 5.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _readers: dict[str, HParamsDirectory] = field(default_factory=dict)
    _snapshot: HParamsSnapshot = field(default_factory=HParamsSnapshot)
    _polled: float = 0.0

    def refresh(self, indices: Iterable[int]) -> HParamsSnapshot:
        """Read what was added since the last refresh (at most once per min_interval)."""
        with self._lock:
            now = time.monotonic()
            if self._polled and now - self._polled < self.min_interval:
                return self._snapshot
            self._polled = now
            roots = [(0, TENSORBOARD_DIR), *((index, worker_rel(index)) for index in indices)]
            sessions: list[Session] = []
            problems: list[str] = []
            for index, relative in roots:
                reader = self._reader(index, relative)
                if reader is None:
                    continue
                reader.poll()
                sessions += reader.views(MAX_SESSIONS - len(sessions))
                problems += [p.within(self.run_dir) for p in reader.problems]
            self._snapshot = HParamsSnapshot(tuple(sessions), tuple(problems))
            return self._snapshot

    def _reader(self, index: int, relative: str) -> HParamsDirectory | None:
        reader = self._readers.get(relative)
        if reader is None:
            path = safe_dir(self.run_dir, relative)
            if path is None:
                return None
            reader = self._readers[relative] = HParamsDirectory(path, relative, index)
        return reader


def read_hparams(run_dir: Path, indices: Sequence[int]) -> HParamsSnapshot:
    """A run's hyperparameters, read once."""
    return RunHParams(run_dir, min_interval=0.0).refresh(indices)
