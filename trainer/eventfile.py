"""Scalars into a TensorBoard event file without TensorFlow: the wrapper of a user's program
writes its `system/*` tags this way and must start in a fraction of a second.

An event file is a TFRecord stream of `Event` protos (TensorBoard's own protobuf classes,
no TensorFlow needed); scalars are `simple_value`s, which TensorBoard and the dashboard read.
Writes are best effort (trainer.guard): a record the disk refuses is cut off again, so the
file never holds half a record, and writing resumes when the disk takes it.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path

from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary

from runformat import EVENT_FILE_VERSION, event_file_name
from runformat.tfrecord import frame
from trainer.guard import BestEffort


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), in Python: records here are tens of bytes, a few per second."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def scalar_event(step: int, scalars: Mapping[str, float], wall_time: float) -> bytes:
    """One serialized Event holding every scalar of one moment."""
    values = [Summary.Value(tag=tag, simple_value=float(v)) for tag, v in scalars.items()]
    return Event(wall_time=wall_time, step=step, summary=Summary(value=values)).SerializeToString()


class ScalarFile:
    """Appends scalar events to one event file in `directory` (created on the first write).

    The file is named like TensorFlow's (`events.out.tfevents.<secs>.<host>.<pid>...`), so
    TensorBoard and the launcher's mirror treat it like any other.
    """

    def __init__(self, directory: Path, suffix: str = "wrapper") -> None:
        self.directory = directory
        self.suffix = suffix
        self.path: Path | None = None
        self.size = 0
        self.writes = BestEffort(f"events in {directory.name}/")

    def write(
        self, step: int, scalars: Mapping[str, float], wall_time: float | None = None
    ) -> bool:
        """Append one event; False if the disk refused it (then it is lost, not queued)."""
        record = frame(
            scalar_event(step, scalars, time.time() if wall_time is None else wall_time), crc32c
        )
        return self.writes.run(lambda: self._append(record), self.directory)

    def _append(self, record: bytes) -> None:
        if self.path is not None and not self.path.exists():
            self.path = None  # the folder vanished: start again, header first
        if self.path is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            now = time.time()
            name = event_file_name(now, socket.gethostname(), os.getpid(), self.suffix)
            path = self.directory / name
            header = frame(
                Event(wall_time=now, file_version=EVENT_FILE_VERSION).SerializeToString(), crc32c
            )
            self._write_at(path, 0, header)
            self.path, self.size = path, len(header)
        self._write_at(self.path, self.size, record)
        self.size += len(record)

    def _write_at(self, path: Path, offset: int, data: bytes) -> None:
        """Write `data` at the end of the file's good records, or cut back to them on failure
        (a new file next time if even that fails)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            try:
                if os.write(fd, data) != len(data):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            except OSError:
                try:
                    os.ftruncate(fd, offset)
                except OSError:
                    self.path = None
                raise
        finally:
            os.close(fd)
