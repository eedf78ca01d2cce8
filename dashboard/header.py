"""The chosen run's story at a glance, above every tab: state, phase, epoch, ETA, speed,
configuration (with the hyperparameters its program logged for TensorBoard), and for a
failed run who caused it and what to do next."""

from __future__ import annotations

import time
from collections.abc import Sequence

import streamlit as st

from dashboard import compare, printed, refresh, text, triage
from dashboard.cluster import (
    WorkerRow,
    phase_summary,
    run_eta,
    run_rows,
    slowest_epoch,
    total_throughput,
)
from dashboard.hparamsview import hparams_of, render_sessions
from dashboard.live import Snapshot
from dashboard.runs import ClusterInfo, Run

STATE_BADGES = {
    "starting": "gray",
    "running": "blue",
    "finished": "green",
    "failed": "red",
    "stopped": "orange",
    "stalled": "orange",
}


# Configuration fields on the header's line; the rest are in the sessions' table below it.
MAX_CONFIG_SHOWN = 20

PRINTED_NOTE = (
    "Epoch, step, loss and ETA are estimated from the progress bar Keras printed (the program"
    " writes no progress events: add ClusterProgress to its fit for step-level charts)."
)


def badge(state: str) -> str:
    return f":{STATE_BADGES.get(state, 'gray')}-badge[{text.md(state)}]"


def render(run: Run) -> None:
    """The header (a live part: dashboard.refresh redraws it)."""
    snapshot = refresh.snapshot_of(run)
    # A script without ClusterProgress: its progress is what Keras printed (dashboard.printed).
    seen = refresh.printed_of(run)
    rows = run_rows(run, snapshot.workers, time.time())
    st.markdown(f"### Run {text.code(run.run_id)} {badge(run.state)}")
    render_loading(snapshot)
    done, total = slowest_epoch(rows)
    accuracy = run.metrics.test_accuracy if run.metrics else None
    phase, phases = phase_summary(rows) if run.active else (run.state, "")
    eta = run_eta(run, (seen if seen is not None else snapshot).workers, rows)
    if seen is None:
        speed = ("Examples/s (all)", text.number(total_throughput(rows), 0))
    else:  # Keras prints no throughput: its loss instead
        newest = printed.latest(run)
        speed = ("Loss (printed)", text.number(newest.loss if newest else None, 4))
    figures = (
        ("Workers", str(len(rows))),
        ("Phase", phase),
        ("Epoch (completed)", text.of_total(done, total)),
        ("ETA", text.duration(eta)),
        speed,
        ("Test accuracy", text.MISSING if accuracy is None else f"{accuracy:.4f}"),
        ("Duration", text.duration(run.duration())),
    )
    for column, (label, value) in zip(st.columns(len(figures)), figures, strict=True):
        column.metric(label, text.md(value, 40))
    logged = hparams_of(run)
    config = compare.run_config(run, logged.values())
    fields = [(k, v) for k, v in config.items() if v != text.MISSING]
    shown = [f"{text.md(k)} **{text.md(v, 60)}**" for k, v in fields[:MAX_CONFIG_SHOWN]]
    if len(fields) > MAX_CONFIG_SHOWN:
        shown.append(f"{len(fields) - MAX_CONFIG_SHOWN} more below")
    notes = [f"Phases: {phases}"] if phases else []
    if seen is not None:
        notes.append(PRINTED_NOTE)
    st.caption("  \n".join([" · ".join(shown), *notes]))
    render_sessions(logged)
    story = triage.failure_story(run, rows)
    if story is not None:
        render_failure(story)
    if run.cluster and run.cluster.restarts:
        render_restarts(run.cluster)
    render_hosts(rows)
    render_problems(run, snapshot, logged.problems)


def render_hosts(rows: list[WorkerRow]) -> None:
    """A host's own trouble while the job goes on (gone as soon as the host says so)."""
    for row in rows:
        if row.disk:
            st.warning(
                f"worker {row.index} ({text.md(row.host)}): disk full: {text.md(row.disk)}. "
                "Training goes on; this worker's status and charts may lag until there is "
                "room again."
            )


def render_loading(snapshot: Snapshot) -> None:
    """How far a first read of the events has got, above charts that show that part."""
    if snapshot.loading is not None:
        st.progress(
            snapshot.loading.fraction,
            text=f"{snapshot.loading}: the page shows what is read so far.",
        )


def render_problems(run: Run, snapshot: Snapshot, more: Sequence[str] = ()) -> None:
    """What could not be read, folded away."""
    problems = [*run.warnings, *snapshot.problems, *more]
    if not run.active:
        problems += [
            f"worker {index}: its events end in {pending} bytes that make no whole record"
            " (a file cut short)"
            for index, pending in sorted(snapshot.pending.items())
        ]
    if problems:
        with st.expander(f"{len(problems)} warning(s) while reading this run", icon="⚠️"):
            for problem in problems[:50]:
                st.warning(text.md(problem))


def render_failure(story: triage.Story) -> None:
    """Who caused the failure, when and where, who was aborted after it, what to do next."""
    who = f"worker {story.cause}" if story.cause is not None else "a worker"
    where = (
        f"at epoch {text.of_total(story.epoch, story.epochs)}, "
        f"step {text.of_total(story.step, story.steps_total)}, {text.when(story.died)}"
    )
    aborted = (
        f" Aborted after it: {', '.join(f'worker {i}' for i in story.aborted)}."
        if story.aborted
        else ""
    )
    st.error(
        f"**{who} ({text.md(story.host)}) caused the failure** {where}: "
        f"{text.md(story.reason)}.{aborted}"
    )
    with st.expander("What to do next"):
        st.markdown("\n".join(f"- {line}" for line in story.advice))


def render_restarts(cluster: ClusterInfo) -> None:
    """Restarted N times, and why each earlier attempt ended, so that a finished run that was
    restarted does not hide the failures it survived."""
    lines = [f"**Restarted {cluster.restarts}x**, resuming each time from the last epoch."]
    for attempt in cluster.earlier_failures:
        failure = attempt.failure
        if failure is None:
            continue
        who = f"worker {failure.index}" if failure.index is not None else "a worker"
        lines.append(
            f"- attempt {attempt.number} ({text.when(attempt.ended)}): {who} "
            f"({text.md(failure.host or '?')}) failed: {text.md(failure.reason)}"
        )
    st.info("\n".join(lines))
