"""tfcluster dashboard: `streamlit run dashboard/app.py [-- --runs DIR]`.

Tabs: Runs (every run, newest first), Cluster (picture and per-worker table), Progress
(progress bars and charts), System (CPU, memory, network and GPUs per worker, warnings, the
worker that holds the others back) and Artifacts (downloads and log tails). While the chosen
run is active the live parts refresh themselves every few seconds; they stop when it ends.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard import charts, system
from dashboard.cluster import WorkerRow, progress_of, rows_frame, worker_rows
from dashboard.live import RunEvents, Snapshot
from dashboard.runs import (
    ClusterInfo,
    Run,
    load_run,
    load_runs,
    plain_run_name,
    run_file,
    runs_dir_from,
    safe_file,
    tail_lines,
)
from runformat import (
    KERAS_EPOCH_ACCURACY,
    KERAS_EPOCH_LOSS,
    LAUNCHER_LOG,
    METRICS_JSON,
    MODEL_FILE,
    PROGRESS_ACCURACY,
    PROGRESS_EXAMPLES_PER_SEC,
    PROGRESS_LOSS,
    WORKERS_DIR,
    worker_log_rel,
)

REFRESH_SECONDS = 3.0
STATE_BADGES = {
    "starting": "gray",
    "running": "blue",
    "finished": "green",
    "failed": "red",
    "stopped": "orange",
    "stalled": "orange",
}
TABS = ("Runs", "Cluster", "Progress", "System", "Artifacts")


@st.cache_resource(max_entries=32, show_spinner=False)
def run_events(run_dir: str) -> RunEvents:
    """One set of incremental readers per run, shared by every session (it locks itself)."""
    return RunEvents(Path(run_dir))


def snapshot_of(run: Run) -> Snapshot:
    return run_events(str(run.path)).refresh(run.indices)


def badge(state: str) -> str:
    return f":{STATE_BADGES.get(state, 'gray')}-badge[{state}]"


def _plain(text: str) -> str:
    """User-controlled text shown inside markdown: no markup, no links."""
    return "".join(c for c in text if c.isalnum() or c in "-_.:/ @")[:120]


def _escaped(text: str) -> str:
    """Text with host names in it, shown as it is: every markdown character escaped."""
    return "".join(f"\\{c}" if c in "\\`*_{}[]()<>#+-.!|~$%" else c for c in text)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) if stamp else "?"


def render_empty(runs_dir: Path) -> None:
    """No runs yet: say where we looked and how to make one."""
    where = runs_dir.resolve()
    missing = "" if runs_dir.is_dir() else " (the folder does not exist yet)"
    st.info(f"No runs in `{where}`{missing}.")
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


def render_runs(runs_dir: Path, runs: list[Run]) -> None:
    """The Runs tab: every run, newest first."""
    if not runs:
        render_empty(runs_dir)
        return
    now = time.time()
    table = pd.DataFrame(
        [
            {
                "run": run.run_id,
                "state": run.state,
                "workers": len(run.indices),
                "dataset": run.dataset or "",
                "started": _when(run.started),
                "duration": _duration(run.duration(now)),
                "test accuracy": run.metrics.test_accuracy if run.metrics else None,
            }
            for run in runs
        ]
    )
    st.caption(f"{len(runs)} run(s) in `{runs_dir.resolve()}`. Pick one in the sidebar.")
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_config={
            "test accuracy": st.column_config.NumberColumn(format="%.4f"),
        },
        key="runs-table",
    )


def choose_run(runs_dir: Path, runs: list[Run]) -> Run | None:
    """The run named in the URL (?run=) or picked in the sidebar; refuses names that escape."""
    names = [run.run_id for run in runs]
    requested = st.query_params.get("run")
    if requested and requested not in names:
        if not plain_run_name(requested):
            st.warning(f"Refused run name `{_plain(requested)}`: not a folder of the runs folder.")
        else:
            st.warning(f"Run `{_plain(requested)}` is not in the runs folder (removed?).")
    if not runs:
        return None
    by_name = {run.run_id: run for run in runs}
    current = st.session_state.get("run")
    if current not in by_name:
        st.session_state["run"] = requested if requested in by_name else names[0]
    chosen = st.sidebar.selectbox(
        "Run",
        names,
        key="run",
        format_func=lambda name: f"{name} · {by_name[name].state}",
    )
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
        st.warning(f"Run `{_plain(run.run_id)}` was removed while shown.")
        return None
    return run


def render_header(run_path: Path, was_active: bool) -> None:
    """Run title, key figures, failure and warnings (live)."""
    run = current_run(run_path, was_active)
    if run is None:
        return
    snapshot = snapshot_of(run)
    st.markdown(f"### Run `{_plain(run.run_id)}` {badge(run.state)}")
    columns = st.columns(5)
    statuses = [w for w in run.workers.values()]
    epochs = [w.epoch for w in statuses if w.epoch is not None]
    total_epochs = (run.cluster.epochs if run.cluster else None) or next(
        (w.epochs for w in statuses if w.epochs), None
    )
    columns[0].metric("Workers", len(run.indices))
    slowest = min(epochs) if epochs else 0
    columns[1].metric("Epoch (slowest worker)", f"{slowest}/{total_epochs or '?'}")
    columns[2].metric("Dataset", run.dataset or "?")
    accuracy = run.metrics.test_accuracy if run.metrics else None
    columns[3].metric("Test accuracy", f"{accuracy:.4f}" if accuracy is not None else "-")
    columns[4].metric("Duration", _duration(run.duration()))
    failure = run.cluster.failure if run.cluster else None
    if failure is not None:
        who = f"worker {failure.index}" if failure.index is not None else "a worker"
        st.error(f"{who} ({_plain(failure.host or '?')}) failed: {_plain(failure.reason)}")
        if failure.log_tail:
            with st.expander("Last lines of its log"):
                st.code("\n".join(failure.log_tail[-40:]), language=None)
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
                st.warning(problem)


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
            f"- attempt {attempt.number} ({_when(attempt.ended)}): {who} "
            f"({_plain(failure.host or '?')}) failed: {_plain(failure.reason)}"
        )
    st.info("\n".join(lines))


def _rows(run: Run, snapshot: Snapshot) -> list[WorkerRow]:
    progress = {index: progress_of(series) for index, series in snapshot.workers.items()}
    return worker_rows(run, progress, time.time())


def render_cluster(run_path: Path, was_active: bool) -> None:
    """The Cluster tab: the layout coloured by state, and the per-worker table (live)."""
    run = current_run(run_path, was_active)
    if run is None:
        return
    rows = _rows(run, snapshot_of(run))
    if not rows:
        st.info("No workers known yet: cluster.json and workers/ are both missing.")
        return
    st.plotly_chart(charts.cluster_figure(rows), width="stretch", key="cluster-figure")
    for row in rows:
        if row.stalled:
            usual = f"{row.interval:.1f} s" if row.interval else "unknown"
            st.warning(
                f"worker {row.index} ({_plain(row.host)}) is stalled: silent for "
                f"{row.since_update:.0f} s, its usual interval is {usual}."
            )
    frame = rows_frame(rows)
    st.dataframe(
        frame.style.apply(_highlight, axis=1).format({"examples/s": "{:.1f}"}, na_rep="-"),
        hide_index=True,
        width="stretch",
        column_config={"stalled": st.column_config.CheckboxColumn()},
        key="workers-table",
    )


def _highlight(row: pd.Series) -> list[str]:
    state = "stalled" if row["stalled"] else row["state"]
    color = {"stalled": "#ffe0b2", "failed": "#ffcdd2", "stopped": "#efebe9"}.get(state, "")
    return [f"background-color: {color}" if color else ""] * len(row)


def render_progress(run_path: Path, was_active: bool) -> None:
    """The Progress tab: a bar per worker and the charts (live)."""
    run = current_run(run_path, was_active)
    if run is None:
        return
    snapshot = snapshot_of(run)
    for row in _rows(run, snapshot):
        fraction = row.fraction
        text = (
            f"{charts.worker_label(row.index)} · {row.shown_state} · step "
            f"{row.step if row.step is not None else '?'}/{row.steps_total or '?'} · epoch "
            f"{row.epoch if row.epoch is not None else '?'}/{row.epochs or '?'}"
        )
        st.progress(fraction or 0.0, text=text)
    left, middle, right = st.columns([2, 2, 1])
    x_axis = left.segmented_control(
        "x axis",
        list(charts.X_AXES),
        format_func=lambda key: charts.X_AXES[key],
        default="step",
        key="x-axis",
    )
    smoothing = middle.slider("Smoothing", 0.0, 0.99, 0.6, 0.01, key="smoothing")
    log_y = right.toggle("Log scale", key="log-y")
    start = run.started
    figures = [
        (PROGRESS_LOSS, "Loss"),
        (PROGRESS_ACCURACY, "Accuracy"),
        (PROGRESS_EXAMPLES_PER_SEC, "Throughput (examples/s)"),
    ]
    drawn = 0
    columns = st.columns(len(figures))
    for column, (tag, title) in zip(columns, figures, strict=True):
        frame = charts.scalar_frame(snapshot.workers, tag, start)
        if frame.empty:
            continue
        figure = charts.line_figure(frame, title, x_axis or "step", smoothing, log_y)
        column.plotly_chart(figure, width="stretch", key=f"chart-{tag}")
        drawn += 1
    if not drawn:
        st.info("No progress points yet: the workers write them every few steps.")
    chief = snapshot.chief
    if any(chief.get(split) for split in chief):
        st.markdown("**Chief, per epoch** (Keras train and validation)")
        left_chart, right_chart = st.columns(2)
        for column, tag, title in (
            (left_chart, KERAS_EPOCH_LOSS, "Loss per epoch"),
            (right_chart, KERAS_EPOCH_ACCURACY, "Accuracy per epoch"),
        ):
            splits = {s: series[tag] for s, series in chief.items() if tag in series}
            if splits:
                figure = charts.epoch_figure(splits, title, log_y and tag == KERAS_EPOCH_LOSS)
                column.plotly_chart(figure, width="stretch", key=f"chart-{tag}")


def render_system(run_path: Path, was_active: bool) -> None:
    """The System tab: who holds the others back, warnings, and each worker's system charts."""
    run = current_run(run_path, was_active)
    if run is None:
        return
    workers = snapshot_of(run).workers
    hosts = {h.index: h.name for h in (run.cluster.hosts if run.cluster else ())}
    hosts.update({i: w.host for i, w in run.workers.items() if i not in hosts and w.host})
    phases = {i: w.phase for i, w in run.workers.items()}
    training = [i for i, phase in phases.items() if phase == "training"]
    straggler = system.find_straggler(workers, training if run.active else None)
    if straggler is not None:
        st.warning(_escaped(straggler.message(hosts)))
    for line in system.system_warnings(workers, hosts, phases if run.active else {}):
        st.warning(_escaped(line))
    figures = system.system_figures(workers, run.started)
    if not figures:
        st.info("No system metrics yet: each worker samples them every few seconds.")
    for pair in range(0, len(figures), 2):
        for column, (tag, figure) in zip(st.columns(2), figures[pair : pair + 2], strict=False):
            column.plotly_chart(figure, width="stretch", key=f"chart-{tag}")


def _file_reader(run_dir: Path, relative: str) -> Callable[[], bytes]:
    """Reads the file when the button is clicked, checking again that it stays in the run."""

    def read() -> bytes:
        path = safe_file(run_dir, relative)
        return path.read_bytes() if path is not None else b""

    return read


def render_artifacts(run: Run) -> None:
    """The Artifacts tab: downloads (never inside a live fragment) and log tails."""
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
            column.caption(f"{label}: not there yet")
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
        st.warning(warning)
    logs = {charts.worker_label(i): worker_log_rel(i) for i in run.indices}
    logs["launcher"] = LAUNCHER_LOG
    left, right = st.columns(2)
    choice = left.selectbox("Log", list(logs), key="log-choice")
    lines = right.slider("Lines", 10, 500, 80, 10, key="log-lines")
    live = st.fragment(render_log_tail, run_every=REFRESH_SECONDS if run.active else None)
    live(run.path, logs[choice or "launcher"], lines)


def render_log_tail(run_dir: Path, relative: str, lines: int) -> None:
    path = safe_file(run_dir, relative)
    if path is None:
        st.caption(f"{relative}: nothing to show")
        return
    st.code("\n".join(tail_lines(path, lines)) or "(empty)", language=None)


def main() -> None:
    st.set_page_config(page_title="tfcluster", page_icon="📈", layout="wide")
    runs_dir = runs_dir_from(sys.argv[1:], os.environ)
    st.sidebar.title("tfcluster")
    st.sidebar.caption(f"Runs folder: `{runs_dir.resolve()}`")
    runs = load_runs(runs_dir)
    run = choose_run(runs_dir, runs)
    if run is not None:
        every = REFRESH_SECONDS if run.active else None
        st.sidebar.caption(
            f"Live: refreshing every {REFRESH_SECONDS:.0f} s."
            if every
            else "Nothing running in this run: not refreshing."
        )
        st.fragment(render_header, run_every=every)(run.path, run.active)
    tabs = st.tabs(list(TABS), default="Cluster" if run is not None else "Runs")
    with tabs[0]:
        render_runs(runs_dir, runs)
    if run is None:
        for tab in tabs[1:]:
            with tab:
                st.info("No run to show yet.")
        return
    with tabs[1]:
        st.fragment(render_cluster, run_every=every)(run.path, run.active)
    with tabs[2]:
        st.fragment(render_progress, run_every=every)(run.path, run.active)
    with tabs[3]:
        st.fragment(render_system, run_every=every)(run.path, run.active)
    with tabs[4]:
        render_artifacts(run)


main()
