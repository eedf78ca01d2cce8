"""The Progress tab: a bar per worker, then one chart per metric (zoom, smoothing, log axis)
and the chief's per-epoch curves; every chart's data as CSV."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import plotly.graph_objects as go
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from dashboard import charts, lines, printed, refresh, text
from dashboard.cluster import WorkerRow, run_eta, run_rows, slowest_epoch
from dashboard.live import Snapshot
from dashboard.livechart import live_chart
from dashboard.runs import Run
from runformat import PROGRESS_LOSS

# Up to this many workers each gets its own progress bar; above, one bar for the run.
BARS_UP_TO = 8
# A program's own scalars: at most this many charts (the first names in order).
OWN_CHARTS = 24
FILE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def render(run: Run) -> None:
    refresh.live(render_charts, run, "charts")
    render_csv(run)


def render_charts(run: Run) -> None:
    snapshot = refresh.snapshot_of(run)
    seen = refresh.printed_of(run)
    rows = run_rows(run, snapshot.workers, time.time())
    render_bars(rows)
    if seen is not None:
        render_printed(run, seen, rows)
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
            figure = metric_chart(run, snapshot, metric, x_axis or "step", smoothing, log_y)
            note = " · the same on every worker" if metric.all_reduced else ""
            if figure is None and seen is not None and printed.has_line(seen, metric.tag):
                figure = metric_chart(run, seen, metric, x_axis or "step", smoothing, log_y)
                note = " · as printed, sampled by this page"
            if figure is None:
                continue
            with column:
                title, toggle = st.columns([4, 1])
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
    elif not snapshot.own_names and seen is None:
        st.info("No progress points yet: the workers write them every few steps.")
    render_epochs(run, snapshot)
    render_own(run, snapshot, x_axis or "step", smoothing)


def render_printed(run: Run, seen: Snapshot, rows: list[WorkerRow]) -> None:
    """A script without ClusterProgress: the newest values its Keras progress bar printed,
    and what they come from (dashboard.printed)."""
    who = text.code(run.program.script) if run.program.script else "The program"
    newest = printed.latest(run)
    if newest is None:
        st.info(
            f"{who} writes no progress events and has printed no Keras progress bar yet "
            "(`fit` prints one with verbose=1 or 2): the charts below are its own scalars, "
            "if any. `ClusterProgress` in its fit gives step-level charts."
        )
        return
    figures = (
        ("Loss (printed)", text.number(newest.loss, 4)),
        ("Accuracy (printed)", text.number(newest.accuracy, 4)),
        ("Step", text.of_total(newest.step, newest.steps_total)),
        ("ETA (estimated)", text.duration(run_eta(run, seen.workers, rows))),
    )
    for column, (label, value) in zip(st.columns(len(figures)), figures, strict=True):
        column.metric(label, value)
    said = run.local_time(newest.index, newest.updated)
    ago = text.ago(time.time() - said if said is not None else None)
    lines = (
        "the lines are the samples this page saw (every few seconds while it is open)"
        if printed.has_line(seen, PROGRESS_LOSS)
        else "lines of loss and accuracy appear as this page sees them change"
    )
    st.caption(
        f"{who} writes no progress events: these are what its Keras progress bar printed last"
        f" ({charts.worker_label(newest.index)}, {ago}), read from its output into"
        f" status.json. The ETA is estimated from the printed steps over time, and {lines}."
        " `ClusterProgress` in its fit gives step-level charts, throughput and step time."
    )


def render_own(run: Run, snapshot: Snapshot, x_axis: str, smoothing: float) -> None:
    """What the program logged itself (tf.summary, Keras' TensorBoard callback), anywhere
    under its workers' folders, under its own names."""
    metrics = [charts.own_metric(name) for name in snapshot.own_names]
    if not metrics:
        return
    who = text.code(run.program.script) if run.program.script else "The program"
    st.markdown(f"**{who}'s own scalars** (its event files under each worker's folder)")
    if len(metrics) > OWN_CHARTS:
        st.caption(f"The first {OWN_CHARTS} of {len(metrics)} names; every one is in the CSV.")
    source = snapshot.own_source()
    for pair in range(0, min(len(metrics), OWN_CHARTS), 2):
        for column, metric in zip(st.columns(2), metrics[pair : pair + 2], strict=False):
            key = f"log-own-{metric.tag}"
            figure = metric_chart(
                run, source, metric, x_axis, smoothing, bool(st.session_state.get(key, False))
            )
            if figure is None:
                continue
            with column:
                title, toggle = st.columns([4, 1])
                title.markdown(f"**{text.md(metric.title, 120)}**")
                toggle.toggle("Log", key=key)
                live_chart(figure, key=f"chart-{run.run_id}-own-{metric.tag}")


def metric_chart(
    run: Run, snapshot: Snapshot, metric: charts.Metric, x_axis: str, smoothing: float, log_y: bool
) -> go.Figure | None:
    """A metric's figure, built once per snapshot and settings, shared by every viewer."""
    return snapshot.memo(
        ("chart", metric, x_axis, smoothing, log_y, run.started),
        lambda: charts.metric_figure(snapshot, metric, run.started, x_axis, smoothing, log_y),
    )


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


def render_epochs(run: Run, snapshot: Snapshot) -> None:
    """The chief's Keras logs, per epoch (train and validation): loss, accuracy and every
    other metric it logged."""
    figures = [
        (tag, figure)
        for tag, title in charts.epoch_charts(snapshot.chief, OWN_CHARTS)
        if (figure := charts.epoch_figure(snapshot, tag, title)) is not None
    ]
    if not figures:
        return
    st.markdown("**Chief, per epoch** (Keras train and validation)")
    for pair in range(0, len(figures), 2):
        for column, (tag, figure) in zip(st.columns(2), figures[pair : pair + 2], strict=False):
            with column:
                live_chart(figure, key=f"chart-{run.run_id}-{tag}")


def render_csv(run: Run) -> None:
    """Every chart's data as CSV (outside the live part: downloads must not be refreshed)."""
    metrics: tuple[charts.Metric, ...] = charts.METRICS
    if refresh.printed_of(run) is not None:  # Keras prints no throughput nor step time
        metrics = tuple(metric for metric in metrics if metric.tag in printed.PRINTED_TAGS)
    for column, metric in zip(st.columns(len(charts.METRICS)), metrics, strict=False):
        csv_button(column, run, metric, own=False)
    own = [charts.own_metric(name) for name in refresh.snapshot_of(run).own_names]
    if own:
        with st.expander(f"CSV of the program's own scalars ({len(own)})"):
            quarters = st.columns(4)
            for position, metric in enumerate(own):
                csv_button(quarters[position % 4], run, metric, own=True)


def csv_button(column: DeltaGenerator, run: Run, metric: charts.Metric, own: bool) -> None:
    name = FILE_NAME.sub("_", metric.tag.split("/")[-1] if not own else metric.tag).strip("_")
    column.download_button(
        f"⬇ {text.clip(metric.title, 60)} CSV",
        data=csv_reader(run, metric.tag, own),
        file_name=f"{run.run_id}-{name}.csv",
        mime="text/csv",
        on_click="ignore",
        key=f"csv-{'own-' if own else ''}{metric.tag}",
    )


def csv_reader(run: Run, tag: str, own: bool = False) -> Callable[[], bytes]:
    """Builds the CSV when the button is clicked, from what has been read by then."""

    def read() -> bytes:
        snapshot = refresh.snapshot_of(run)
        workers = snapshot.own if own else snapshot.workers
        seen = None if own else refresh.printed_of(run)
        if seen is not None:  # what its program printed, as the page saw it
            workers = seen.workers
        return lines.csv_bytes(lines.scalar_frame(workers, tag, run.started))

    return read
