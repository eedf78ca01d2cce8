"""Contact with a host: back-off, restoring, giving up (pure logic on a made-up clock; the
real dropped sessions are in test_reliability.py)."""

from __future__ import annotations

import pytest

from launcher.contact import FIRST_DELAY, MAX_DELAY, Contact, Reconnects, with_contact
from launcher.hosts import parse_hosts
from launcher.remote import HostError

HOST = parse_hosts("gpu-a\n")[0]


def test_back_off_grows_to_a_limit_and_contact_is_lost_only_after_the_timeout() -> None:
    c = Contact(timeout=60)
    assert c.due(0) and not c.failing
    assert c.failed(0, "Socket is closed") is True, "the first failure is the one to warn about"
    assert c.delay == FIRST_DELAY and not c.due(0.5) and c.due(1.0)
    delays = []
    for t in range(1, 10):
        assert c.failed(t, "again") is False
        delays.append(c.delay)
    assert delays == sorted(delays) and delays[-1] == MAX_DELAY
    assert not c.lost(60) and c.lost(60.1)
    assert c.restored(61) == 61 and not c.failing and c.due(61)
    assert c.restored(62) is None


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_with_contact_retries_transient_errors_and_says_so() -> None:
    clock, said = Clock(), []
    answers: list[object] = [HostError(HOST, "Socket is closed", transient=True)] * 3 + ["ok"]

    def action() -> str:
        a = answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return str(a)

    got = with_contact(action, "[1 gpu-a]", 30, said.append, clock, clock.sleep)
    assert got == "ok"
    assert len(said) == 2 and "lost contact: Socket is closed" in said[0]
    assert said[1] == "[1 gpu-a] contact restored after 7.0 s"


def test_with_contact_gives_up_after_the_timeout_and_never_retries_a_refusal() -> None:
    clock, said = Clock(), []

    def down() -> None:
        raise HostError(HOST, "connection refused", transient=True)

    with pytest.raises(HostError, match="no contact for 30 s: connection refused"):
        with_contact(down, "[0 gpu-a]", 30, said.append, clock, clock.sleep)
    assert 30 < clock.now < 30 + MAX_DELAY + 1

    calls = []

    def refused() -> None:
        calls.append(1)
        raise HostError(HOST, "SSH login refused")

    with pytest.raises(HostError, match="login refused"):
        with_contact(refused, "[0 gpu-a]", 30, said.append, clock, clock.sleep)
    assert calls == [1]


def test_reconnects_are_news_once_each() -> None:
    class Shell:
        reconnects = 0

    shell, told = Shell(), Reconnects()
    assert not told.news(shell)
    shell.reconnects = 2
    assert told.news(shell) and not told.news(shell)
    assert not told.news(object()), "a local shell never reconnects"
