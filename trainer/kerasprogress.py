"""Keras' own progress output, read back from a program's stdout: what a user's program that
does not use ClusterProgress still says of its training (trainer.wrap writes it into
status.json).

`model.fit` in tf-keras (what the workers run: TF_USE_LEGACY_KERAS=1) and in Keras 3 prints

    Epoch 3/10                                            (only when epochs > 1)
    \\r 12/469 [==>.......] - ETA: 5s - loss: 0.3100 - accuracy: 0.9100
    \\b\\b...\\b\\r 13/469 [==>.......] - ETA: 5s - loss: 0.3094 - accuracy: 0.9104
    ...
    \\b\\b...\\b\\r469/469 [==========] - 3s 6ms/step - loss: 0.2000 - val_loss: 0.1800\\n

with verbose=1: a bar redrawn in place with backspaces and a carriage return (both Keras draw
it so whenever 'posix' is in sys.modules, that is also into a pipe), ended by a newline once
the epoch is over; and one line per epoch with verbose=2 (`469/469 - 3s - loss: ... - 3s/epoch -
6ms/step`). Keras 3 draws its bar with `━` and ANSI colours; both are read alike.

Which bars are fit's: those after an `Epoch e/E` line, until that epoch's closing line;
then bars without a new `Epoch` line (evaluate, predict) are not training. The very first
bar of a program, without any `Epoch` line before it, is fit with epochs=1.

Bounded whatever the program prints: each chunk is scanned in C for its last few lines that
may be Keras' (LINES_PER_FEED), only the last redraw of a line is parsed, at most MAX_SEGMENT
bytes of the line being drawn are kept, and a longer one (a 100 MB line, binary junk) is
skipped to its end. Standard library only: the wrapper never waits for TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

MAX_SEGMENT = 4096
"""Bytes of one bar or line read at most (Keras' are 100-300); longer ones are not Keras'."""
LINES_PER_FEED = 64
"""Lines of one chunk of output looked at, its last ones holding a `/`: Keras prints at most
two an epoch (the Epoch line and the bar's), so only a flood of other output loses any."""
SETTLE_SECONDS = 0.5
"""A bar still being drawn (no redraw or newline after it yet) is read once no byte has come
for this long: Keras writes each redraw at once, so it is whole by then."""

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_HEADER = re.compile(r"Epoch (\d{1,9})/(\d{1,9})")
# `12/469 [` (tf-keras), `12/469 ━` (Keras 3), `469/469 - ` (verbose=2), `12/Unknown `.
_COUNT = re.compile(r" *(\d{1,12})/(?:(\d{1,12})(?= \[| - | ━)|Unknown(?= ))")
ACCURACY_NAMES = ("accuracy", "acc")
"""The metrics read as `accuracy`, in this order; else the first other `*accuracy` metric
that is not a validation one (`sparse_categorical_accuracy`)."""


@dataclass(frozen=True)
class KerasProgress:
    """Where fit is, as Keras last printed it. `epoch` counts completed epochs (as status.json
    does); `step_in_epoch` the steps done of the epoch under way (0 once an epoch closed)."""

    epoch: int
    epochs: int
    step_in_epoch: int
    steps_per_epoch: int | None  # None while the first epoch's bar says `Unknown`
    metrics: Mapping[str, float] = field(default_factory=dict)

    @property
    def step(self) -> int | None:
        """The global step as ClusterProgress counts it: completed epochs x steps per epoch
        + steps of the epoch under way (None while steps per epoch are unknown)."""
        if self.steps_per_epoch is None:
            return self.step_in_epoch if self.epoch == 0 else None
        return self.epoch * self.steps_per_epoch + self.step_in_epoch

    @property
    def steps_total(self) -> int | None:
        return self.epochs * self.steps_per_epoch if self.steps_per_epoch else None

    @property
    def loss(self) -> float | None:
        return self.metrics.get("loss")

    @property
    def accuracy(self) -> float | None:
        for name in ACCURACY_NAMES:
            if name in self.metrics:
                return self.metrics[name]
        return next(
            (v for k, v in self.metrics.items() if k.endswith("accuracy") and k[:4] != "val_"),
            None,
        )


@dataclass
class _Fit:
    """What has been read so far."""

    started: bool = False  # an Epoch line or fit's bar has been read
    armed: bool = False  # the next bars are fit's
    epoch: int = 0  # the epoch under way (1-based), or the last one once closed
    epochs: int = 0
    closed: bool = False  # that epoch's closing line has been read
    step: int = 0
    steps: int | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)

    def header(self, epoch: int, epochs: int) -> None:
        if 1 <= epoch <= epochs:
            self.started = self.armed = True
            self.epoch, self.epochs, self.closed, self.step = epoch, epochs, False, 0

    def bar(self, current: int, target: int | None, text: str, closing: bool) -> None:
        if target is not None and not 0 <= current <= target:
            return
        if not self.armed:
            if self.started:
                return  # evaluate or predict after fit's epoch: not training
            self.epoch, self.epochs = 1, 1  # fit(epochs=1) prints no Epoch line
        self.started = self.armed = True
        self.step = current
        if target:
            self.steps = target
        self.metrics = _metrics(text) or self.metrics
        if closing and current == target and "ETA" not in text:
            self.closed, self.armed = True, False

    def progress(self) -> KerasProgress | None:
        if not self.started:
            return None
        if self.closed:
            return KerasProgress(self.epoch, self.epochs, 0, self.steps, self.metrics)
        return KerasProgress(self.epoch - 1, self.epochs, self.step, self.steps, self.metrics)


def _metrics(text: str) -> dict[str, float]:
    """`- loss: 0.3100 - accuracy: 0.9100` as numbers; anything else between dashes (`ETA:
    5s`, `3s/epoch`, a half-written value) is left out."""
    found = {}
    for piece in text.split(" - ")[1:]:
        name, colon, value = piece.partition(": ")
        if not colon or not name or " " in name.strip() or len(name) > 200:
            continue
        try:
            found[name.strip()] = float(value.strip())
        except ValueError:
            continue
    return found


def _last_redraw(line: bytes) -> bytes:
    """What a terminal would show of a line: the text after its last carriage return or
    backspace (Keras redraws its bar with both)."""
    line = line.rstrip(b"\r\b")
    return line[max(line.rfind(b"\r"), line.rfind(b"\b")) + 1 :]


def _last_lines_with_a_slash(data: bytes, limit: int) -> list[bytes]:
    """The last `limit` complete lines of `data` holding a `/` (every Epoch line and bar
    does), in order; each byte is scanned at most twice, in C, whatever the lines are."""
    found: list[bytes] = []
    below = data.rfind(b"\n")
    while below > 0 and len(found) < limit:
        slash = data.rfind(b"/", 0, below)
        if slash < 0:
            break
        start = data.rfind(b"\n", 0, slash) + 1
        found.append(data[start : data.find(b"\n", slash)])
        below = start
    found.reverse()
    return found


def _first_separator(data: bytes) -> int:
    found = [i for i in (data.find(b"\n"), data.find(b"\r"), data.find(b"\b")) if i >= 0]
    return min(found) if found else -1


class ProgressReader:
    """Reads a program's stdout as it comes (`feed`) and says where fit is (`latest`).

    Not thread-safe: the wrapper feeds it from one thread and asks from another under a lock.
    """

    def __init__(self, settle: float = SETTLE_SECONDS) -> None:
        self.settle = settle
        self._fit = _Fit()
        self._drawing = b""  # the end of the output: a bar being drawn, or a line begun
        self._skipping = False  # inside a line too long to be Keras': dropped to its end
        self._fed_at = -math.inf

    def feed(self, data: bytes, now: float) -> None:
        """Another chunk of the program's stdout, read at `now` (monotonic seconds)."""
        if not data:
            return
        self._fed_at = now
        if self._skipping:
            cut = _first_separator(data)
            if cut < 0:
                return
            data, self._skipping = data[cut:], False
        data = self._drawing + data
        for line in _last_lines_with_a_slash(data, LINES_PER_FEED):
            self._read(_last_redraw(line), self._fit, closing=True)
        rest = data[data.rfind(b"\n") + 1 :]
        cut = max(rest.rfind(b"\r"), rest.rfind(b"\b"))
        if cut >= 0:
            redrawn = _last_redraw(rest[:cut])
            if b"/" in redrawn:
                self._read(redrawn, self._fit, closing=False)
            rest = rest[cut + 1 :]
        if len(rest) > MAX_SEGMENT:
            rest, self._skipping = b"", True
        self._drawing = rest

    @property
    def buffered(self) -> int:
        """Bytes of output kept (at most MAX_SEGMENT, whatever the program prints)."""
        return len(self._drawing)

    def latest(self, now: float | None = None) -> KerasProgress | None:
        """Where fit is, or None before Keras printed anything of it. `now`: the bar still
        being drawn counts once SETTLE_SECONDS have passed without output; None: the output
        has ended, it counts as it is."""
        fit = self._fit
        settled = now is None or now - self._fed_at >= self.settle
        if settled and b"/" in self._drawing:
            fit = dataclasses.replace(fit)
            self._read(self._drawing, fit, closing=False)
        return fit.progress()

    @staticmethod
    def _read(raw: bytes, fit: _Fit, closing: bool) -> None:
        """One line or redraw: an Epoch line, a bar, or something else (left alone).
        `closing`: a newline ended it (Keras ends an epoch's bar so)."""
        if len(raw) > MAX_SEGMENT:
            return
        text = raw.decode("utf-8", "replace")
        if "\x1b" in text:
            text = _ANSI.sub("", text)
        header = _HEADER.fullmatch(text.strip())
        if header:
            fit.header(int(header[1]), int(header[2]))
            return
        count = _COUNT.match(text)
        if count:
            target = int(count[2]) if count[2] else None
            fit.bar(int(count[1]), target, text[count.end() :], closing)
