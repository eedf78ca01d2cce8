"""Chart builders without Streamlit: smoothing, one line or one per worker or a band, epoch
ticks, CSV, run overlays, and the cluster picture's layout (no two texts overlap)."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from dashboard.charts import (
    METRICS,
    Metric,
    epoch_charts,
    epoch_figure,
    epoch_ticks,
    metric_figure,
    overlay_figure,
)
from dashboard.cluster import WorkerRow
from dashboard.clusterview import STATE_COLORS, Label, cluster_figure, layout
from dashboard.events import Arrays
from dashboard.lines import csv_bytes, ema, scalar_frame
from dashboard.live import Snapshot
from dashboard.series import LINE_POINTS, SeriesCache

LOSS, ACCURACY, THROUGHPUT, STEP_TIME = METRICS


def tensorboard_smoothing(values: list[float], weight: float) -> list[float]:
    """TensorBoard's own algorithm (its scalars dashboard), step by step."""
    last = 0.0
    count = 0
    out = []
    for value in values:
        if not math.isfinite(value):
            out.append(value)
            continue
        last = last * weight + (1 - weight) * value
        count += 1
        debias = 1.0 if weight == 1.0 else 1.0 - weight**count
        out.append(last / debias)
    return out


@pytest.mark.parametrize("weight", [0.0, 0.3, 0.6, 0.9, 0.99])
@pytest.mark.parametrize(
    "values",
    [
        [1.0],
        [2.3, 1.9, 1.7, 1.2, 1.1, 0.9, 0.95, 0.7],
        [5.0, float("nan"), 4.0, float("inf"), 3.0],
        list(np.random.default_rng(0).normal(size=500)),
    ],
    ids=["one", "falling", "non-finite", "noise"],
)
def test_smoothing_matches_tensorboard(values: list[float], weight: float) -> None:
    expected = tensorboard_smoothing(values, weight)
    np.testing.assert_allclose(ema(np.array(values), weight), expected, rtol=1e-9)


START = 1000.0


def series_for(workers: int, points: int, spread: float = 1.0) -> dict[int, dict[str, Arrays]]:
    """Each worker's points, the same under every progress tag and under "t"."""
    out = {}
    for index in range(workers):
        arrays = (
            np.arange(points),
            START + np.arange(points, dtype=float),
            np.linspace(2.0, 0.1, points) + spread * index,
        )
        out[index] = {tag: arrays for tag in ["t", *(m.tag for m in METRICS)]}
    return out


def frame_for(workers: int, points: int, spread: float = 1.0) -> pd.DataFrame:
    return scalar_frame(series_for(workers, points, spread), "t", start=START)


def source(
    series: dict[int, dict[str, Arrays]], cache: SeriesCache | None = None, name: str = "run"
) -> Snapshot:
    """A run's snapshot of these series (with this cache: a fresh one builds everything)."""
    return Snapshot(name=name, workers=series, lines=cache if cache is not None else SeriesCache())


def figure_of(
    series: dict[int, dict[str, Arrays]],
    metric: Metric,
    cache: SeriesCache | None = None,
    name: str = "run",
    **settings: Any,
) -> go.Figure:
    figure = metric_figure(source(series, cache, name), metric, START, **settings)
    assert figure is not None
    return figure


def legend_names(figure: go.Figure) -> list[str]:
    return [trace.name for trace in figure.data if trace.showlegend is not False]


def test_all_reduced_metric_is_one_line_without_a_legend() -> None:
    figure = figure_of(series_for(3, 50, spread=0.0), LOSS, smoothing=0.6)
    assert legend_names(figure) == []
    lines = [trace for trace in figure.data if trace.hoverinfo != "skip"]
    assert [trace.name for trace in lines] == ["all workers"]
    assert figure.layout.meta["workers"] == 3


@pytest.mark.parametrize("workers", [1, 3, 8])
def test_per_worker_metric_has_one_line_per_worker_up_to_eight(workers: int) -> None:
    figure = figure_of(series_for(workers, 50), THROUGHPUT, smoothing=0.6)
    names = legend_names(figure)
    assert names == ["chief (0)"] + [f"worker {i}" for i in range(1, workers)]
    raw = [trace for trace in figure.data if trace.showlegend is False]
    assert len(raw) == workers
    assert all(trace.opacity == 0.25 for trace in raw)


def test_many_workers_are_a_band_with_the_outlier_named() -> None:
    series = series_for(16, 200, spread=0.0)
    steps, walls, values = series[11][STEP_TIME.tag]
    series[11] = {STEP_TIME.tag: (steps, walls, values * 3)}
    figure = figure_of(series, STEP_TIME, smoothing=0.0)
    assert legend_names(figure) == ["min-max of 16 workers", "median", "worker 11 (outlier)"]
    assert all(len(trace.x) <= LINE_POINTS for trace in figure.data)


def test_zoom_survives_refreshes_and_log_scale_is_per_chart() -> None:
    """Plotly keeps the user's zoom and pan while uirevision stays: the same across
    refreshes with new points; the y axis starts afresh when its scale changes."""
    first = figure_of(series_for(2, 50), LOSS)
    later = figure_of(series_for(2, 80), LOSS)
    logged = figure_of(series_for(2, 80), LOSS, log_y=True)
    assert first.layout.uirevision == later.layout.uirevision == logged.layout.uirevision
    assert first.layout.uirevision == f"run/{LOSS.tag}/step"
    assert figure_of(series_for(2, 80), LOSS, name="other").layout.uirevision != (
        first.layout.uirevision
    ), "another run's chart starts afresh"
    assert first.layout.yaxis.uirevision == later.layout.yaxis.uirevision
    assert logged.layout.yaxis.uirevision != first.layout.yaxis.uirevision
    assert first.layout.yaxis.type == "linear"
    assert logged.layout.yaxis.type == "log"
    assert first.layout.xaxis.range is None and first.layout.yaxis.range is None


def test_legend_sits_above_the_plot_and_tooltips_are_rounded() -> None:
    figure = figure_of(series_for(2, 50), THROUGHPUT)
    assert figure.layout.legend.y >= 1 and figure.layout.legend.yanchor == "bottom"
    assert figure.layout.xaxis.title.text == "Step"
    assert figure.layout.yaxis.title.text == "Throughput (examples/s)"
    shown = [trace for trace in figure.data if trace.hoverinfo != "skip"]
    assert all("%{y:,.4~g}" in trace.hovertemplate for trace in shown)


def test_no_smoothing_draws_only_the_raw_lines() -> None:
    figure = figure_of(series_for(2, 10), THROUGHPUT, smoothing=0.0)
    assert len(figure.data) == 2
    np.testing.assert_allclose(figure.data[0].y, np.linspace(2.0, 0.1, 10))


@pytest.mark.parametrize(
    ("x_axis", "first_x"),
    [("step", 0), ("relative", 0.0), ("wall", pd.Timestamp(1000, unit="s"))],
)
def test_x_axis_by_step_or_time(x_axis: str, first_x: object) -> None:
    figure = figure_of(series_for(1, 5), LOSS, x_axis=x_axis)
    assert figure.data[-1].x[0] == first_x


def test_long_series_keep_their_shape_and_last_point() -> None:
    series = series_for(1, 20_000)
    series[0][THROUGHPUT.tag][2][12_345] = 50.0
    figure = figure_of(series, THROUGHPUT, smoothing=0.0)
    assert len(figure.data[-1].x) <= LINE_POINTS
    assert figure.data[-1].x[-1] == 19_999
    assert max(figure.data[-1].y) == 50.0


def test_redone_steps_keep_the_latest_value() -> None:
    series = {0: {"t": (np.array([0, 1, 2, 1, 2, 3]), np.arange(6.0), np.arange(6.0))}}
    frame = scalar_frame(series, "t")
    assert frame["step"].tolist() == [0, 1, 2, 3]
    assert frame["value"].tolist() == [0.0, 3.0, 4.0, 5.0]
    assert scalar_frame({}, "t").empty


@pytest.mark.parametrize(
    ("workers", "metric", "x_axis", "redone"),
    [
        (3, LOSS, "relative", 2),  # one line: the worker with the most points, now worker 2
        (3, THROUGHPUT, "wall", 2),  # a line per worker: its count and its line
        (16, STEP_TIME, "step", 2),  # a band: its count and its row of the band
    ],
)
def test_a_redraw_redoes_only_the_changed_worker_to_the_same_figure(
    workers: int, metric: Metric, x_axis: str, redone: int
) -> None:
    series = series_for(workers, 1500, spread=0.1)
    steps, walls, values = series_for(3, 1501, spread=0.1)[2][metric.tag]
    series[2] = {metric.tag: (steps[:1200], walls[:1200], values[:1200])}  # it lags behind
    cache = SeriesCache()
    settings: dict[str, Any] = {"x_axis": x_axis, "smoothing": 0.6, "log_y": True}

    cached = figure_of(series, metric, cache=cache, **settings)
    assert cached.to_json() == figure_of(series, metric, **settings).to_json()
    built = cache.misses
    again = figure_of(series, metric, cache=cache, **settings)
    assert cache.misses == built and cache.hits >= built  # nothing changed: all hits
    assert again.to_json() == cached.to_json()

    series[2] = {metric.tag: (steps, walls, values)}  # it catches up and steps past the rest
    later = figure_of(series, metric, cache=cache, **settings)
    assert cache.misses + cache.extended == built + redone
    assert later.to_json() == figure_of(series, metric, **settings).to_json()
    assert later.to_json() != cached.to_json()
    # Other settings reuse what does not depend on them: a new x axis redoes nothing.
    other = "step" if x_axis != "step" else "relative"
    figure_of(series, metric, cache=cache, **{**settings, "x_axis": other})
    assert cache.misses + cache.extended == built + redone


def test_csv_of_a_chart_has_every_point() -> None:
    data = pd.read_csv(io.BytesIO(csv_bytes(frame_for(2, 30))))
    assert list(data.columns) == ["worker", "step", "wall", "relative", "value"]
    assert len(data) == 60
    assert data["value"].iloc[0] == pytest.approx(2.0)


@pytest.mark.parametrize("last", [1, 3, 12, 100, 1000, 4321])
def test_epoch_ticks_are_whole_and_few(last: int) -> None:
    ticks = epoch_ticks(last)
    assert ticks[0] == 1 and ticks[-1] <= last and len(ticks) <= 11
    assert ticks == sorted(set(ticks))


def test_epoch_curves_are_numbered_from_one() -> None:
    splits = {
        "train": (np.array([0, 1, 2]), np.zeros(3), np.array([1.0, 0.5, 0.3])),
        "validation": (np.array([0, 1, 2]), np.zeros(3), np.array([1.1, 0.6, 0.4])),
    }
    chief = {split: {"epoch_loss": arrays} for split, arrays in splits.items()}
    figure = epoch_figure(Snapshot(chief=chief), "epoch_loss", "Loss per epoch")
    assert figure is not None
    assert [trace.name for trace in figure.data] == ["train", "validation"]
    assert list(figure.data[0].x) == [1, 2, 3]
    assert list(figure.layout.xaxis.tickvals) == [1, 2, 3]


def test_every_per_epoch_metric_of_the_chiefs_keras_logs_is_a_chart() -> None:
    """A program's own metrics and schedule (epoch_auc, epoch_learning_rate) after loss and
    accuracy; batch-level and other scalars are not per-epoch curves."""
    arrays = (np.array([0, 1]), np.zeros(2), np.array([0.5, 0.7]))
    chief = {
        "train": {"epoch_loss": arrays, "epoch_learning_rate": arrays, "batch_loss": arrays},
        "validation": {"epoch_auc": arrays, "evaluation_auc_vs_iterations": arrays},
        "other": {"epoch_<b>": arrays},
    }
    charts = epoch_charts(chief)
    assert [tag for tag, _ in charts] == [
        "epoch_loss", "epoch_accuracy", "epoch_<b>", "epoch_auc", "epoch_learning_rate"
    ]  # fmt: skip
    assert charts[2][1] == "&lt;b&gt; per epoch" and charts[3][1] == "auc per epoch"
    assert len(epoch_charts(chief, most=1)) == 3
    figure = epoch_figure(Snapshot(chief=chief), "epoch_auc", charts[3][1])
    assert figure is not None and [trace.name for trace in figure.data] == ["validation"]


def test_overlay_has_one_line_per_run_with_plain_names_kept_until_a_run_changes() -> None:
    finished, live = SeriesCache(), SeriesCache()
    done = (source(series_for(2, 20), finished, "20261128-100000-aaaa"), START)
    runs = [done, (source(series_for(16, 20), live, "<b>x</b>"), START)]
    figure = overlay_figure(runs, THROUGHPUT, smoothing=0.0)
    assert figure is not None
    assert legend_names(figure) == ["20261128-100000-aaaa", "&lt;b&gt;x&lt;/b&gt;"]
    median = figure.data[1].y  # the median of 16 workers 0.0, 1.0, ... 15.0 above the line
    np.testing.assert_allclose(median, np.linspace(2.0, 0.1, 20) + 7.5)
    built = finished.misses
    live_series = series_for(16, 21)
    later = [done, (source(live_series, live, "<b>x</b>"), START)]
    overlay_figure(later, THROUGHPUT, smoothing=0.0)
    assert finished.misses == built  # the finished run's line was kept
    assert overlay_figure([(source({}), None)], THROUGHPUT) is None


def row(
    index: int, state: str, stalled: bool = False, host: str = "", cause: bool = False
) -> WorkerRow:
    return WorkerRow(
        index=index,
        role="chief" if index == 0 else "worker",
        host=host or f"h{index}",
        address=f"h{index}:23456",
        state=state,
        epoch=1,
        epochs=3,
        step=10,
        steps_total=30,
        examples_per_sec=None,
        since_update=1.0,
        lag=0,
        stalled=stalled,
        interval=0.5,
        cause=cause,
    )


def overlapping(labels: list[Label], height: float) -> list[tuple[str, str]]:
    boxes = [
        (label.text, label.x, label.y - height / 2, label.x + label.width, label.y + height / 2)
        for label in labels
    ]
    return [
        (a[0], b[0])
        for i, a in enumerate(boxes)
        for b in boxes[i + 1 :]
        if a[1] < b[3] and b[1] < a[3] and a[2] < b[4] and b[2] < a[4]
    ]


@pytest.mark.parametrize("workers", [1, 2, 8, 16, 64, 1024])
@pytest.mark.parametrize("per_host", [1, 4, 64])
def test_cluster_layout_never_overlaps(workers: int, per_host: int) -> None:
    rows = [
        row(i, "running", host=f"gpu-node-{i // per_host}-with-a-long-name.example.org")
        for i in range(workers)
    ]
    placed = layout(rows)
    assert overlapping(list(placed.labels), 14) == []
    side = 40 if workers <= 16 else 26
    tiles = [(t.x, t.y) for t in placed.tiles]
    for i, (x, y) in enumerate(tiles):
        for x2, y2 in tiles[i + 1 :]:
            assert abs(x - x2) >= side or abs(y - y2) >= side
    assert all(label.x + label.width <= placed.width for label in placed.labels)
    if workers == 2:
        assert placed.height < 120, "two workers take little room"


def test_cluster_groups_workers_by_host() -> None:
    rows = [row(i, "running", host=["a", "b"][i % 2]) for i in range(6)]
    placed = layout(rows)
    assert [label.text for label in placed.hosts] == ["a (3)", "b (3)"]
    by_host = [tile.row.index for tile in placed.tiles]
    assert by_host == [0, 2, 4, 1, 3, 5]


def test_cluster_picture_colours_each_worker_by_state() -> None:
    rows = [
        row(0, "aborted"),
        row(1, "failed", cause=True),
        row(2, "running", stalled=True),
        row(3, "finished"),
    ]
    figure = cluster_figure(rows)
    states = {
        trace.meta["state"]: (trace.meta["workers"], trace.marker.color)
        for trace in figure.data
        if trace.meta
    }
    assert states == {
        "aborted": ([0], STATE_COLORS["aborted"]),
        "failed": ([1], STATE_COLORS["failed"]),
        "stalled": ([2], STATE_COLORS["stalled"]),
        "finished": ([3], STATE_COLORS["finished"]),
    }
    failed = next(t for t in figure.data if t.meta and t.meta["state"] == "failed")
    assert list(failed.marker.line.width) == [3]
    key = next(t for t in figure.data if not t.meta and t.marker.color is not None)
    assert "failed (cause)" in key.text and "aborted after it" in key.text


def test_cluster_picture_shows_hostile_strings_as_text() -> None:
    hostile = '<a href="https://evil.example">click</a>'
    bad = WorkerRow(**{**row(0, "failed").__dict__, "host": hostile, "error": "<script>x</script>"})
    figure = cluster_figure([bad])
    shown = " ".join(
        str(part)
        for trace in figure.data
        for part in [*(trace.text or []), *(trace.hovertext or [])]
    )
    assert "<a" not in shown and "<script" not in shown
    assert "&lt;a href=" in shown
