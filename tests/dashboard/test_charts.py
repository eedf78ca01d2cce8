"""Chart builders: TensorBoard's smoothing, one line per worker, the cluster picture."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from dashboard.charts import (
    MAX_POINTS,
    STATE_COLORS,
    cluster_figure,
    ema,
    epoch_figure,
    line_figure,
    scalar_frame,
)
from dashboard.cluster import WorkerRow


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


def frame_for(workers: int, points: int) -> pd.DataFrame:
    series = {
        index: {
            "progress/loss": (
                np.arange(points),
                1000.0 + np.arange(points, dtype=float),
                np.linspace(2.0, 0.1, points) + index,
            )
        }
        for index in range(workers)
    }
    return scalar_frame(series, "progress/loss", start=1000.0)


def legend_traces(figure: go.Figure) -> list[Any]:
    return [trace for trace in figure.data if trace.showlegend is not False]


@pytest.mark.parametrize("workers", [1, 3, 8])
def test_one_legend_line_per_worker_with_raw_line_faded_behind(workers: int) -> None:
    figure = line_figure(frame_for(workers, 50), "Loss", smoothing=0.6)
    names = [trace.name for trace in legend_traces(figure)]
    assert names == ["chief (0)"] + [f"worker {i}" for i in range(1, workers)]
    raw = [trace for trace in figure.data if trace.showlegend is False]
    assert len(raw) == workers
    assert all(trace.opacity == 0.25 for trace in raw)


def test_no_smoothing_draws_only_the_raw_lines() -> None:
    figure = line_figure(frame_for(2, 10), "Loss", smoothing=0.0)
    assert len(figure.data) == 2
    np.testing.assert_allclose(figure.data[0].y, np.linspace(2.0, 0.1, 10))


@pytest.mark.parametrize(
    ("x_axis", "first_x"),
    [("step", 0), ("relative", 0.0), ("wall", pd.Timestamp(1000, unit="s"))],
)
def test_x_axis_by_step_or_time(x_axis: str, first_x: object) -> None:
    figure = line_figure(frame_for(1, 5), "Loss", x_axis=x_axis)
    assert figure.data[-1].x[0] == first_x


def test_log_scale() -> None:
    assert line_figure(frame_for(1, 5), "Loss", log_y=True).layout.yaxis.type == "log"
    assert line_figure(frame_for(1, 5), "Loss").layout.yaxis.type is None


def test_long_series_are_thinned_but_keep_their_last_point() -> None:
    figure = line_figure(frame_for(1, 20_000), "Loss")
    assert len(figure.data[-1].x) <= MAX_POINTS
    assert figure.data[-1].x[-1] == 19_999


def test_redone_steps_keep_the_latest_value() -> None:
    series = {0: {"t": (np.array([0, 1, 2, 1, 2, 3]), np.arange(6.0), np.arange(6.0))}}
    frame = scalar_frame(series, "t")
    assert frame["step"].tolist() == [0, 1, 2, 3]
    assert frame["value"].tolist() == [0.0, 3.0, 4.0, 5.0]
    assert scalar_frame({}, "t").empty


def test_epoch_curves_are_numbered_from_one() -> None:
    splits = {
        "train": (np.array([0, 1, 2]), np.zeros(3), np.array([1.0, 0.5, 0.3])),
        "validation": (np.array([0, 1, 2]), np.zeros(3), np.array([1.1, 0.6, 0.4])),
    }
    figure = epoch_figure(splits, "Loss per epoch")
    assert [trace.name for trace in figure.data] == ["train", "validation"]
    assert list(figure.data[0].x) == [1, 2, 3]


def row(index: int, state: str, stalled: bool = False) -> WorkerRow:
    return WorkerRow(
        index=index,
        role="chief" if index == 0 else "worker",
        host=f"h{index}",
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
    )


@pytest.mark.parametrize("workers", [1, 2, 5])
def test_cluster_picture_colours_each_worker_by_state(workers: int) -> None:
    rows = [row(0, "running"), row(1, "failed"), row(2, "running", stalled=True)]
    rows += [row(i, "finished") for i in range(3, workers)]
    rows = rows[:workers]
    figure = cluster_figure(rows)
    nodes = [trace for trace in figure.data if trace.meta]
    assert [trace.meta["worker"] for trace in nodes] == list(range(workers))
    expected = ["running", "failed", "stalled", "finished", "finished"][:workers]
    assert [trace.marker.color for trace in nodes] == [STATE_COLORS[s] for s in expected]
    assert nodes[0].marker.symbol == "square"
    assert "h0:23456" in nodes[0].text[0]
