"""Plotly figures of histograms over steps: a heatmap, or TensorBoard's offset and overlay
views. Pure functions of the entries read by dashboard.media (no Streamlit)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from dashboard.media import Histogram
from dashboard.text import svg

HISTOGRAM_MODES = {
    "heatmap": "Heatmap over steps",
    "offset": "Offset (as TensorBoard)",
    "overlay": "Overlay (as TensorBoard)",
}
# Common bins every step is redrawn into, and the steps drawn as lines at most.
BINS = 40
MAX_LINES = 40


def common_bins(histograms: Sequence[Histogram], bins: int = BINS) -> np.ndarray:
    """Edges spanning every step's buckets, so that steps can be drawn side by side."""
    rows = [h.buckets for h in histograms if len(h.buckets)]
    if not rows:
        return np.linspace(0.0, 1.0, bins + 1)
    low = min(float(r[:, 0].min()) for r in rows)
    high = max(float(r[:, 1].max()) for r in rows)
    if not high > low:
        low, high = low - 0.5, high + 0.5
    return np.linspace(low, high, bins + 1)


def rebin(histogram: Histogram, edges: np.ndarray) -> np.ndarray:
    """The histogram's counts in the given bins (each bucket's count at its centre)."""
    buckets = histogram.buckets
    if not len(buckets):
        return np.zeros(len(edges) - 1)
    centres = (buckets[:, 0] + buckets[:, 1]) / 2
    counts, _ = np.histogram(centres, bins=edges, weights=buckets[:, 2])
    return counts


def _thin(histograms: Sequence[Histogram], most: int) -> list[Histogram]:
    """At most `most` entries, evenly spread, the newest always in."""
    if len(histograms) <= most:
        return list(histograms)
    picks = np.unique(np.linspace(0, len(histograms) - 1, most).round().astype(int))
    return [histograms[i] for i in picks]


def histogram_figure(
    histograms: Sequence[Histogram], title: str, mode: str = "heatmap", bins: int = BINS
) -> go.Figure:
    """One tag's histograms over steps, drawn in one of HISTOGRAM_MODES."""
    if mode not in HISTOGRAM_MODES:
        raise ValueError(f"histogram mode {mode!r}: expected one of {', '.join(HISTOGRAM_MODES)}")
    entries = sorted(histograms, key=lambda h: h.step)
    edges = common_bins(entries, bins)
    centres = (edges[:-1] + edges[1:]) / 2
    figure = go.Figure()
    if mode == "heatmap":
        counts = np.array([rebin(h, edges) for h in entries]).T if entries else np.zeros((0, 0))
        figure.add_trace(
            go.Heatmap(
                x=[h.step for h in entries],
                y=centres,
                z=counts,
                colorscale="Viridis",
                colorbar={"title": {"text": "count"}},
                hovertemplate="step %{x}<br>value %{y:.4g}<br>count %{z:.4g}<extra></extra>",
            )
        )
        figure.update_layout(xaxis_title="step", yaxis_title="value")
    else:
        shown = _thin(entries, MAX_LINES)
        steps = [h.step for h in shown]
        low, high = (min(steps), max(steps)) if steps else (0, 1)
        peak = max((rebin(h, edges).max(initial=0.0) for h in shown), default=0.0) or 1.0
        # Newest last, so that it is drawn in front.
        for entry in shown:
            counts = rebin(entry, edges)
            shade = (entry.step - low) / (high - low) if high > low else 1.0
            offset = (high - entry.step) / (high - low) * peak * 0.6 if high > low else 0.0
            lift = offset if mode == "offset" else 0.0
            figure.add_trace(
                go.Scatter(
                    x=centres,
                    y=counts + lift,
                    mode="lines",
                    line={"color": _shade(shade), "width": 1.5},
                    name=f"step {entry.step}",
                    customdata=counts,
                    hovertemplate=(
                        f"step {entry.step}<br>value %{{x:.4g}}<br>count %{{customdata:.4g}}"
                        "<extra></extra>"
                    ),
                    showlegend=False,
                )
            )
        figure.update_layout(xaxis_title="value", yaxis_title="count")
        if mode == "offset":
            figure.update_yaxes(showticklabels=False, title="steps (newest in front, at the foot)")
    figure.update_layout(
        title={"text": svg(title)},
        height=320,
        margin={"l": 50, "r": 10, "t": 40, "b": 40},
    )
    return figure


def _shade(fraction: float) -> str:
    """Old steps pale orange, the newest deep orange (TensorBoard's histogram colours)."""
    pale = np.array([255, 224, 178])
    deep = np.array([230, 81, 0])
    r, g, b = (pale + (deep - pale) * float(np.clip(fraction, 0.0, 1.0))).round().astype(int)
    return f"rgb({r},{g},{b})"
