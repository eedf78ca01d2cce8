"""When the page is drawn again: the pace of its live parts, and every ``st.rerun``.

While the chosen run is active its live parts (each a ``st.fragment``) redraw every
``REFRESH_SECONDS``; a run that has ended draws once. The whole page runs again when a run
appears, ends, changes state or vanishes. A big run is shown before its events are read:
they are read in the background (dashboard.live) while the charts redraw every
``LOADING_REFRESH_SECONDS`` with what is there, and once the read is done the page runs
again at its usual pace. A part redrawn every second keeps a slow browser from finishing its
first drawing of the page, so only the charts go at that pace (the header at 1 s: 16.9 s to
the first chart on 2 busy cores; at 3 s: 9.3 s; benchmarks/bench_dashboard.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import streamlit as st

from dashboard import text
from dashboard.live import RunEvents, Snapshot
from dashboard.printed import StatusTrail, shows_printed
from dashboard.runs import Run, load_run, runs_signature

REFRESH_SECONDS = 3.0
LOADING_REFRESH_SECONDS = 1.0

# rows: status files (Cluster, logs); charts: events (Progress, System, Media); header.
Pace = Literal["rows", "charts", "header"]


@st.cache_resource(max_entries=32, show_spinner=False)
def run_events(run_dir: str) -> RunEvents:
    """One set of incremental readers per run, shared by every session (it locks itself)."""
    return RunEvents(Path(run_dir))


def snapshot_of(run: Run) -> Snapshot:
    """What has been read of the run's events, every time on our clock (a host whose clock
    is off is moved onto it); a big first read goes on in the background."""
    return run_events(str(run.path)).refresh(run.indices).on_our_clock(run.clock_offsets)


@st.cache_resource(max_entries=32, show_spinner=False)
def status_trail(run_dir: str) -> StatusTrail:
    """The status samples the page saw of a run, kept across reruns for every session."""
    return StatusTrail(Path(run_dir).name)


def printed_of(run: Run) -> Snapshot | None:
    """For a script run without progress events: the progress its program printed, every
    status.json sample seen so far (this one included), on our clock; else None."""
    if not shows_printed(run, snapshot_of(run)):
        return None
    return status_trail(str(run.path)).record(run.workers, run.local_time)


def every(run: Run, pace: Pace) -> float | None:
    """Seconds between redraws of a live part of this run (None: drawn once)."""
    loading = snapshot_of(run).loading is not None
    active = REFRESH_SECONDS if run.active else None
    if pace == "charts" and loading:
        return LOADING_REFRESH_SECONDS
    if pace == "header" and loading:
        return REFRESH_SECONDS
    return active


def live(part: Callable[..., None], run: Run, pace: Pace = "rows", *args: Any) -> None:
    """Draw part(run, *args) now and again at the run's pace, each time with the run as it
    is then; a part of a run that is gone is not drawn (a warning says so)."""
    was_loading = snapshot_of(run).loading is not None
    # Its own container: a fragment is told apart from others by where it is drawn.
    with st.container():
        st.fragment(_redraw, run_every=every(run, pace))(part, run, was_loading, *args)


def _redraw(part: Callable[..., None], run: Run, was_loading: bool, *args: Any) -> None:
    now = current(run)
    if now is None:
        return
    if was_loading and snapshot_of(now).loading is None:
        st.rerun()  # the first read is done: the whole page at its usual pace
    part(now, *args)


def current(run: Run) -> Run | None:
    """The run as it is now; the whole page again when it ended or vanished while active."""
    now = load_run(run.path)
    gone = not run.path.is_dir()
    if run.active and (gone or not now.active):
        st.rerun()
    if gone:
        st.warning(f"Run {text.code(run.run_id)} was removed while shown.")
        return None
    return now


def watch_runs(runs_dir: Path, active: bool) -> None:
    """Sidebar, every few seconds: the page again when a run appears, ends or is removed."""
    st.fragment(_watch, run_every=REFRESH_SECONDS)(runs_dir, runs_signature(runs_dir), active)


def _watch(runs_dir: Path, signature: tuple[tuple[str, int], ...], active: bool) -> None:
    if runs_signature(runs_dir) != signature:
        st.rerun()
    st.caption(
        f"Live: refreshing every {REFRESH_SECONDS:.0f} s."
        if active
        else "Nothing running in this run: not refreshing (new runs still show up)."
    )


def until_read(runs: Sequence[Run]) -> None:
    """While some of these runs' events are first read: the page again each time more is
    read (for a part that is not live otherwise, such as Compare)."""
    snapshots = [snapshot_of(run) for run in runs]
    if any(snapshot.loading is not None for snapshot in snapshots):
        versions = tuple(snapshot.version for snapshot in snapshots)
        st.fragment(_rerun_when_read, run_every=LOADING_REFRESH_SECONDS)(runs, versions)


def _rerun_when_read(runs: Sequence[Run], versions: tuple[int, ...]) -> None:
    if tuple(snapshot_of(run).version for run in runs) != versions:
        st.rerun()
