"""Finishing a run's record (cluster.json) when its launcher is no longer there to do it.

The launcher writes the final state when it sees the job end. If it was killed (or its
machine slept through the end), the workers still finish on their own and leave their exit
codes on their hosts (a Slurm job's end is Slurm's word and srun's report): `fab status`,
`fab fetch` and `fab stop` then finish the record from those, and `fab stop` never turns a
run that ended into a stopped one.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from launcher.exits import describe_exit, first_failure, job_exit_code
from launcher.job import log_tail
from runformat import ACTIVE_RUN_STATES, worker_log_path


def launcher_alive(cluster: Mapping[str, Any]) -> bool:
    """True if the run's launcher still runs on this machine (it will finish the record)."""
    who = cluster.get("launcher")
    if not isinstance(who, dict) or who.get("host") != socket.gethostname():
        return False
    pid = who.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"fab" in cmdline


def may_finish(cluster: Mapping[str, Any]) -> bool:
    """True for an open record whose launcher is gone: only then may `fab status`, `fetch`
    or `stop` write how the run ended (a live launcher writes it itself)."""
    return cluster.get("state") in ACTIVE_RUN_STATES and not launcher_alive(cluster)


def ending(
    cluster: Mapping[str, Any],
    exit_codes: Mapping[int, int | None],
    failure: Mapping[str, Any] | None,
    **attempt: Any,
) -> dict[str, Any]:
    """The changes that close a record: end time, exit codes (None: not known), finished or
    failed (with `failure`), and the last attempt closed with `attempt`'s extra fields."""
    now = time.time()
    changes: dict[str, Any] = {
        "finished": now,
        "exit_codes": {str(i): c for i, c in sorted(exit_codes.items())},
        "state": "finished" if failure is None else "failed",
        "failure": None if failure is None else dict(failure),
    }
    attempts = [dict(a) for a in cluster.get("attempts") or [] if isinstance(a, dict)]
    if attempts and attempts[-1].get("ended") is None:
        attempts[-1].update(ended=now, failure=changes["failure"], **attempt)
        changes["attempts"] = attempts
    return changes


def finished_record(
    cluster: Mapping[str, Any], exit_codes: Mapping[int, int | None], local_dir: Path
) -> dict[str, Any] | None:
    """The changes that finish an open record once every worker has an exit code, or None
    (the record is closed already, a worker has none yet, or its launcher still runs)."""
    hosts = cluster.get("hosts") or []
    if not may_finish(cluster):
        return None
    if len(exit_codes) != len(hosts) or any(c is None for c in exit_codes.values()):
        return None
    if job_exit_code(exit_codes, len(hosts)) == 0:
        return ending(cluster, exit_codes, None)
    bad = first_failure(exit_codes) or 0
    host: Mapping[str, Any] = next((h for h in hosts if h.get("index") == bad), {})
    failure = {
        "index": bad,
        "host": host.get("name", "?"),
        "reason": describe_exit(exit_codes[bad]),
        "log_tail": log_tail(worker_log_path(local_dir, bad)),
    }
    return ending(cluster, exit_codes, failure)
