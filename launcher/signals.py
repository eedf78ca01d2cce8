"""Signals while a job runs: Ctrl-C, TERM and HUP all end it through one stop path, and a
second Ctrl-C while stopping cannot leave workers behind."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or a termination signal reached the launcher."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


@contextmanager
def _handlers(handler: signal.Handlers | object) -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in HANDLED}
    for s in saved:
        signal.signal(s, handler)  # type: ignore[arg-type]
    try:
        yield
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into Interrupted too, so every ending goes through stop."""
    with _handlers(_raise):
        yield


@contextmanager
def signals_ignored() -> Iterator[None]:
    """While stopping, a second Ctrl-C must not leave workers behind."""
    with _handlers(signal.SIG_IGN):
        yield
