"""Plotly figures built from plain data: the metric charts, the per-epoch curves, run overlays.

Pure builders (data in, ``go.Figure`` out) so that what a chart shows is tested without a
page or a browser. Each figure carries its ``uirevision`` (per run, metric and x axis; the y
axis also per scale): drawn in place by :mod:`dashboard.livechart`, a chart keeps the user's
zoom and pan across live refreshes for as long as it stays the same.

- All-reduced metrics (loss, accuracy: every worker reports the same value) are one line.
- Per-worker metrics (throughput, step time) are one line per worker up to
  ``BAND_ABOVE_WORKERS`` workers; above that a min/median/max band with the workers that
  stray from the crowd drawn and named.
- Lines are cut to ~``LINE_POINTS`` shape-keeping points before they go to the browser.

Charts are drawn from a :class:`dashboard.lines.Source` (a run's snapshot): its workers'
series, its name (in each figure's ``uirevision``) and the run's cache of what a chart
derives per worker (dashboard.lines), so a redraw processes only the workers whose points
changed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import plotly.graph_objects as go

from dashboard import text
from dashboard.bands import BAND_ABOVE_WORKERS, Grid, band_of_rows
from dashboard.events import Arrays
from dashboard.lines import (
    Extent,
    Line,
    Source,
    WorkerLines,
    line_of,
    scalar_frame,
    worker_lines,
)
from runformat import (
    KERAS_EPOCH_ACCURACY,
    KERAS_EPOCH_LOSS,
    PROGRESS_ACCURACY,
    PROGRESS_EXAMPLES_PER_SEC,
    PROGRESS_LOSS,
    PROGRESS_STEP_TIME_MS,
)

if TYPE_CHECKING:
    pass

X_AXES = {"step": "Step", "relative": "Time since start (s)", "wall": "Wall time"}
WORKER_COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
# Legend above the plot area: Plotly grows the top margin to fit it, so it never lands on
# the axes or their titles however many entries wrap onto extra lines.
LEGEND = {"orientation": "h", "x": 0, "xanchor": "left", "y": 1.02, "yanchor": "bottom"}


@dataclass(frozen=True)
class Metric:
    """One chart: which tag, how it is titled, and whether every worker reports the same."""

    tag: str
    title: str
    all_reduced: bool
    unit: str = ""


METRICS = (
    Metric(PROGRESS_LOSS, "Loss", all_reduced=True),
    Metric(PROGRESS_ACCURACY, "Accuracy", all_reduced=True),
    Metric(PROGRESS_EXAMPLES_PER_SEC, "Throughput", all_reduced=False, unit="examples/s"),
    Metric(PROGRESS_STEP_TIME_MS, "Step time", all_reduced=False, unit="ms"),
)


def own_metric(name: str) -> Metric:
    """A chart of a scalar the program logged itself: a line per worker that wrote it."""
    return Metric(name, name, all_reduced=False)


def worker_color(index: int) -> str:
    return WORKER_COLORS[index % len(WORKER_COLORS)]


def worker_label(index: int) -> str:
    return "chief (0)" if index == 0 else f"worker {index}"


def _x(steps: np.ndarray, walls: np.ndarray, x_axis: str, origin: float) -> np.ndarray:
    """A line's x values: its steps, seconds since `origin`, or wall times."""
    if x_axis == "wall":
        import pandas as pd  # lazily (see scalar_frame)

        return pd.to_datetime(walls, unit="s").to_numpy()
    return walls - origin if x_axis == "relative" else steps


def _hover(name: str, unit: str = "") -> str:
    suffix = f" {unit}" if unit else ""
    return f"{name}: %{{y:,.4~g}}{suffix}<extra></extra>"


Trace = dict[str, Any]


def _most_points(extents: Mapping[int, Extent]) -> int:
    """An all-reduced metric's one line: the worker that logged the most points (chief first)."""
    most = max(e.points for e in extents.values())
    return min(index for index, e in extents.items() if e.points == most)


def _line(
    traces: list[Trace],
    line: Line,
    x_axis: str,
    origin: float,
    name: str,
    color: str,
    unit: str,
    showlegend: bool = True,
) -> None:
    """One line; with smoothing the raw line stays faded behind."""
    if line.raw is not None:
        steps, walls, values = line.raw
        traces.append(
            {
                "type": "scatter",
                "x": _x(steps, walls, x_axis, origin),
                "y": values,
                "mode": "lines",
                "name": f"{name} (raw)",
                "legendgroup": name,
                "showlegend": False,
                "hoverinfo": "skip",
                "opacity": 0.25,
                "line": {"color": color, "width": 1},
            }
        )
    traces.append(
        {
            "type": "scatter",
            "x": _x(line.steps, line.walls, x_axis, origin),
            "y": line.values,
            "mode": "lines",
            "name": name,
            "legendgroup": name,
            "showlegend": showlegend,
            "line": {"color": color, "width": 2},
            "hovertemplate": _hover(name, unit),
        }
    )


def _band(traces: list[Trace], lines: WorkerLines, smoothing: float, unit: str) -> None:
    """Min/median/max across workers on a common step grid; outliers drawn by name."""
    extents = [lines.extent(index) for index in lines.arrays]
    grid = Grid.over(min(e.first_step for e in extents), max(e.last_step for e in extents))
    rows = {index: lines.row(index, smoothing, grid) for index in lines.arrays}
    spread = band_of_rows(rows, grid)
    edge = {"type": "scatter", "x": spread.steps, "mode": "lines", "legendgroup": "band"}
    traces.append(
        {
            **edge,
            "y": spread.high,
            "line": {"width": 0, "color": "#1f77b4"},
            "name": "max",
            "showlegend": False,
            "hovertemplate": _hover("max", unit),
        }
    )
    traces.append(
        {
            **edge,
            "y": spread.low,
            "line": {"width": 0, "color": "#1f77b4"},
            "fill": "tonexty",
            "fillcolor": "rgba(31,119,180,0.2)",
            "name": f"min-max of {spread.workers} workers",
            "hovertemplate": _hover("min", unit),
        }
    )
    traces.append(
        {
            "type": "scatter",
            "x": spread.steps,
            "y": spread.median,
            "mode": "lines",
            "line": {"width": 2, "color": "#1f77b4"},
            "name": "median",
            "hovertemplate": _hover("median", unit),
        }
    )
    for outlier in spread.outliers:
        line = lines.line(outlier, smoothing)
        name = f"{worker_label(outlier)} (outlier)"
        traces.append(
            {
                "type": "scatter",
                "x": line.steps,
                "y": line.values,
                "mode": "lines",
                "name": name,
                "line": {"width": 1.5, "color": "#d62728", "dash": "dot"},
                "hovertemplate": _hover(name, unit),
                "meta": {"outlier": outlier},
            }
        )


def _layout(x_title: str, y_title: str, log_y: bool, revision: str) -> dict[str, Any]:
    """A chart's layout. Figures are made in one go from their traces and this: Plotly
    checks every property on each change, so adding traces one by one costs 3x as much.
    The y axis has its own revision per scale: a log toggle rescales y, the steps stay."""
    scale = "log" if log_y else "linear"
    return {
        "height": 330,
        "margin": {"l": 10, "r": 10, "t": 10, "b": 10},
        "legend": LEGEND,
        "hovermode": "x unified",
        "uirevision": revision,
        "xaxis": {"title": x_title, "hoverformat": ",d" if x_title == "Step" else ""},
        "yaxis": {"title": y_title, "type": scale, "uirevision": f"{revision}/{scale}"},
    }


def _metric_parts(
    source: Source,
    metric: Metric,
    start: float | None,
    x_axis: str,
    smoothing: float,
    log_y: bool,
    revision: str,
) -> tuple[list[Trace], dict[str, Any]] | None:
    """metric_figure's traces and layout (None without points)."""
    lines = worker_lines(source, metric.tag)
    if not lines.arrays:
        return None
    extents = {index: lines.extent(index) for index in lines.arrays}
    origin = start if start is not None else min(e.first_wall for e in extents.values())
    count = len(extents)
    traces: list[Trace] = []
    x_title = X_AXES.get(x_axis, "Step")
    if metric.all_reduced:
        best = _most_points(extents)
        name = "all workers" if count > 1 else worker_label(best)
        line = lines.line(best, smoothing)
        _line(traces, line, x_axis, origin, name, "#1f77b4", metric.unit, showlegend=False)
    elif count > BAND_ABOVE_WORKERS:
        x_title = "Step"
        _band(traces, lines, smoothing, metric.unit)
    else:
        for index in lines.arrays:
            line = lines.line(index, smoothing)
            label, color = worker_label(index), worker_color(index)
            _line(traces, line, x_axis, origin, label, color, metric.unit)
    y_title = f"{metric.title} ({metric.unit})" if metric.unit else metric.title
    layout = _layout(x_title, y_title, log_y, revision)
    layout["meta"] = {"tag": metric.tag, "workers": count}
    return traces, layout


def metric_figure(
    source: Source,
    metric: Metric,
    start: float | None = None,
    x_axis: str = "step",
    smoothing: float = 0.6,
    log_y: bool = False,
) -> go.Figure | None:
    """One metric of every worker: one line, one per worker, or a band (see module doc).

    Time since start counts from `start` (else from the earliest point). None when no
    worker has a point of the metric yet.
    """
    revision = f"{source.name}/{metric.tag}/{x_axis}"
    parts = _metric_parts(source, metric, start, x_axis, smoothing, log_y, revision)
    return None if parts is None else go.Figure(data=parts[0], layout=parts[1])


def line_figure(
    source: Source,
    tag: str,
    title: str,
    start: float | None = None,
    x_axis: str = "step",
    smoothing: float = 0.6,
) -> go.Figure | None:
    """A per-worker chart with its title inside the figure (the System tab's charts).

    The legend goes to the right of the plot there, clear of the title and the axis titles.
    """
    metric = Metric(tag=tag, title=title, all_reduced=False)
    revision = f"{source.name}/line/{tag}/{x_axis}"
    parts = _metric_parts(source, metric, start, x_axis, smoothing, False, revision)
    if parts is None:
        return None
    traces, layout = parts
    layout["title"] = {"text": title, "x": 0.01, "font": {"size": 15}}
    layout["margin"] = {**layout["margin"], "t": 40}
    layout["legend"] = {"orientation": "v", "x": 1.02, "xanchor": "left", "y": 1, "yanchor": "top"}
    del layout["yaxis"]["title"]
    return go.Figure(data=traces, layout=layout)


def epoch_ticks(last: int, most: int = 10) -> list[int]:
    """Whole-epoch ticks from 1 to `last`, at most `most` of them, at a round spacing."""
    if last < 1:
        return []
    spacing = 1
    for candidate in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000):
        spacing = candidate
        if last / candidate <= most:
            break
    else:
        spacing = -(-last // most)
    ticks = list(range(spacing, last + 1, spacing))
    return [1, *ticks] if spacing > 1 else ticks


EPOCH_CHARTS = ((KERAS_EPOCH_LOSS, "Loss per epoch"), (KERAS_EPOCH_ACCURACY, "Accuracy per epoch"))
# Keras' TensorBoard callback names each metric's per-epoch scalar epoch_<metric>.
KERAS_EPOCH_PREFIX = KERAS_EPOCH_LOSS.split("_")[0] + "_"


def epoch_charts(
    chief: Mapping[str, Mapping[str, Arrays]], most: int = 24
) -> list[tuple[str, str]]:
    """(tag, title) of the chief's per-epoch curves: loss and accuracy, then every other
    `epoch_*` scalar a program's own metrics or schedule gave Keras (epoch_auc,
    epoch_learning_rate), by name, at most `most` of them; titles escaped for Plotly."""
    known = {tag for tag, _ in EPOCH_CHARTS}
    others = sorted(
        {tag for series in chief.values() for tag in series if tag.startswith(KERAS_EPOCH_PREFIX)}
        - known
    )
    named = [(tag, text.svg(f"{tag.removeprefix(KERAS_EPOCH_PREFIX)} per epoch")) for tag in others]
    return [*EPOCH_CHARTS, *named[:most]]


def epoch_figure(source: Source, tag: str, title: str, log_y: bool = False) -> go.Figure | None:
    """The chief's per-epoch curves of `tag` (Keras' train and validation), epochs numbered
    from 1; None when the chief has none."""
    splits = {split: series[tag] for split, series in source.chief.items() if tag in series}
    if not splits:
        return None
    traces: list[Trace] = []
    colors = {"train": "#1f77b4", "validation": "#ff7f0e"}
    last = 0
    for split, (steps, _, values) in splits.items():
        if not len(steps):
            continue
        order = np.argsort(steps, kind="stable")
        x = steps[order] + 1
        last = max(last, int(x[-1]))
        traces.append(
            {
                "type": "scatter",
                "x": x,
                "y": values[order],
                "mode": "lines+markers" if len(x) <= 50 else "lines",
                "name": split,
                "line": {"color": colors.get(split, "#7f7f7f"), "width": 2},
                "hovertemplate": _hover(split),
            }
        )
    layout = _layout("Epoch", title, log_y, f"{source.name}/{tag}")
    layout["xaxis"].update(tickmode="array", tickvals=epoch_ticks(last), hoverformat="d")
    return go.Figure(data=traces, layout=layout)


def _run_line(
    lines: WorkerLines, all_reduced: bool, start: float | None, smoothing: float
) -> tuple[Line, float]:
    """A run's one line for an overlay, and its origin of time: the all-reduced line, or
    the per-step median across its workers (kept until any of its workers changes)."""
    extents = {index: lines.extent(index) for index in lines.arrays}
    origin = start if start is not None else min(e.first_wall for e in extents.values())
    if all_reduced:
        return lines.line(_most_points(extents), smoothing), origin

    def median() -> Line:
        series = {index: {lines.tag: arrays} for index, arrays in lines.arrays.items()}
        frame = scalar_frame(series, lines.tag, start)
        part = frame.groupby("step", as_index=False).agg(
            value=("value", "median"), wall=("wall", "min")
        )
        steps, walls = part["step"].to_numpy(), part["wall"].to_numpy()
        return line_of((steps, walls, part["value"].to_numpy()), smoothing)

    every = tuple(array for arrays in lines.arrays.values() for array in arrays)
    return lines.cache.get(("median", lines.tag, smoothing), every, median), origin


def overlay_figure(
    runs: Sequence[tuple[Source, float | None]],
    metric: Metric,
    x_axis: str = "step",
    smoothing: float = 0.6,
    log_y: bool = False,
) -> go.Figure | None:
    """One metric of several runs, one line per run (the all-reduced line, or the median).

    `runs`: each run's source and its start. None when no run has a point of the metric yet.
    """
    traces: list[Trace] = []
    for position, (source, start) in enumerate(runs):
        lines = worker_lines(source, metric.tag)
        if not lines.arrays:
            continue
        line, origin = _run_line(lines, metric.all_reduced, start, smoothing)
        name, color = text.svg(source.name), WORKER_COLORS[position % len(WORKER_COLORS)]
        _line(traces, line, x_axis, origin, name, color, metric.unit)
    if not traces:
        return None
    y_title = f"{metric.title} ({metric.unit})" if metric.unit else metric.title
    x_title = X_AXES.get(x_axis, "Step")
    layout = _layout(x_title, y_title, log_y, f"compare/{metric.tag}/{x_axis}")
    layout["meta"] = {"tag": metric.tag, "runs": [source.name for source, _ in runs]}
    return go.Figure(data=traces, layout=layout)
