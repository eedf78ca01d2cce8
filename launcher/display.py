"""What the launcher prints: host-prefixed worker output, a live progress block, launcher.log.

Everything printed also goes to launcher.log. On a terminal the per-worker progress lines are
redrawn in place below the scrolling log; elsewhere (CI, a pipe) they become plain lines, at
most one per worker every few seconds.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from runformat import MAX_STATUS_BYTES, read_json_object

MAX_UNWRITTEN = 1 << 20  # launcher.log bytes kept in memory while the disk refuses them


def read_status(path: Path) -> dict[str, Any] | None:
    """A worker's status.json, or None while it is missing or unreadable."""
    return read_json_object(path, MAX_STATUS_BYTES, [])


def _num(value: object, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, (int, float)) else "-"


def progress_text(status: dict[str, Any] | None) -> str:
    """`running  epoch 1/3  step 40/120  loss 0.5312  acc 0.870` from a status.json."""
    if status is None:
        return "waiting for the worker to report"
    epochs = status.get("epochs")
    total = status.get("steps_total")
    parts = [
        str(status.get("state", "?")),
        f"epoch {status.get('epoch', 0)}/{epochs if epochs is not None else '?'}",
        f"step {status.get('step', 0)}/{total if total is not None else '?'}",
        f"loss {_num(status.get('loss'), '.4f')}",
        f"acc {_num(status.get('accuracy'), '.3f')}",
    ]
    if status.get("error"):
        parts.append(f"error: {status['error']}")
    return "  ".join(parts)


@dataclass
class LogTail:
    """Reads the new complete lines of a growing file (a worker.log being mirrored)."""

    path: Path
    offset: int = 0
    partial: bytes = b""

    def new_lines(self) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return []
        self.offset += len(data)
        data = self.partial + data
        *lines, self.partial = data.split(b"\n")
        return [line.decode("utf-8", "replace").rstrip("\r") for line in lines]

    def flush(self) -> list[str]:
        """The lines so far plus a last line without a newline (at the end of a run)."""
        lines = self.new_lines()
        if self.partial:
            lines.append(self.partial.decode("utf-8", "replace"))
            self.partial = b""
        return lines


class Output:
    """The launcher's voice: terminal and launcher.log at once, thread-safe."""

    def __init__(
        self, stream: TextIO | None = None, live: bool | None = None, plain_every: float = 5.0
    ) -> None:
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.plain_every = plain_every
        self.log_path: Path | None = None
        self._log_fd: int | None = None
        self._unwritten = b""  # log bytes the disk refused; written first once it takes them
        self._log_failing = False
        self._lock = threading.Lock()
        self._footer: list[str] = []
        self._last_plain: dict[str, tuple[float, str]] = {}

    def open_log(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.log_path = path

    def close(self) -> None:
        with self._lock:
            self._clear_footer()
            self._footer = []
            if self._log_fd is not None:
                self._write_log(b"")
                os.close(self._log_fd)
                self._log_fd = None

    def _write_log(self, data: bytes) -> None:
        """Append to launcher.log; a full or failing disk must not end the job (its workers
        would be left unwatched): warn once on the terminal, keep the lines, try again later."""
        assert self._log_fd is not None
        self._unwritten += data
        try:
            while self._unwritten:
                self._unwritten = self._unwritten[os.write(self._log_fd, self._unwritten) :]
        except OSError as exc:
            self._unwritten = self._unwritten[-MAX_UNWRITTEN:]
            if not self._log_failing:
                self._log_failing = True
                self.stream.write(
                    f"WARNING: cannot write {self.log_path}: {exc.strerror or exc}; the job "
                    "goes on, and the log is written once the disk takes it again\n"
                )
            return
        if self._log_failing:
            self._log_failing = False
            self.stream.write(f"{self.log_path} is written again\n")

    def _clear_footer(self) -> None:
        if self.live and self._footer:
            self.stream.write(f"\x1b[{len(self._footer)}F\x1b[J")

    def _draw_footer(self) -> None:
        if self.live and self._footer:
            self.stream.write("".join(line + "\n" for line in self._footer))

    def line(self, text: str = "") -> None:
        """Print one line (or several) to the terminal and to launcher.log."""
        with self._lock:
            self._clear_footer()
            self.stream.write(text + "\n")
            self._draw_footer()
            if self._log_fd is not None:
                self._write_log((text + "\n").encode())
            self.stream.flush()

    def lines(self, texts: list[str]) -> None:
        for text in texts:
            self.line(text)

    def progress(self, rows: list[tuple[str, str]]) -> None:
        """Per-worker (prefix, text): redrawn in place on a terminal, plain lines otherwise."""
        if self.live:
            with self._lock:
                self._clear_footer()
                self._footer = [f"{prefix} {text}" for prefix, text in rows]
                self._draw_footer()
                self.stream.flush()
            return
        now = time.monotonic()
        for prefix, text in rows:
            last_time, last_text = self._last_plain.get(prefix, (0.0, ""))
            if text != last_text and now - last_time >= self.plain_every:
                self._last_plain[prefix] = (now, text)
                self.line(f"{prefix} {text}")
