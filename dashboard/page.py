"""The dashboard's page, built at each rerun of dashboard/app.py.

A header tells the chosen run's story (state, phase, epoch, ETA, throughput, configuration,
and for a failed run who caused it and what to do). Tabs: Runs (every run; click one to
open it), Cluster (the workers grouped by host, and their table), Progress (bars and
charts), System (CPU, memory, network and GPUs per worker, the worker that holds the others
back), Artifacts (downloads, logs), Compare (overlay two or more runs). Only the open tab
is built. While the run is active its live parts refresh every few seconds; the whole page
reruns when a run appears, ends or changes state. A big run is shown before its events are
read: they are read in the background (dashboard.live) while the charts redraw every
second with what is there.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import plotly.graph_objects as go
import streamlit as st

from dashboard import charts, clusterview, compare, system, text, triage
from dashboard.cluster import (
    WorkerRow,
    eta_seconds,
    phase_summary,
    progress_of,
    rows_frame,
    slowest_epoch,
    total_throughput,
    worker_rows,
)
from dashboard.live import RunEvents, Snapshot
from dashboard.livechart import live_chart
from dashboard.runs import (
    ClusterInfo,
    Run,
    list_runs,
    load_run,
    load_runs,
    plain_run_name,
    run_file,
    runs_dir_from,
    safe_file,
    tail_lines,
)
from dashboard.tabs import media as media_tab
from runformat import (
    KERAS_EPOCH_ACCURACY,
    KERAS_EPOCH_LOSS,
    LAUNCHER_LOG,
    METRICS_JSON,
    MODEL_FILE,
    WORKERS_DIR,
    worker_log_rel,
)

if TYPE_CHECKING:
    import pandas as pd

REFRESH_SECONDS = 3.0
# While a run's events are read for the first time, its live parts redraw this often with
# what has been read so far.
LOADING_REFRESH_SECONDS = 1.0
# Up to this many workers each gets its own progress bar; above, one bar for the run.
BARS_UP_TO = 8
STATE_BADGES = {
    "starting": "gray",
    "running": "blue",
    "finished": "green",
    "failed": "red",
    "stopped": "orange",
    "stalled": "orange",
}
TABS = ("Runs", "Cluster", "Progress", "System", "Media", "Artifacts", "Compare")


@st.cache_resource(max_entries=32, show_spinner=False)
def run_events(run_dir: str) -> RunEvents:
    """One set of incremental readers per run, shared by every session (it locks itself)."""
    return RunEvents(Path(run_dir))


def snapshot_of(run: Run) -> Snapshot:
    """What has been read of the run's events; a big first read goes on in the background."""
    return run_events(str(run.path)).refresh(run.indices)


def render_loading(snapshot: Snapshot) -> None:
    """How far a first read of the events has got, above charts that show that part."""
    if snapshot.loading is not None:
        st.progress(
            snapshot.loading.fraction,
            text=f"{snapshot.loading}: the page shows what is read so far.",
        )


def metric_chart(
    run: Run,
    snapshot: Snapshot,
    tag: str,
    x_axis: str,
    smoothing: float,
    log_y: bool,
) -> go.Figure | None:
    """A metric's figure, built once per snapshot and settings, shared by every viewer;
    of its workers' lines only those whose points changed since the last build are redone."""

    def build() -> go.Figure | None:
        metric = next(m for m in charts.METRICS if m.tag == tag)
        revision = f"{run.run_id}/{tag}/{x_axis}"
        return charts.metric_figure(
            snapshot.workers,
            metric,
            run.started,
            x_axis,
            smoothing,
            log_y,
            revision,
            snapshot.lines,
        )

    return snapshot.memo(("chart", tag, x_axis, smoothing, log_y, run.started), build)


def badge(state: str) -> str:
    return f":{STATE_BADGES.get(state, 'gray')}-badge[{text.md(state)}]"


def runs_signature(runs_dir: Path) -> tuple[tuple[str, int], ...]:
    """Every run name with its cluster.json's change time: what the run list shows."""
    signature = []
    for name in list_runs(runs_dir):
        try:
            changed = os.stat(runs_dir / name / "cluster.json").st_mtime_ns
        except OSError:
            changed = 0
        signature.append((name, changed))
    return tuple(signature)


def render_watch(runs_dir: Path, signature: tuple[tuple[str, int], ...], active: bool) -> None:
    """Sidebar, every few seconds: rerun the page when a run appears, ends or is removed."""
    if runs_signature(runs_dir) != signature:
        st.rerun()
    st.caption(
        f"Live: refreshing every {REFRESH_SECONDS:.0f} s."
        if active
        else "Nothing running in this run: not refreshing (new runs still show up)."
    )


def render_empty(runs_dir: Path) -> None:
    """No runs yet: say where we looked and how to make one."""
    missing = "" if runs_dir.is_dir() else " (the folder does not exist yet)"
    st.info(f"No runs in {text.code(runs_dir.resolve())}{missing}.")
    st.markdown(
        "Start one from the repository folder, then come back here:\n\n"
        "```bash\n"
        "fab deploy train              # train on the machines in hosts.txt\n"
        "scripts/demo.sh               # or: two local workers, no SSH needed\n"
        "```\n\n"
        "Runs live somewhere else? `streamlit run dashboard/app.py -- --runs DIR` "
        "or `TFCLUSTER_RUNS=DIR`. Just looking? `python -m dashboard.samplerun runs` "
        "writes a made-up run."
    )


def runs_frame(runs: list[Run], now: float) -> pd.DataFrame:
    """The Runs table: state, size, configuration, timing and result of every run."""
    import pandas as pd  # lazily: 1-3 s to import, not before the first chart (app.py)

    rows = []
    for run in runs:
        accuracy = run.metrics.test_accuracy if run.metrics else None
        rows.append(
            {
                "run": run.run_id,
                "state": run.state,
                **compare.run_config(run),
                "started": text.when(run.started),
                "duration": text.duration(run.duration(now)),
                "test accuracy": text.MISSING if accuracy is None else f"{accuracy:.4f}",
            }
        )
    return pd.DataFrame(rows).fillna(text.MISSING)


def _open_selected_run() -> None:
    """A click on a row of the Runs table opens that run (before the sidebar is drawn)."""
    selection = st.session_state.get("runs-table")
    rows = selection.selection.rows if selection is not None else []
    names = st.session_state.get("runs-order", [])
    if rows and rows[0] < len(names):
        st.session_state["run"] = names[rows[0]]
        st.session_state["tab"] = "Cluster"


def render_runs(runs_dir: Path, runs: list[Run]) -> None:
    """The Runs tab: every run, newest first; a click on a row opens it."""
    if not runs:
        render_empty(runs_dir)
        return
    st.session_state["runs-order"] = [run.run_id for run in runs]
    st.caption(f"{len(runs)} run(s) in {text.code(runs_dir.resolve())}. Click a row to open it.")
    st.dataframe(
        runs_frame(runs, time.time()),
        hide_index=True,
        width="stretch",
        key="runs-table",
        on_select=_open_selected_run,
        selection_mode="single-row",
    )


def choose_run(runs: list[Run]) -> Run | None:
    """The run named in the URL (?run=) or picked in the sidebar.

    A name that is not a run of the folder keeps its warning and leaves the choice to the
    user: the page never jumps to another run by itself.
    """
    names = [run.run_id for run in runs]
    by_name = {run.run_id: run for run in runs}
    requested = st.query_params.get("run")
    if "run" not in st.session_state:
        first = names[0] if names and not requested else None
        st.session_state["run"] = requested if requested in by_name else first
    current = st.session_state["run"]
    if current is not None and current not in by_name:
        st.warning(f"Run {text.code(current)} is not in the runs folder (removed?).")
        st.session_state["run"] = None
    elif requested and requested not in by_name and current is None:
        if not plain_run_name(requested):
            st.warning(f"Refused run name {text.code(requested)}: not a folder of the runs folder.")
        else:
            st.warning(f"Run {text.code(requested)} is not in the runs folder (removed?).")
        if names:
            st.info("Pick a run in the sidebar or in the Runs tab.")
    if not runs:
        return None
    # The state goes under the box, not into its label: the browser keeps showing the label
    # a run had when it was picked, so "running" would stay there after the run ended.
    chosen = st.sidebar.selectbox("Run", names, key="run", index=None, placeholder="Pick a run")
    if chosen is None:
        return None
    st.sidebar.markdown(f"State: {badge(by_name[chosen].state)}")
    if st.query_params.get("run") != chosen:
        st.query_params["run"] = chosen
    return by_name[chosen]


def current_run(run_path: Path, was_active: bool) -> Run | None:
    """The run as it is now, for a live part; a full rerun when it ended or vanished."""
    run = load_run(run_path)
    gone = not run_path.is_dir()
    if was_active and (gone or not run.active):
        st.rerun()
    if gone:
        st.warning(f"Run {text.code(run.run_id)} was removed while shown.")
        return None
    return run


def _rows(run: Run, snapshot: Snapshot) -> list[WorkerRow]:
    progress = {index: progress_of(series) for index, series in snapshot.workers.items()}
    return worker_rows(run, progress, time.time())


def _eta(run: Run, snapshot: Snapshot, rows: list[WorkerRow]) -> str:
    if not run.active:
        return text.MISSING
    chief = min(snapshot.workers) if snapshot.workers else None
    total = next((row.steps_total for row in rows if row.steps_total), None)
    if chief is None:
        return text.MISSING
    return text.duration(eta_seconds(snapshot.workers[chief], total))


def render_header(run_path: Path, was_active: bool, was_loading: bool = False) -> None:
    """The run's story at a glance (live): state, phase, epoch, ETA, speed, configuration.

    Once a first read of the events that was going on is done, the whole page runs again,
    back to its usual refresh (or to none for a run that has ended).
    """
    run = current_run(run_path, was_active)
    if run is None:
        return
    snapshot = snapshot_of(run)
    if was_loading and snapshot.loading is None:
        st.rerun()
    rows = _rows(run, snapshot)
    st.markdown(f"### Run {text.code(run.run_id)} {badge(run.state)}")
    render_loading(snapshot)
    done, total = slowest_epoch(rows)
    accuracy = run.metrics.test_accuracy if run.metrics else None
    phase, phases = phase_summary(rows) if run.active else (run.state, "")
    figures = (
        ("Workers", str(len(rows))),
        ("Phase", phase),
        ("Epoch (completed)", text.of_total(done, total)),
        ("ETA", _eta(run, snapshot, rows)),
        ("Examples/s (all)", text.number(total_throughput(rows), 0)),
        ("Test accuracy", text.MISSING if accuracy is None else f"{accuracy:.4f}"),
        ("Duration", text.duration(run.duration())),
    )
    for column, (label, value) in zip(st.columns(len(figures)), figures, strict=True):
        column.metric(label, text.md(value, 40))
    config = compare.run_config(run)
    shown = [f"{text.md(k)} **{text.md(v, 60)}**" for k, v in config.items() if v != "-"]
    st.caption(" · ".join(shown) + (f"  \nPhases: {phases}" if phases else ""))
    story = triage.failure_story(run, rows)
    if story is not None:
        render_failure(story)
    if run.cluster and run.cluster.restarts:
        render_restarts(run.cluster)
    problems = [*run.warnings, *snapshot.problems]
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


def render_cluster(run_path: Path, was_active: bool) -> None:
    """The Cluster tab: workers grouped by host and coloured by state, and their table (live)."""
    run = current_run(run_path, was_active)
    if run is None:
        return
    rows = _rows(run, snapshot_of(run))
    if not rows:
        st.info("No workers known yet: cluster.json and workers/ are both missing.")
        return
    live_chart(clusterview.cluster_figure(rows), "cluster-figure", {"displayModeBar": False})
    stalled = [row for row in rows if row.stalled]
    for row in stalled[:5]:
        usual = f"{row.interval:.1f} s" if row.interval else "unknown"
        st.warning(
            f"worker {row.index} ({text.md(row.host)}) is stalled: silent for "
            f"{row.since_update or 0:.0f} s in phase {text.md(row.phase or 'training')}, "
            f"its usual interval is {usual}."
        )
    if len(stalled) > 5:
        st.warning(f"{len(stalled) - 5} more workers are stalled: see the table.")
    frame = rows_frame(rows)
    st.dataframe(
        frame.style.apply(_highlight, axis=1),
        hide_index=True,
        width="stretch",
        height="auto" if len(rows) <= 16 else 600,
        column_config={"stalled": st.column_config.CheckboxColumn()},
        key="workers-table",
    )


def _highlight(row: pd.Series) -> list[str]:
    state = "stalled" if row["stalled"] else str(row["state"]).split(" ")[0]
    color = {
        "stalled": "#ffe0b2",
        "failed": "#ffcdd2",
        "aborted": "#ede7f6",
        "stopped": "#efebe9",
    }.get(state, "")
    return [f"background-color: {color}" if color else ""] * len(row)


def render_bars(rows: list[WorkerRow]) -> None:
    """A bar per worker when there are few; one bar for the run (its slowest) when many."""
    if len(rows) <= BARS_UP_TO:
        for row in rows:
            st.progress(
                row.fraction or 0.0,
                text=f"{charts.worker_label(row.index)} · {row.shown_state} · step "
                f"{text.of_total(row.step, row.steps_total)} · epoch "
                f"{text.of_total(row.epoch, row.epochs)}",
            )
        return
    slowest = min(rows, key=lambda row: row.fraction or 0.0)
    fastest = max(rows, key=lambda row: row.fraction or 0.0)
    done, total = slowest_epoch(rows)
    st.progress(
        slowest.fraction or 0.0,
        text=f"{len(rows)} workers · slowest {charts.worker_label(slowest.index)} step "
        f"{text.of_total(slowest.step, slowest.steps_total)}, fastest "
        f"{charts.worker_label(fastest.index)} step "
        f"{text.of_total(fastest.step, fastest.steps_total)} · epoch {text.of_total(done, total)}",
    )


def render_progress(run_path: Path, was_active: bool) -> None:
    """The Progress tab: bars, then one chart per metric with its own log scale (live)."""
    run = current_run(run_path, was_active)
    if run is None:
        return
    snapshot = snapshot_of(run)
    render_bars(_rows(run, snapshot))
    left, right = st.columns([3, 2])
    x_axis = left.segmented_control(
        "x axis",
        list(charts.X_AXES),
        format_func=lambda key: charts.X_AXES[key],
        default="step",
        key="x-axis",
    )
    smoothing = right.slider("Smoothing", 0.0, 0.99, 0.6, 0.01, key="smoothing")
    drawn = 0
    for pair in (charts.METRICS[:2], charts.METRICS[2:]):
        for column, metric in zip(st.columns(2), pair, strict=True):
            log_y = bool(st.session_state.get(f"log-{metric.tag}", False))
            axis = x_axis or "step"
            figure = metric_chart(run, snapshot, metric.tag, axis, smoothing, log_y)
            if figure is None:
                continue
            with column:
                title, toggle = st.columns([4, 1])
                note = " · the same on every worker" if metric.all_reduced else ""
                title.markdown(f"**{metric.title}**{note}")
                toggle.toggle("Log", key=f"log-{metric.tag}")
                live_chart(figure, key=f"chart-{run.run_id}-{metric.tag}")
            drawn += 1
    if drawn:
        st.caption(
            "Drag across a chart to zoom, or pan with the hand of its tool bar: both stay"
            " while the run updates. A double click shows it all again."
        )
    elif snapshot.loading is not None:
        st.info("The charts appear as the workers' events are read.")
    else:
        st.info("No progress points yet: the workers write them every few steps.")
    render_epochs(snapshot, run.run_id)


def render_epochs(snapshot: Snapshot, run_id: str) -> None:
    chief = snapshot.chief
    if not any(chief.get(split) for split in chief):
        return
    st.markdown("**Chief, per epoch** (Keras train and validation)")
    for column, tag, title in zip(
        st.columns(2),
        (KERAS_EPOCH_LOSS, KERAS_EPOCH_ACCURACY),
        ("Loss per epoch", "Accuracy per epoch"),
        strict=True,
    ):
        splits = {s: series[tag] for s, series in chief.items() if tag in series}
        if splits:
            figure = charts.epoch_figure(splits, title, revision=f"{run_id}/{tag}")
            with column:
                live_chart(figure, key=f"chart-{run_id}-{tag}")


def render_system(run_path: Path, was_active: bool) -> None:
    """The System tab: who holds the others back, warnings, and each worker's system charts."""
    run = current_run(run_path, was_active)
    if run is None:
        return
    snapshot = snapshot_of(run)
    workers = snapshot.workers
    hosts = {h.index: h.name for h in (run.cluster.hosts if run.cluster else ())}
    hosts.update({i: w.host for i, w in run.workers.items() if i not in hosts and w.host})
    phases = {i: w.phase for i, w in run.workers.items()}
    training = [i for i, phase in phases.items() if phase == "training"]
    straggler = system.find_straggler(workers, training if run.active else None)
    if straggler is not None:
        st.warning(text.md(straggler.message(hosts)))
    for line in system.system_warnings(workers, hosts, phases if run.active else {}):
        st.warning(text.md(line))
    figures = snapshot.memo(
        ("system", run.started),
        lambda: system.system_figures(workers, run.started, snapshot.lines),
    )
    if not figures and snapshot.loading is not None:
        st.info("The charts appear as the workers' events are read.")
    elif not figures:
        st.info("No system metrics yet: each worker samples them every few seconds.")
    for pair in range(0, len(figures), 2):
        for column, (tag, figure) in zip(st.columns(2), figures[pair : pair + 2], strict=False):
            with column:
                live_chart(figure, key=f"chart-{run.run_id}-{tag}")


def _csv_reader(run: Run, tag: str) -> Callable[[], bytes]:
    """Builds the CSV when the button is clicked, from what has been read by then."""

    def read() -> bytes:
        snapshot = snapshot_of(run)
        return charts.csv_bytes(charts.scalar_frame(snapshot.workers, tag, run.started))

    return read


def render_csv(run: Run) -> None:
    """Every chart's data as CSV (outside the live part: downloads must not be refreshed)."""
    columns = st.columns(len(charts.METRICS))
    for column, metric in zip(columns, charts.METRICS, strict=True):
        name = metric.tag.split("/")[-1]
        column.download_button(
            f"⬇ {metric.title} CSV",
            data=_csv_reader(run, metric.tag),
            file_name=f"{run.run_id}-{name}.csv",
            mime="text/csv",
            on_click="ignore",
            key=f"csv-{metric.tag}",
        )


def _file_reader(run_dir: Path, relative: str) -> Callable[[], bytes]:
    """Reads the file when the button is clicked, checking again that it stays in the run."""

    def read() -> bytes:
        path = safe_file(run_dir, relative)
        return path.read_bytes() if path is not None else b""

    return read


def render_downloads(run: Run) -> None:
    warnings: list[str] = []
    files = [
        (MODEL_FILE, f"Model ({MODEL_FILE})"),
        (METRICS_JSON, f"Test metrics ({METRICS_JSON})"),
    ]
    files += [(worker_log_rel(i), f"{charts.worker_label(i)} log") for i in run.indices]
    files.append((LAUNCHER_LOG, "Launcher log"))
    columns = st.columns(3)
    for position, (relative, label) in enumerate(files):
        column = columns[position % 3]
        path = run_file(run.path, relative, warnings)
        try:
            size = path.stat().st_size if path is not None else None
        except OSError:
            size = None
        if path is None or size is None:
            missing = triage.no_model_reason(run) if relative == MODEL_FILE else None
            waiting = "written when training ends" if run.active else "not there"
            column.caption(text.md(missing or f"{label}: {waiting}"))
            continue
        name = relative.replace(f"{WORKERS_DIR}/", "worker-").replace("/", "-")
        column.download_button(
            f"⬇ {label} · {size:,} bytes",
            data=_file_reader(run.path, relative),
            file_name=f"{run.run_id}-{name}",
            mime="application/octet-stream" if relative.endswith(".h5") else "text/plain",
            on_click="ignore",
            key=f"download-{relative}",
        )
    for warning in warnings:
        st.warning(text.md(warning))


def render_artifacts(run: Run) -> None:
    """The Artifacts tab: downloads (never inside a live fragment), TensorBoard, log tails."""
    render_downloads(run)
    st.markdown("**TensorBoard** (every worker's curves and the chief's):")
    st.code(f"tensorboard --logdir {shlex.quote(_shown_path(run.path))}", language="bash")
    logs = {charts.worker_label(i): worker_log_rel(i) for i in run.indices}
    logs["launcher"] = LAUNCHER_LOG
    failure = run.cluster.failure if run.cluster else None
    cause = failure.index if failure is not None else None
    default = charts.worker_label(cause) if cause in run.indices else next(iter(logs))
    left, middle, right = st.columns([2, 3, 1])
    choice = left.selectbox("Log", list(logs), index=list(logs).index(default), key="log-choice")
    search = middle.text_input("Search the log", key="log-search", placeholder="e.g. error")
    lines = right.number_input("Lines", 10, 5000, 200, 10, key="log-lines")
    live = st.fragment(render_log_tail, run_every=REFRESH_SECONDS if run.active else None)
    live(run.path, logs[choice or "launcher"], int(lines), search or "")


def _shown_path(path: Path) -> str:
    """The run folder as the user would type it: relative to here when it is below here."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def render_log_tail(run_dir: Path, relative: str, lines: int, search: str) -> None:
    path = safe_file(run_dir, relative)
    if path is None:
        st.caption(f"{text.md(relative)}: nothing to show")
        return
    tail = tail_lines(path, lines if not search else 20_000)
    if search:
        needle = search.lower()
        tail = [line for line in tail if needle in line.lower()][-lines:]
        st.caption(f"{len(tail)} line(s) containing “{text.md(search, 60)}”")
    st.code("\n".join(tail) or "(empty)", language=None)


def render_compare(runs: list[Run], run: Run | None) -> None:
    """The Compare tab: overlay the curves of two or more runs; what differs between them."""
    names = [r.run_id for r in runs]
    default = [run.run_id] if run is not None else names[:1]
    picked = st.multiselect("Runs to compare", names, default=default, key="compare-runs")
    if len(picked) < 2:
        st.info("Pick two or more runs to overlay their curves.")
        return
    chosen = [r for r in runs if r.run_id in picked]
    snapshots = {r.run_id: snapshot_of(r) for r in chosen}
    for run_id, snapshot in snapshots.items():
        if snapshot.loading is not None:
            st.caption(f"{text.md(run_id)}: {snapshot.loading}")
    if any(snapshot.loading is not None for snapshot in snapshots.values()):
        versions = tuple(snapshot.version for snapshot in snapshots.values())
        st.fragment(rerun_when_read, run_every=LOADING_REFRESH_SECONDS)(chosen, versions)
    config = compare.config_frame(chosen)
    differing = compare.differences(config)
    st.markdown("**How their configurations differ**")
    if differing.empty or not len(differing.columns):
        st.caption("Same configuration.")
    else:
        st.dataframe(differing, width="stretch")
    left, right = st.columns(2)
    # Each run's line is kept with the run (its readers' cache) until its points change.
    lines = {
        r.run_id: (snapshots[r.run_id].workers, r.started, snapshots[r.run_id].lines)
        for r in chosen
    }
    for column, metric in zip((left, right, left, right), charts.METRICS, strict=True):
        figure = charts.overlay_figure(lines, metric)
        if figure is None:
            continue
        with column:
            st.markdown(f"**{metric.title}**")
            live_chart(figure, key=f"compare-{metric.tag}")


def rerun_when_read(runs: list[Run], versions: tuple[int, ...]) -> None:
    """While the compared runs' events are first read: the page again once more is read
    (the Compare tab is not live otherwise)."""
    if tuple(snapshot_of(run).version for run in runs) != versions:
        st.rerun()


def main() -> None:
    """The whole page, once per rerun (dashboard/app.py has set the page up)."""
    runs_dir = runs_dir_from(sys.argv[1:], os.environ)
    signature = runs_signature(runs_dir)
    st.sidebar.title("tfcluster")
    st.sidebar.caption(f"Runs folder: {text.code(runs_dir.resolve())}")
    runs = load_runs(runs_dir)
    run = choose_run(runs)
    live = REFRESH_SECONDS if run is not None and run.active else None
    # Reading a big run for the first time goes on in the background: until it is done the
    # charts redraw every second with what has been read, and the header (which tells how
    # far the read has got) at the live pace. The Cluster tab keeps its pace too: its rows
    # come from status.json. A page part redrawn every second keeps a slow browser from
    # finishing its first drawing of the page (the header at 1 s: 16.9 s to the first
    # chart on 2 busy cores; at 3 s: 9.3 s; benchmarks/bench_dashboard.py).
    loading = run is not None and snapshot_of(run).loading is not None
    every = LOADING_REFRESH_SECONDS if loading else live
    header_every = REFRESH_SECONDS if loading else live
    with st.sidebar:
        st.fragment(render_watch, run_every=REFRESH_SECONDS)(
            runs_dir, signature, run is not None and run.active
        )
    if run is not None:
        st.fragment(render_header, run_every=header_every)(run.path, run.active, loading)
    if "tab" not in st.session_state or not runs:
        st.session_state["tab"] = "Cluster" if run is not None else "Runs"
    tabs = dict(zip(TABS, st.tabs(list(TABS), key="tab", on_change="rerun"), strict=True))
    if tabs["Runs"].open:
        with tabs["Runs"]:
            render_runs(runs_dir, runs)
    if tabs["Compare"].open:
        with tabs["Compare"]:
            render_compare(runs, run)
    for name in ("Cluster", "Progress", "System", "Artifacts"):
        if tabs[name].open and run is None:
            with tabs[name]:
                st.info("No run to show: pick one in the sidebar or in the Runs tab.")
    if run is None:
        return
    if tabs["Cluster"].open:
        with tabs["Cluster"]:
            st.fragment(render_cluster, run_every=live)(run.path, run.active)
    if tabs["Progress"].open:
        with tabs["Progress"]:
            st.fragment(render_progress, run_every=every)(run.path, run.active)
            render_csv(run)
    if tabs["System"].open:
        with tabs["System"]:
            st.fragment(render_system, run_every=every)(run.path, run.active)
    if tabs["Media"].open:
        with tabs["Media"]:
            st.fragment(media_tab.render, run_every=live)(run)
    if tabs["Artifacts"].open:
        with tabs["Artifacts"]:
            render_artifacts(run)
