"""Plotly figures built from plain data: the metric charts, the per-epoch curves, run overlays.

Pure builders (data in, ``go.Figure`` out) so that what a chart shows is tested without a
page or a browser. A chart's zoom outlives live refreshes as a :class:`Zoom` the page keeps
and applies to every drawing (Plotly's own ``uirevision`` cannot do it here, see there).

- All-reduced metrics (loss, accuracy: every worker reports the same value) are one line.
- Per-worker metrics (throughput, step time) are one line per worker up to
  ``BAND_ABOVE_WORKERS`` workers; above that a min/median/max band with the workers that
  stray from the crowd drawn and named.
- Lines are cut to ~``LINE_POINTS`` shape-keeping points before they go to the browser.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboard import text
from dashboard.events import Arrays
from dashboard.series import (
    BAND_ABOVE_WORKERS,
    LINE_POINTS,
    band,
    downsample,
    latest_per_step,
)
from runformat import (
    PROGRESS_ACCURACY,
    PROGRESS_EXAMPLES_PER_SEC,
    PROGRESS_LOSS,
    PROGRESS_STEP_TIME_MS,
)

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
class Zoom:
    """The box a user dragged on a chart: kept by the page, so it outlives live refreshes.

    Plotly's ``uirevision`` would keep its own zoom and pan, but only while the same plot is
    updated in place. Streamlit 1.67 hashes the figure into a chart's element id, so a chart
    with new points is a new element and the browser draws a new plot: a zoom or pan made
    with Plotly's tools is gone at the next refresh, with a ``key`` or without (checked in
    Chromium; streamlit/streamlit#5107). A dragged box is reported to the page instead.
    """

    x: tuple[Any, Any]
    y: tuple[float, float]


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


def worker_color(index: int) -> str:
    return WORKER_COLORS[index % len(WORKER_COLORS)]


def worker_label(index: int) -> str:
    return "chief (0)" if index == 0 else f"worker {index}"


def ema(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: an exponential moving average divided by 1 - weight**n.

    The division (debiasing) keeps the first points from being pulled towards zero.
    Non-finite values pass through untouched and do not disturb the average, as in
    TensorBoard. pandas' ``ewm(adjust=True)`` computes exactly this weighted mean.
    """
    values = np.asarray(values, dtype=np.float64)
    weight = min(max(weight, 0.0), 0.999)
    if weight == 0.0 or not len(values):
        return values.copy()
    out = values.copy()
    finite = np.isfinite(values)
    if finite.any():
        smoothed = pd.Series(values[finite]).ewm(alpha=1.0 - weight, adjust=True).mean()
        out[finite] = smoothed.to_numpy()
    return out


def scalar_frame(
    series_by_worker: Mapping[int, Mapping[str, Arrays]], tag: str, start: float | None = None
) -> pd.DataFrame:
    """One tag of every worker as rows (worker, step, wall, relative, value).

    A step seen twice (a worker restarted and redid it) keeps its latest value.
    """
    parts = []
    for index, series in sorted(series_by_worker.items()):
        arrays = series.get(tag)
        if arrays is None or not len(arrays[0]):
            continue
        steps, walls, values = latest_per_step(*arrays)
        parts.append((np.full(len(steps), index), steps, walls, values))
    if not parts:
        return pd.DataFrame(columns=["worker", "step", "wall", "relative", "value"])
    worker, steps, walls, values = (np.concatenate(column) for column in zip(*parts, strict=True))
    frame = pd.DataFrame({"worker": worker, "step": steps, "wall": walls, "value": values})
    origin = start if start is not None else float(frame["wall"].min())
    frame["relative"] = frame["wall"] - origin
    return frame


def one_line(frame: pd.DataFrame) -> pd.DataFrame:
    """An all-reduced metric's one line: the worker that logged the most points (chief first)."""
    if frame.empty:
        return frame
    counts = frame.groupby("worker").size()
    best = int(counts[counts == counts.max()].index.min())
    return frame[frame["worker"] == best]


def csv_bytes(frame: pd.DataFrame) -> bytes:
    """A chart's data as CSV: worker, step, wall time (unix s), seconds since start, value."""
    out = io.StringIO()
    columns = [c for c in ("run", "worker", "step", "wall", "relative", "value") if c in frame]
    frame.to_csv(out, columns=columns, index=False, float_format="%.8g")
    return out.getvalue().encode("utf-8")


def _x_values(part: pd.DataFrame, x_axis: str) -> np.ndarray:
    if x_axis == "wall":
        return pd.to_datetime(part["wall"], unit="s").to_numpy()
    return part["relative" if x_axis == "relative" else "step"].to_numpy()


def _hover(name: str, unit: str = "") -> str:
    suffix = f" {unit}" if unit else ""
    return f"{name}: %{{y:,.4~g}}{suffix}<extra></extra>"


def _line(
    figure: go.Figure,
    x: np.ndarray,
    raw: np.ndarray,
    smoothing: float,
    name: str,
    color: str,
    unit: str,
    showlegend: bool = True,
) -> None:
    """One line, cut to LINE_POINTS; with smoothing the raw line stays faded behind."""
    smooth = ema(raw, smoothing)
    keep = downsample(smooth, LINE_POINTS)
    if smoothing > 0:
        raw_keep = downsample(raw, LINE_POINTS)
        figure.add_trace(
            go.Scatter(
                x=x[raw_keep],
                y=raw[raw_keep],
                mode="lines",
                name=f"{name} (raw)",
                legendgroup=name,
                showlegend=False,
                hoverinfo="skip",
                opacity=0.25,
                line={"color": color, "width": 1},
            )
        )
    figure.add_trace(
        go.Scatter(
            x=x[keep],
            y=smooth[keep],
            mode="lines",
            name=name,
            legendgroup=name,
            showlegend=showlegend,
            line={"color": color, "width": 2},
            hovertemplate=_hover(name, unit),
        )
    )


def _band(figure: go.Figure, frame: pd.DataFrame, smoothing: float, unit: str) -> None:
    """Min/median/max across workers on a common step grid; outliers drawn by name."""
    lines = {
        int(str(worker)): (part["step"].to_numpy(), ema(part["value"].to_numpy(), smoothing))
        for worker, part in frame.groupby("worker", sort=True)
    }
    spread = band(lines)
    figure.add_trace(
        go.Scatter(
            x=spread.steps,
            y=spread.high,
            mode="lines",
            line={"width": 0, "color": "#1f77b4"},
            name="max",
            legendgroup="band",
            showlegend=False,
            hovertemplate=_hover("max", unit),
        )
    )
    figure.add_trace(
        go.Scatter(
            x=spread.steps,
            y=spread.low,
            mode="lines",
            line={"width": 0, "color": "#1f77b4"},
            fill="tonexty",
            fillcolor="rgba(31,119,180,0.2)",
            name=f"min-max of {spread.workers} workers",
            legendgroup="band",
            hovertemplate=_hover("min", unit),
        )
    )
    figure.add_trace(
        go.Scatter(
            x=spread.steps,
            y=spread.median,
            mode="lines",
            line={"width": 2, "color": "#1f77b4"},
            name="median",
            hovertemplate=_hover("median", unit),
        )
    )
    for outlier in spread.outliers:
        steps, values = lines[outlier]
        keep = downsample(values, LINE_POINTS)
        name = f"{worker_label(outlier)} (outlier)"
        figure.add_trace(
            go.Scatter(
                x=steps[keep],
                y=values[keep],
                mode="lines",
                name=name,
                line={"width": 1.5, "color": "#d62728", "dash": "dot"},
                hovertemplate=_hover(name, unit),
                meta={"outlier": outlier},
            )
        )


def _axes(
    figure: go.Figure,
    x_title: str,
    y_title: str,
    log_y: bool,
    revision: str,
    zoom: Zoom | None = None,
) -> None:
    figure.update_layout(
        height=330,
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        legend=LEGEND,
        hovermode="x unified",
        uirevision=revision,
        xaxis={"title": x_title, "hoverformat": ",d" if x_title == "Step" else ""},
        yaxis={"title": y_title, "type": "log" if log_y else "linear"},
    )
    if zoom is not None:
        figure.update_xaxes(range=list(zoom.x), autorange=False)
        low, high = zoom.y
        if high <= low:  # a flat drag zooms the steps only
            return
        if not log_y:
            figure.update_yaxes(range=[low, high], autorange=False)
        elif low > 0:  # a log axis takes its range in powers of ten
            figure.update_yaxes(range=[math.log10(low), math.log10(high)], autorange=False)


def metric_figure(
    frame: pd.DataFrame,
    metric: Metric,
    x_axis: str = "step",
    smoothing: float = 0.6,
    log_y: bool = False,
    revision: str = "",
    zoom: Zoom | None = None,
) -> go.Figure:
    """One metric of every worker: one line, one per worker, or a band (see module doc)."""
    figure = go.Figure()
    workers = frame["worker"].nunique() if not frame.empty else 0
    x_title = X_AXES.get(x_axis, "Step")
    if metric.all_reduced:
        part = one_line(frame)
        if not part.empty:
            name = "all workers" if workers > 1 else worker_label(int(part["worker"].iloc[0]))
            x = _x_values(part, x_axis)
            raw = part["value"].to_numpy()
            _line(figure, x, raw, smoothing, name, "#1f77b4", metric.unit, showlegend=False)
    elif workers > BAND_ABOVE_WORKERS:
        x_title = "Step"
        _band(figure, frame, smoothing, metric.unit)
    else:
        for worker, part in frame.groupby("worker", sort=True):
            index = int(str(worker))
            x = _x_values(part, x_axis)
            raw = part["value"].to_numpy()
            _line(figure, x, raw, smoothing, worker_label(index), worker_color(index), metric.unit)
    y_title = f"{metric.title} ({metric.unit})" if metric.unit else metric.title
    _axes(figure, x_title, y_title, log_y, revision or f"{metric.tag}/{x_axis}", zoom)
    figure.update_layout(meta={"tag": metric.tag, "workers": workers})
    return figure


def line_figure(
    frame: pd.DataFrame,
    title: str,
    x_axis: str = "step",
    smoothing: float = 0.6,
    log_y: bool = False,
) -> go.Figure:
    """A per-worker chart with its title inside the figure (the System tab's charts).

    The legend goes to the right of the plot there, clear of the title and the axis titles.
    """
    metric = Metric(tag=title, title=title, all_reduced=False)
    figure = metric_figure(frame, metric, x_axis, smoothing, log_y, f"line/{title}/{x_axis}")
    figure.update_layout(
        title={"text": title, "x": 0.01, "font": {"size": 15}},
        margin={"t": 40},
        legend={"orientation": "v", "x": 1.02, "xanchor": "left", "y": 1, "yanchor": "top"},
        yaxis_title=None,
    )
    return figure


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


def epoch_figure(
    splits: Mapping[str, Arrays], title: str, log_y: bool = False, revision: str = ""
) -> go.Figure:
    """The chief's per-epoch curves (Keras' train and validation), epochs numbered from 1."""
    figure = go.Figure()
    colors = {"train": "#1f77b4", "validation": "#ff7f0e"}
    last = 0
    for split, (steps, _, values) in splits.items():
        if not len(steps):
            continue
        order = np.argsort(steps, kind="stable")
        x = steps[order] + 1
        last = max(last, int(x[-1]))
        figure.add_trace(
            go.Scatter(
                x=x,
                y=values[order],
                mode="lines+markers" if len(x) <= 50 else "lines",
                name=split,
                line={"color": colors.get(split, "#7f7f7f"), "width": 2},
                hovertemplate=_hover(split),
            )
        )
    _axes(figure, "Epoch", title, log_y, revision or f"epoch/{title}")
    figure.update_xaxes(tickmode="array", tickvals=epoch_ticks(last), hoverformat="d")
    return figure


def overlay_figure(
    frames: Mapping[str, pd.DataFrame],
    metric: Metric,
    x_axis: str = "step",
    smoothing: float = 0.6,
    log_y: bool = False,
) -> go.Figure:
    """One metric of several runs, one line per run (the all-reduced line, or the median)."""
    figure = go.Figure()
    for position, (run_id, frame) in enumerate(frames.items()):
        if frame.empty:
            continue
        if metric.all_reduced:
            part = one_line(frame)
        else:
            part = frame.groupby("step", as_index=False).agg(
                value=("value", "median"), wall=("wall", "min"), relative=("relative", "min")
            )
        x = _x_values(part, x_axis)
        _line(
            figure,
            x,
            part["value"].to_numpy(),
            smoothing,
            text.svg(run_id),
            WORKER_COLORS[position % len(WORKER_COLORS)],
            metric.unit,
        )
    y_title = f"{metric.title} ({metric.unit})" if metric.unit else metric.title
    _axes(figure, X_AXES.get(x_axis, "Step"), y_title, log_y, f"compare/{metric.tag}/{x_axis}")
    figure.update_layout(meta={"tag": metric.tag, "runs": list(frames)})
    return figure
