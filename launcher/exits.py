"""Worker exit codes: what they mean to a user, and what they mean for the whole job."""

from __future__ import annotations

import signal
from collections.abc import Mapping


def normalize_exit(code: int | None) -> int | None:
    """A shell reports death by signal N as 128+N; store it as -N like subprocess does."""
    if code is not None and 128 < code < 128 + 65:
        return -(code - 128)
    return code


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def describe_exit(code: int | None) -> str:
    """One phrase for a user: `finished`, `exited with code 2`, `killed by SIGKILL`."""
    if code is None:
        return "died without an exit code (its process group is gone)"
    if code == 0:
        return "finished"
    if code < 0:
        return f"killed by {signal_name(-code)}"
    if code == 127:
        return "exited with code 127 (command not found: check python= in the hosts file)"
    return f"exited with code {code}"


def job_exit_code(codes: Mapping[int, int | None], expected: int) -> int:
    """0 only if all `expected` workers reported exit code 0; otherwise 1."""
    if len(codes) == expected and all(c == 0 for c in codes.values()):
        return 0
    return 1


def first_failure(codes: Mapping[int, int | None]) -> int | None:
    """The lowest worker index that did not finish cleanly, or None."""
    bad = sorted(i for i, c in codes.items() if c != 0)
    return bad[0] if bad else None
