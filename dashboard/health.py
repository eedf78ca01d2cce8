"""A host's trouble that is not the run's: its disk full (monitoring paused while training
goes on) and its clock off ours. Read defensively from fields the run format is gaining:

- status.json ``disk``: ``{"full": true, "path": "...", "free_mb": 0.0, "message": "..."}``,
  the worker's own word on the disk its run folder is on (``full`` false or no field: fine);
- cluster.json ``hosts[i].disk`` (the same object), the launcher's word on that host, which
  it can write while the host's own disk is too full for status.json;
- cluster.json ``hosts[i].clock_offset``: seconds the host's clock is ahead of the
  launcher's, as `fab check`/`fab train` measured it (negative: behind).

Without a measured offset, a host whose status.json says it was updated after the moment
our copy of the file was written is ahead of us by at least that much.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# A status.json `updated` this far past its file's change time means the host's clock is
# ahead (less is the time a write takes).
CLOCK_SLACK_SECONDS = 2.0


@dataclass(frozen=True)
class DiskNote:
    """A host's disk that is full (or was, as last said)."""

    message: str
    path: str | None = None
    free_mb: float | None = None

    def __str__(self) -> str:
        where = f" in {self.path}" if self.path else ""
        free = f" ({self.free_mb:,.0f} MB free)" if self.free_mb is not None else ""
        return f"{self.message}{where}{free}"


def disk_note(raw: object) -> DiskNote | None:
    """A `disk` object that says the disk is full; None when it says nothing is wrong or is
    not an object."""
    if not isinstance(raw, Mapping) or raw.get("full") is not True:
        return None
    message = raw.get("message")
    path = raw.get("path")
    free = _number(raw.get("free_mb"))
    return DiskNote(
        message=message[:200] if isinstance(message, str) and message else "disk full",
        path=path[:300] if isinstance(path, str) and path else None,
        free_mb=free if free is not None and free >= 0 else None,
    )


def host_fields(cluster: Mapping[str, Any] | None) -> dict[int, Mapping[str, Any]]:
    """cluster.json's host objects by index (only those with an integer index)."""
    hosts = cluster.get("hosts") if cluster is not None else None
    if not isinstance(hosts, list):
        return {}
    return {
        h["index"]: h
        for h in hosts
        if isinstance(h, Mapping) and isinstance(h.get("index"), int) and h["index"] >= 0
    }


def measured_offset(host: Mapping[str, Any] | None) -> float | None:
    """The launcher's measured clock offset of a host, if it recorded one."""
    return _number(host.get("clock_offset")) if host is not None else None


def estimated_offset(updated: float | None, changed: float | None) -> float:
    """How far ahead a host's clock is at least, from one status.json: its `updated` against
    the time our copy of the file was written (0 when it is not clearly ahead)."""
    if updated is None or changed is None or updated - changed <= CLOCK_SLACK_SECONDS:
        return 0.0
    return updated - changed


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None
