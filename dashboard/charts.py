"""Plotly figures built from plain data: one line per worker, smoothing, the cluster picture.

Pure builders (data in, ``go.Figure`` out) so that what a chart shows is tested without a
page or a browser.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dashboard.cluster import WorkerRow
from dashboard.events import Arrays
from dashboard.series import latest_per_step

# Points per line sent to the browser: enough for the eye, small enough to redraw live.
MAX_POINTS = 1500
X_AXES = {"step": "Step", "relative": "Time since start (s)", "wall": "Wall time"}
STATE_COLORS = {
    "starting": "#9e9e9e",
    "running": "#1f77b4",
    "finished": "#2ca02c",
    "failed": "#d62728",
    "stalled": "#ff7f0e",
    "stopped": "#8c564b",
    "unknown": "#c7c7c7",
}
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


def _thin(length: int, limit: int = MAX_POINTS) -> np.ndarray:
    """Indices of at most `limit` evenly spaced points, always keeping the last one."""
    if length <= limit:
        return np.arange(length)
    picked = np.linspace(0, length - 1, limit).round().astype(np.int64)
    return np.unique(picked)


def _x_values(part: pd.DataFrame, x_axis: str) -> pd.Series:
    if x_axis == "wall":
        return pd.to_datetime(part["wall"], unit="s")
    return part["relative" if x_axis == "relative" else "step"]


def line_figure(
    frame: pd.DataFrame,
    title: str,
    x_axis: str = "step",
    smoothing: float = 0.6,
    log_y: bool = False,
    height: int = 320,
) -> go.Figure:
    """One line per worker; with smoothing, the raw line stays faded behind the smooth one."""
    figure = go.Figure()
    for index, part in frame.groupby("worker", sort=True):
        worker = int(str(index))
        keep = _thin(len(part))
        x = _x_values(part, x_axis).to_numpy()[keep]
        raw = part["value"].to_numpy()
        color = worker_color(worker)
        label = worker_label(worker)
        if smoothing > 0:
            figure.add_trace(
                go.Scatter(
                    x=x,
                    y=raw[keep],
                    mode="lines",
                    name=f"{label} (raw)",
                    legendgroup=label,
                    showlegend=False,
                    hoverinfo="skip",
                    opacity=0.25,
                    line={"color": color, "width": 1},
                )
            )
        figure.add_trace(
            go.Scatter(
                x=x,
                y=ema(raw, smoothing)[keep],
                mode="lines",
                name=label,
                legendgroup=label,
                line={"color": color, "width": 2},
                meta={"worker": worker},
            )
        )
    figure.update_layout(
        title={"text": title, "x": 0.01, "font": {"size": 15}},
        height=height,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h", "y": -0.22, "x": 0},
        hovermode="x unified",
        xaxis_title=X_AXES.get(x_axis, "Step"),
    )
    if log_y:
        figure.update_yaxes(type="log")
    return figure


def epoch_figure(splits: Mapping[str, Arrays], title: str, log_y: bool = False) -> go.Figure:
    """The chief's per-epoch curves (Keras' train and validation), one line per split."""
    figure = go.Figure()
    colors = {"train": "#1f77b4", "validation": "#ff7f0e"}
    for split, (steps, _, values) in splits.items():
        if not len(steps):
            continue
        order = np.argsort(steps, kind="stable")
        figure.add_trace(
            go.Scatter(
                x=steps[order] + 1,
                y=values[order],
                mode="lines+markers",
                name=split,
                line={"color": colors.get(split, "#7f7f7f"), "width": 2},
            )
        )
    figure.update_layout(
        title={"text": title, "x": 0.01, "font": {"size": 15}},
        height=300,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h", "y": -0.25, "x": 0},
        xaxis={"title": "Epoch", "dtick": 1},
        hovermode="x unified",
    )
    if log_y:
        figure.update_yaxes(type="log")
    return figure


def _layout_positions(count: int) -> list[tuple[float, float]]:
    """Chief at the top of a ring (all-reduce goes round it); a row when there are few."""
    if count <= 3:
        return [(float(i), 0.0) for i in range(count)]
    return [
        (math.sin(2 * math.pi * i / count), math.cos(2 * math.pi * i / count)) for i in range(count)
    ]


def cluster_figure(rows: Sequence[WorkerRow]) -> go.Figure:
    """The cluster as a picture: one box per worker, coloured by its live state."""
    positions = _layout_positions(len(rows))
    figure = go.Figure()
    if len(rows) > 1:
        ring = [*positions, positions[0]] if len(rows) > 2 else positions
        figure.add_trace(
            go.Scatter(
                x=[p[0] for p in ring],
                y=[p[1] for p in ring],
                mode="lines",
                line={"color": "#b0b0b0", "width": 2, "dash": "dot"},
                hoverinfo="skip",
                showlegend=False,
            )
        )
    for row, (x, y) in zip(rows, positions, strict=True):
        state = row.shown_state
        color = STATE_COLORS.get(state, STATE_COLORS["unknown"])
        title = f"<b>{'chief' if row.role == 'chief' else 'worker'} {row.index}</b>"
        progress = f"step {row.step}/{row.steps_total or '?'}" if row.step is not None else ""
        text = "<br>".join(
            part for part in (title, row.host, row.address, state.upper(), progress) if part
        )
        figure.add_trace(
            go.Scatter(
                x=[x],
                y=[y],
                mode="markers+text",
                marker={
                    "size": 70 if row.role == "chief" else 56,
                    "color": color,
                    "symbol": "square" if row.role == "chief" else "circle",
                    "line": {"color": "#333333", "width": 2 if row.role == "chief" else 1},
                },
                text=[text],
                textposition="bottom center",
                hovertext=[text],
                hoverinfo="text",
                name=f"{row.role} {row.index}: {state}",
                showlegend=False,
                meta={"worker": row.index, "state": state},
            )
        )
    spread = max((abs(c) for p in positions for c in p), default=0.0)
    margin = 0.6 if len(rows) <= 3 else 0.45
    figure.update_layout(
        height=300 if len(rows) <= 3 else 480,
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        xaxis={
            "visible": False,
            "range": [
                min((p[0] for p in positions), default=0) - margin,
                max((p[0] for p in positions), default=0) + margin,
            ],
        },
        yaxis={
            "visible": False,
            "range": [-spread - 2 * margin, spread + margin],
            "scaleanchor": "x" if len(rows) > 3 else None,
        },
        plot_bgcolor="rgba(0,0,0,0)",
    )
    return figure
