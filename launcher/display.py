"""What the launcher prints: a header, one table of the workers, events, and a summary.

On a terminal the table is redrawn in place (rich.live); elsewhere (CI, a pipe, a file) each
worker gets a plain line when it passes a 10% mark of its steps, at most one every 30 s, and
a last one when it finishes (a run of a minute prints two or three per worker, a long run
about eleven). --verbose also streams
every worker's output; --quiet prints only events and the summary. rich honours NO_COLOR and
the terminal's width; narrow terminals drop the least needed columns. launcher.log gets every
line printed, every worker's whole output and the plain progress lines, whatever the
terminal showed.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from launcher.options import Verbosity
from runformat import MAX_STATUS_BYTES, UNTIMED_PHASES, read_json_object
from runformat.noise import is_keras_progress

PLAIN_MARKS = 10  # a plain progress line when a worker passes a 10% mark of its steps...
PLAIN_GAP = 30.0  # ...and not more than one every 30 s
MAX_UNWRITTEN = 1 << 20  # launcher.log bytes kept in memory while the disk refuses them


def read_status(path: Path) -> dict[str, Any] | None:
    """A worker's status.json, or None while it is missing or unreadable."""
    return read_json_object(path, MAX_STATUS_BYTES, [])


def _num(value: object, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, (int, float)) else "-"


def _of(value: object, missing: object = "?") -> str:
    return str(missing) if value is None else str(value)


def cpu_percent(status: dict[str, Any] | None) -> float | None:
    """This worker's process CPU (% of one core) from status.json's `system`, if written."""
    system = (status or {}).get("system")
    value = system.get("cpu_percent") if isinstance(system, dict) else None
    return value if isinstance(value, (int, float)) else None


def gpu_percent(status: dict[str, Any] | None) -> float | None:
    """The mean utilisation of this worker's GPUs, if it has any."""
    system = (status or {}).get("system")
    values = system.get("gpu_util_percent") if isinstance(system, dict) else None
    if not isinstance(values, list):
        return None
    nums = [v for v in values if isinstance(v, (int, float))]
    return sum(nums) / len(nums) if nums else None


def progress_text(status: dict[str, Any] | None) -> str:
    """`running  epoch 1/3  step 40/120  loss 0.5312  acc 0.870` from a status.json; then
    examples/s and CPU when it has them. `epoch` counts completed epochs."""
    if status is None:
        return "waiting for the worker to report"
    phase = status.get("phase")
    parts = [str(phase or status.get("state", "?"))]
    if phase not in UNTIMED_PHASES or status.get("step") is not None:
        parts += [
            f"epoch {_of(status.get('epoch'), 0)}/{_of(status.get('epochs'))}",
            f"step {_of(status.get('step'), 0)}/{_of(status.get('steps_total'))}",
            f"loss {_num(status.get('loss'), '.4f')}",
            f"acc {_num(status.get('accuracy'), '.3f')}",
        ]
    if isinstance(status.get("examples_per_sec"), (int, float)):
        parts.append(f"{status['examples_per_sec']:.0f} ex/s")
    if (cpu := cpu_percent(status)) is not None:
        parts.append(f"cpu {cpu:.0f}%")
    if (gpu := gpu_percent(status)) is not None:
        parts.append(f"gpu {gpu:.0f}%")
    if status.get("error"):
        parts.append(f"error: {status['error']}")
    return "  ".join(parts)


@dataclass(frozen=True)
class WorkerRow:
    """One worker's row: its status.json and what the launcher knows beyond it."""

    index: int
    host: str
    status: dict[str, Any] | None
    note: str = ""  # the launcher's word when it knows better: `killed by SIGKILL`, `STOPPED`
    process: str = ""  # fab status: the process as polled (`alive`, `finished`, ...)
    updated: str = ""  # fab status: how long ago status.json changed
    disk: str = ""  # `disk full` while its host's disk is full (the job goes on)

    @property
    def prefix(self) -> str:
        return f"[{self.index} {self.host}]"

    @property
    def phase(self) -> str:
        """The launcher's note, else the trainer's phase; an ended worker says how it ended;
        then the host's disk trouble, if any."""
        return f"{self._phase}, {self.disk}" if self.disk else self._phase

    @property
    def _phase(self) -> str:
        if self.note:
            return self.note
        if self.status is None:
            return "waiting"
        state = self.status.get("state")
        if state in ("finished", "failed"):
            return str(state)
        return str(self.status.get("phase") or state or "?")

    @property
    def fraction(self) -> float | None:
        """Share of its steps done, when known."""
        st = self.status or {}
        step, total = st.get("step"), st.get("steps_total")
        if isinstance(step, (int, float)) and isinstance(total, (int, float)) and total > 0:
            return min(1.0, step / total)
        return None

    def plain(self) -> str:
        text = progress_text(self.status)
        said = ", ".join(s for s in (self.note, self.disk) if s)
        return f"{self.prefix} {said}  {text}" if said else f"{self.prefix} {text}"


def ago(now: float, stamp: object, clock_offset: float | None) -> str:
    """`12 s ago` for a time a host wrote, put on our clock with the offset the preflight
    measured (seconds the host is ahead); never negative (an unmeasured clock may run ahead)."""
    if not isinstance(stamp, (int, float)) or isinstance(stamp, bool):
        return "-"
    return f"{max(0.0, now - (stamp - (clock_offset or 0.0))):.0f} s ago"


_STYLE = {"finished": "green", "training": "cyan", "running": "cyan"}


def _phase_style(phase: str) -> str:
    if phase in _STYLE:
        return _STYLE[phase]
    if phase.startswith(("killed", "exited", "died", "gone", "failed", "STOPPED")):
        return "bold red"
    return ""


def _fraction(done: object, total: object) -> str:
    """`done/total`, `-` before the worker says either."""
    if done is None and total is None:
        return "-"
    return f"{done if done is not None else 0}/{_of(total)}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def worker_table(rows: Sequence[WorkerRow], width: int) -> Table:
    """The one table of workers (live in `fab train`, once in `fab status`); columns that
    do not fit a narrow terminal are left out, least needed first."""
    st = [r.status or {} for r in rows]
    columns: list[tuple[str, str, list[str]]] = [
        ("worker", "left", [f"{r.index} {r.host}" for r in rows]),
    ]
    if any(r.process for r in rows):
        columns.append(("process", "left", [r.process for r in rows]))
    columns += [
        ("phase", "left", [r.phase for r in rows]),
        ("epoch", "right", [_fraction(s.get("epoch"), s.get("epochs")) if s else "-" for s in st]),
        (
            "step",
            "right",
            [_fraction(s.get("step"), s.get("steps_total")) if s else "-" for s in st],
        ),
        ("loss", "right", [_num(s.get("loss"), ".4f") for s in st]),
        ("acc", "right", [_num(s.get("accuracy"), ".3f") for s in st]),
        ("ex/s", "right", [_num(s.get("examples_per_sec"), ".0f") for s in st]),
        ("cpu", "right", [_percent(cpu_percent(s)) for s in st]),
    ]
    if any(gpu_percent(s) is not None for s in st):
        columns.append(("gpu", "right", [_percent(gpu_percent(s)) for s in st]))
    if any(r.updated for r in rows):
        columns.append(("updated", "right", [r.updated for r in rows]))
    drop = ["updated", "gpu", "cpu", "ex/s", "process", "acc", "loss"]
    while drop and _table_width(columns) > width:
        name = drop.pop(0)
        columns = [c for c in columns if c[0] != name]
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for name, justify, _ in columns:
        table.add_column(name, justify=justify, no_wrap=True, overflow="ellipsis")  # type: ignore[arg-type]
    phase_col = [c[0] for c in columns].index("phase")
    for i, row in enumerate(rows):
        cells = [Text(c[2][i]) for c in columns]
        cells[phase_col].stylize(_phase_style(row.phase))
        table.add_row(*cells)
    return table


def _table_width(columns: Sequence[tuple[str, str, list[str]]]) -> int:
    return sum(max(len(c[0]), *(len(v) for v in c[2])) + 3 for c in columns)


LOG_TAIL_LINES = 15


def log_tail(path: Path, n: int = LOG_TAIL_LINES) -> list[str]:
    """The last `n` non-blank lines of a log, for a failure's record and report."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    return [line for line in lines if line.strip()][-n:]


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
        self,
        stream: TextIO | None = None,
        live: bool | None = None,
        verbosity: Verbosity = Verbosity.NORMAL,
        plain_gap: float = PLAIN_GAP,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.verbosity = verbosity
        self.plain_gap = plain_gap
        self.clock = clock
        self.console = Console(file=self.stream, force_terminal=self.live or None, highlight=False)
        self.log_path: Path | None = None
        self._log_fd: int | None = None
        self._unwritten = b""  # log bytes the disk refused; written first once it takes them
        self._log_failing = False
        self._lock = threading.RLock()
        self._live: Live | None = None
        self._plain: dict[int, tuple[float, int]] = {}  # index: when, 10% mark
        self._since = clock()

    def open_log(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.log_path = path

    def close(self) -> None:
        with self._lock:
            self.freeze()
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
                self._print(
                    [
                        f"WARNING: cannot write {self.log_path}: {exc.strerror or exc}; the job "
                        "goes on, and the log is written once the disk takes it again"
                    ]
                )
            return
        if self._log_failing:
            self._log_failing = False
            self._print([f"{self.log_path} is written again"])

    def freeze(self) -> None:
        """Stop redrawing: the last table stays on screen and what follows prints below it."""
        with self._lock:
            if self._live is not None:
                self._live.stop()
                self._live = None

    def _log(self, texts: Sequence[str]) -> None:
        if self._log_fd is not None and texts:
            self._write_log("".join(t + "\n" for t in texts).encode())

    def _print(self, texts: Sequence[str]) -> None:
        if not texts:
            return
        if self.live:
            for text in texts:
                self.console.print(Text(text), soft_wrap=True)
        else:
            self.stream.write("".join(t + "\n" for t in texts))
            self.stream.flush()

    def line(self, text: str = "") -> None:
        """An event or the summary: printed (also with --quiet) and logged."""
        with self._lock:
            self._print([text])
            self._log([text])

    def log_only(self, text: str) -> None:
        """Write to launcher.log only (details, such as a traceback, for a bug report)."""
        with self._lock:
            if self._log_fd is not None:
                self._write_log(text.encode())

    def lines(self, texts: list[str]) -> None:
        with self._lock:
            self._print(texts)
            self._log(texts)

    def info(self, text: str) -> None:
        """Context such as the header: printed unless --quiet, always logged."""
        with self._lock:
            if self.verbosity is not Verbosity.QUIET:
                self._print([text])
            self._log([text])

    def note(self, text: str) -> None:
        """Bookkeeping worth keeping in launcher.log but not worth a line on the terminal."""
        with self._lock:
            self._log([text])

    def worker_output(self, index: int, prefix: str, lines: Sequence[str]) -> None:
        """A worker's new output lines: always into launcher.log, prefixed; on the terminal
        only with --verbose, and then Keras' per-epoch lines only from the chief."""
        texts = [f"{prefix} {line}" for line in lines]
        with self._lock:
            self._log(texts)
            if self.verbosity is Verbosity.VERBOSE:
                shown = [
                    t
                    for t, ln in zip(texts, lines, strict=True)
                    if index == 0 or not is_keras_progress(ln)
                ]
                self._print(shown)

    def table(self, rows: Sequence[WorkerRow]) -> None:
        """The workers' table: redrawn in place on a terminal, plain lines otherwise."""
        with self._lock:
            plain = self._due(rows)
            self._log(plain)
            if self.verbosity is Verbosity.QUIET:
                return
            if not self.live:
                self._print(plain)
                return
            table = worker_table(rows, self.console.width)
            if self._live is None:
                self._live = Live(
                    table,
                    console=self.console,
                    auto_refresh=False,
                    redirect_stdout=False,
                    redirect_stderr=False,
                )
                self._live.start(refresh=True)
            else:
                self._live.update(table, refresh=True)

    def show_table(self, rows: Sequence[WorkerRow]) -> None:
        """The table once (fab status): rich on a terminal, fixed-width text elsewhere."""
        width = self.console.width if self.live else 200
        with self._lock:
            capture = Console(width=width, no_color=True, highlight=False)
            with capture.capture() as text:
                capture.print(worker_table(rows, width))
            plain = [ln.rstrip() for ln in text.get().splitlines()]
            if self.live:
                self.console.print(worker_table(rows, width))
            else:
                self._print(plain)
            self._log(plain)

    def _due(self, rows: Sequence[WorkerRow]) -> list[str]:
        """The plain lines due now: a worker's line once it has passed another 10% mark of its
        steps and 30 s have passed since its last one, and its last line once it finished
        (whatever the gap: the final epoch and loss belong in a CI log)."""
        now = self.clock()
        due = []
        for row in rows:
            fraction = row.fraction
            finished = (row.status or {}).get("state") == "finished"
            if fraction is None and not finished:
                continue
            mark = PLAIN_MARKS + 1 if finished else int((fraction or 0) * PLAIN_MARKS + 1e-9)
            last_time, last_mark = self._plain.get(row.index, (self._since, 0))
            if mark > last_mark and (finished or now - last_time >= self.plain_gap):
                self._plain[row.index] = (now, mark)
                due.append(row.plain())
        return due
