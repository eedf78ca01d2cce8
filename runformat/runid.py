"""Run ids: `YYYYmmdd-HHMMSS-xxxx` in the launching machine's local time, so they sort by time
and read like the clock on the wall of whoever started the run (one clock for every writer)."""

from __future__ import annotations

import re
import secrets
import time

RUN_ID_FORMAT = "%Y%m%d-%H%M%S"
RUN_ID_PATTERN = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{4}$")


def new_run_id(now: float | None = None) -> str:
    """Sortable by time (local clock), unique thanks to 4 random hex characters."""
    when = time.time() if now is None else now
    return f"{time.strftime(RUN_ID_FORMAT, time.localtime(when))}-{secrets.token_hex(2)}"


def run_id_time(run_id: str) -> float | None:
    """The unix time a run id names (to the second), or None if it is not a run id."""
    if not RUN_ID_PATTERN.match(run_id):
        return None
    try:
        return time.mktime(time.strptime(run_id[:15], RUN_ID_FORMAT))
    except (ValueError, OverflowError):
        return None
