"""The System tab: the worker that holds the others back, each worker's trouble, and its
CPU, memory, network and GPU charts."""

from __future__ import annotations

import streamlit as st

from dashboard import refresh, system, text
from dashboard.livechart import live_chart
from dashboard.runs import Run


def render(run: Run) -> None:
    refresh.live(render_charts, run, "charts")


def render_charts(run: Run) -> None:
    snapshot = refresh.snapshot_of(run)
    for line in system.run_warnings(run, snapshot.workers):
        st.warning(text.md(line))
    figures = snapshot.memo(
        ("system", run.started), lambda: system.system_figures(snapshot, run.started)
    )
    if not figures and snapshot.loading is not None:
        st.info("The charts appear as the workers' events are read.")
    elif not figures:
        st.info("No system metrics yet: each worker samples them every few seconds.")
    for pair in range(0, len(figures), 2):
        for column, (tag, figure) in zip(st.columns(2), figures[pair : pair + 2], strict=False):
            with column:
                live_chart(figure, key=f"chart-{run.run_id}-{tag}")
