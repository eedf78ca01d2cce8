"""A failed run's story: which worker caused it, when and where it died, who was only aborted
after it, and what to do next. Pure (run and rows in, a :class:`Story` out)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dashboard import text
from dashboard.cluster import WorkerRow
from dashboard.runs import Run


@dataclass(frozen=True)
class Story:
    cause: int | None
    host: str
    reason: str
    epoch: int | None
    epochs: int | None
    step: int | None
    steps_total: int | None
    died: float | None
    aborted: tuple[int, ...]
    advice: tuple[str, ...]
    log: str | None


def failure_story(run: Run, rows: Sequence[WorkerRow]) -> Story | None:
    """The story of a failed run, None when the run did not fail."""
    failure = run.cluster.failure if run.cluster else None
    if run.state != "failed" and failure is None:
        return None
    by_index = {row.index: row for row in rows}
    cause = failure.index if failure is not None else None
    if cause is None:
        cause = next((row.index for row in rows if row.state == "failed"), None)
    row = by_index.get(cause) if cause is not None else None
    died = (row.updated if row else None) or (run.cluster.finished if run.cluster else None)
    advice = ["`fab check` tests every host again (SSH, Python, TensorFlow, ports) before a retry."]
    disk = full_disk(run, cause)
    if failure is not None and failure.network:
        advice.append(
            "The workers could not reach each other when checked after the failure: "
            + "; ".join(text.md(pair) for pair in failure.network)
            + ". Fix the route or firewall between them (`fab check` tests every pair)."
        )
    elif disk is not None:
        advice.append(
            f"Its host's runs folder was full ({text.md(disk)}): make room there. A restart"
            " would fail the same way, so `--max-restarts` does not restart after it."
        )
    else:
        max_restarts = (run.cluster.restarts if run.cluster else 0) or 0
        advice.append(
            "`fab train --max-restarts 1` restarts the whole job after such a failure and "
            "resumes from the last completed epoch"
            + (f" (this run restarted {max_restarts}x already)." if max_restarts else ".")
        )
    if failure is not None and "SIGKILL" in failure.reason:
        advice.append("Killed by SIGKILL: out of memory on that host, or someone killed it.")
    return Story(
        cause=cause,
        host=(failure.host if failure and failure.host else None) or (row.host if row else "?"),
        reason=failure.reason if failure is not None else (row.error if row and row.error else "?"),
        epoch=row.epoch if row else None,
        epochs=row.epochs if row else None,
        step=row.step if row else None,
        steps_total=row.steps_total if row else None,
        died=died,
        aborted=tuple(r.index for r in rows if r.state in ("aborted", "stopped")),
        advice=tuple(advice),
        log=f"workers/{cause}/worker.log" if cause is not None else None,
    )


def full_disk(run: Run, index: int | None) -> str | None:
    """Where the worker's host was out of room, as the launcher recorded it (hosts[i].disk),
    None when it was not."""
    host = run.cluster.host(index) if run.cluster and index is not None else None
    disk = host.disk if host is not None else None
    if not disk or not disk.get("full"):
        return None
    free = disk.get("free_mb")
    room = f", {free:g} MB free" if isinstance(free, int | float) else ""
    return f"{disk.get('path') or 'its runs folder'}{room}"


def no_model_reason(run: Run) -> str | None:
    """Why a run has no model.h5 and never will; None while it may still come."""
    if run.active:
        return None
    if run.state == "failed":
        failure = run.cluster.failure if run.cluster else None
        who = f"worker {failure.index}" if failure and failure.index is not None else "a worker"
        why = f": {failure.reason}" if failure else ""
        return f"No model: the run failed before the chief saved it ({who} failed{why})."
    if run.state == "stopped":
        return "No model: the run was stopped before the chief saved it."
    return "No model: the chief did not write model.h5."
