"""Losing and regaining contact with a host: back off, keep trying, give up only after a while.

Workers run detached on their hosts, so a dropped SSH session, a Wi-Fi change or a laptop
that slept does not hurt training; only the launcher's view of it. The launcher therefore
treats a broken connection as a pause in contact, reconnects with growing delays, and stops
the job only after `--contact-timeout` seconds without any answer from a host.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from launcher.remote import HostError

T = TypeVar("T")
DEFAULT_CONTACT_TIMEOUT = 300.0  # fab train, fab fetch --follow: a network may take minutes
QUICK_CONTACT_TIMEOUT = 30.0  # fab status, stop, fetch: someone is waiting at the terminal
FIRST_DELAY = 1.0
MAX_DELAY = 15.0


@dataclass
class Contact:
    """One host's contact as the launcher sees it: since when it fails, when to try again."""

    timeout: float = DEFAULT_CONTACT_TIMEOUT
    failing_since: float | None = None
    next_try: float = 0.0
    delay: float = 0.0
    error: str = ""

    @property
    def failing(self) -> bool:
        return self.failing_since is not None

    def due(self, now: float) -> bool:
        """Whether to try the host now (or wait out the back-off)."""
        return now >= self.next_try

    def failed(self, now: float, error: str) -> bool:
        """Note a failed attempt; True when contact was fine until now (time to warn)."""
        first = self.failing_since is None
        if first:
            self.failing_since = now
            self.delay = FIRST_DELAY
        else:
            self.delay = min(self.delay * 2, MAX_DELAY)
        self.next_try = now + self.delay
        self.error = error
        return first

    def restored(self, now: float) -> float | None:
        """Note an answer; how long contact was lost, if it was."""
        if self.failing_since is None:
            return None
        lost_for = now - self.failing_since
        self.failing_since, self.next_try, self.delay, self.error = None, 0.0, 0.0, ""
        return lost_for

    def lost(self, now: float) -> bool:
        """No answer for longer than the timeout: the host counts as gone."""
        return self.failing_since is not None and now - self.failing_since > self.timeout


RECONNECTED = "the SSH connection had dropped; reconnected, the job goes on"


@dataclass
class Reconnects:
    """How many times a shell reopened its connection, as far as the user has been told."""

    seen: int = 0

    def news(self, shell: object) -> bool:
        """Whether the shell reconnected since the last call (a local shell never does)."""
        count = int(getattr(shell, "reconnects", 0))
        if count <= self.seen:
            return False
        self.seen = count
        return True


def lost_message(prefix: str, error: str, timeout: float) -> str:
    return (
        f"{prefix} lost contact: {error}; reconnecting, the workers go on "
        f"(gives up after {timeout:g} s without contact)"
    )


def with_contact(
    action: Callable[[], T],
    prefix: str,
    timeout: float,
    warn: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `action` (one host's part of status, stop or fetch), retrying it with back-off
    while the host cannot be reached, for up to `timeout` seconds.

    Errors that waiting cannot mend (a refused login, a changed host key) are raised at once.
    """
    contact = Contact(timeout)
    while True:
        try:
            result = action()
        except HostError as exc:
            if not exc.transient:
                raise
            now = clock()
            if contact.failed(now, exc.message):
                warn(lost_message(prefix, exc.message, timeout))
            if contact.lost(now):
                raise HostError(
                    exc.host, f"no contact for {timeout:g} s: {exc.message}", transient=True
                ) from exc
            sleep(contact.delay)
            continue
        lost_for = contact.restored(clock())
        if lost_for is not None:
            warn(f"{prefix} contact restored after {lost_for:.1f} s")
        return result
