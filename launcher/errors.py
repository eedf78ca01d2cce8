"""The errors a command reports to its user as one message and an exit code."""

from __future__ import annotations

from collections.abc import Sequence

from launcher.remote import HostError


class UserError(Exception):
    """A failure to report as a message and an exit code, without a traceback."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def failed_hosts(what: str, errors: Sequence[HostError]) -> UserError:
    """One error naming every host that failed, one line each."""
    lines = "\n".join(f"  {e}" for e in errors)
    return UserError(f"{what} failed on {len(errors)} host(s):\n{lines}")
