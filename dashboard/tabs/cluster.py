"""The Cluster tab: the workers grouped by host and coloured by state, and their table."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import streamlit as st

from dashboard import clusterview, refresh, text
from dashboard.cluster import rows_frame, run_rows
from dashboard.livechart import live_chart
from dashboard.runs import Run

if TYPE_CHECKING:
    import pandas as pd

ROW_COLORS = {
    "stalled": "#ffe0b2",
    "failed": "#ffcdd2",
    "aborted": "#ede7f6",
    "stopped": "#efebe9",
}


def render(run: Run) -> None:
    refresh.live(render_workers, run)


def render_workers(run: Run) -> None:
    rows = run_rows(run, refresh.snapshot_of(run).workers, time.time())
    if not rows:
        st.info("No workers known yet: cluster.json and workers/ are both missing.")
        return
    live_chart(clusterview.cluster_figure(rows), "cluster-figure", {"displayModeBar": False})
    stalled = [row for row in rows if row.stalled]
    for row in stalled[:5]:
        usual = f"{row.interval:.1f} s" if row.interval else "unknown"
        st.warning(
            f"worker {row.index} ({text.md(row.host)}) is stalled: silent for "
            f"{row.since_update or 0:.0f} s in phase {text.md(row.phase or 'training')}, "
            f"its usual interval is {usual}."
        )
    if len(stalled) > 5:
        st.warning(f"{len(stalled) - 5} more workers are stalled: see the table.")
    st.dataframe(
        rows_frame(rows).style.apply(highlight, axis=1),
        hide_index=True,
        width="stretch",
        height="auto" if len(rows) <= 16 else 600,
        column_config={"stalled": st.column_config.CheckboxColumn()},
        key="workers-table",
    )


def highlight(row: pd.Series) -> list[str]:
    state = "stalled" if row["stalled"] else str(row["state"]).split(" ")[0]
    color = ROW_COLORS.get(state, "")
    return [f"background-color: {color}" if color else ""] * len(row)
