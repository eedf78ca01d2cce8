"""The Runs tab: every run of the folder, newest first; a click on a row opens it."""

from __future__ import annotations

import time
from pathlib import Path

import streamlit as st

from dashboard import compare, text
from dashboard.runs import Run


def render(runs_dir: Path, runs: list[Run]) -> None:
    if not runs:
        render_empty(runs_dir)
        return
    st.session_state["runs-order"] = [run.run_id for run in runs]
    st.caption(f"{len(runs)} run(s) in {text.code(runs_dir.resolve())}. Click a row to open it.")
    st.dataframe(
        compare.runs_frame(runs, time.time()),
        hide_index=True,
        width="stretch",
        key="runs-table",
        on_select=open_selected_run,
        selection_mode="single-row",
    )


def open_selected_run() -> None:
    """A click on a row opens that run (before the sidebar is drawn)."""
    selection = st.session_state.get("runs-table")
    rows = selection.selection.rows if selection is not None else []
    names = st.session_state.get("runs-order", [])
    if rows and rows[0] < len(names):
        st.session_state["run"] = names[rows[0]]
        st.session_state["tab"] = "Cluster"


def render_empty(runs_dir: Path) -> None:
    """No runs yet: say where we looked and how to make one."""
    missing = "" if runs_dir.is_dir() else " (the folder does not exist yet)"
    st.info(f"No runs in {text.code(runs_dir.resolve())}{missing}.")
    st.markdown(
        "Start one from the repository folder, then come back here:\n\n"
        "```bash\n"
        "fab deploy train              # train on the machines in hosts.txt\n"
        "scripts/demo.sh               # or: two local workers, no SSH needed\n"
        "```\n\n"
        "Runs live somewhere else? `streamlit run dashboard/app.py -- --runs DIR` "
        "or `TFCLUSTER_RUNS=DIR`. Just looking? `python -m dashboard.samplerun runs` "
        "writes a made-up run."
    )
