"""One connection per host for everything one command does with a run (launcher/sessions.py)."""

from __future__ import annotations

import functools
import gc

import pytest

from launcher.sessions import Sessions


class FakeShell:
    """Stands in for a HostShell: only opening and closing matter here."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log
        log.append(f"open {name}")

    def close(self) -> None:
        self.log.append(f"close {self.name}")


class Owner:
    """Stands in for a command's Run: any object that can be weakly referenced."""


def test_each_host_opens_once_per_run_and_closes_when_the_run_is_dropped() -> None:
    sessions: Sessions[FakeShell] = Sessions()
    log: list[str] = []
    run, other = Owner(), Owner()
    for _ in range(3):  # look, stop, release
        for key in (0, 1):
            sessions.shell(run, key, functools.partial(FakeShell, f"run/{key}", log))
    sessions.shell(other, 0, lambda: FakeShell("other/0", log))
    assert log == ["open run/0", "open run/1", "open other/0"]
    assert sessions.open_count() == 3
    del run
    gc.collect()
    assert log[3:] == ["close run/0", "close run/1"]
    assert sessions.open_count() == 1
    del other
    gc.collect()
    assert log[5:] == ["close other/0"]
    assert sessions.open_count() == 0


def test_a_shell_that_could_not_be_opened_is_opened_again_next_time() -> None:
    sessions: Sessions[FakeShell] = Sessions()
    log: list[str] = []
    run = Owner()

    def refused() -> FakeShell:
        raise ConnectionRefusedError("no sshd")

    with pytest.raises(ConnectionRefusedError):
        sessions.shell(run, 0, refused)
    shell = sessions.shell(run, 0, lambda: FakeShell("run/0", log))
    assert sessions.shell(run, 0, refused) is shell
    assert log == ["open run/0"]
