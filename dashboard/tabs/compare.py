"""The Compare tab: the curves of two or more runs overlaid, and how their configurations
differ (the hyperparameters their programs logged for TensorBoard included)."""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st

from dashboard import charts, compare, refresh, text
from dashboard.hparamsview import hparams_of
from dashboard.live import Snapshot
from dashboard.livechart import live_chart
from dashboard.runs import Run


def render(runs: list[Run], run: Run | None) -> None:
    names = [r.run_id for r in runs]
    default = [run.run_id] if run is not None else names[:1]
    picked = st.multiselect("Runs to compare", names, default=default, key="compare-runs")
    if len(picked) < 2:
        st.info("Pick two or more runs to overlay their curves.")
        return
    chosen = [r for r in runs if r.run_id in picked]
    snapshots = [refresh.snapshot_of(r) for r in chosen]
    for r, snapshot in zip(chosen, snapshots, strict=True):
        if snapshot.loading is not None:
            st.caption(f"{text.md(r.run_id)}: {snapshot.loading}")
    refresh.until_read(chosen)
    logged = {r.run_id: hparams_of(r).values() for r in chosen}
    differing = compare.differences(compare.config_frame(chosen, logged))
    st.markdown("**How their configurations differ**")
    if differing.empty or not len(differing.columns):
        st.caption("Same configuration.")
    else:
        st.dataframe(differing, width="stretch")
    sources = [(snapshot, r.started) for r, snapshot in zip(chosen, snapshots, strict=True)]
    overlay(sources, charts.METRICS, "compare")
    # What the programs logged themselves, name by name (a run's line: the median of its
    # workers that wrote the name).
    own = [(snapshot.own_source(), start) for snapshot, start in sources]
    names = sorted({name for snapshot in snapshots for name in snapshot.own_names})
    if names:
        st.markdown("**The programs' own scalars**")
        overlay(own, [charts.own_metric(name) for name in names], "compare-own")


def overlay(
    sources: list[tuple[Snapshot, float | None]], metrics: Sequence[charts.Metric], key: str
) -> None:
    """Two charts a row, one per metric any of the runs has points of."""
    drawn = 0
    columns = st.columns(2)
    for metric in metrics:
        figure = charts.overlay_figure(sources, metric)
        if figure is None:
            continue
        with columns[drawn % 2]:
            st.markdown(f"**{text.md(metric.title, 120)}**")
            live_chart(figure, key=f"{key}-{metric.tag}")
        drawn += 1
