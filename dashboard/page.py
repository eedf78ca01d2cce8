"""The dashboard's page, built at each rerun of dashboard/app.py.

The sidebar picks a run (also ?run= in the URL); a header tells that run's story
(dashboard.header); the tabs (dashboard.tabs, one module each) show it. Only the open tab is
built. How often each live part redraws, and when the whole page runs again, is
dashboard.refresh's alone.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import streamlit as st

from dashboard import header, refresh, text
from dashboard.runs import Run, load_runs, plain_run_name, runs_dir_from
from dashboard.tabs import artifacts, cluster, compare, logs, media, progress, runs, system

# The tabs that show the chosen run, in order (Runs comes before them, Compare after).
RUN_TABS: dict[str, Callable[[Run], None]] = {
    "Cluster": cluster.render,
    "Progress": progress.render,
    "System": system.render,
    "Media": media.render,
    "Logs": logs.render,
    "Artifacts": artifacts.render,
}
TABS = ("Runs", *RUN_TABS, "Compare")


def choose_run(all_runs: list[Run]) -> Run | None:
    """The run named in the URL (?run=) or picked in the sidebar.

    A name that is not a run of the folder keeps its warning and leaves the choice to the
    user: the page never jumps to another run by itself.
    """
    names = [run.run_id for run in all_runs]
    by_name = {run.run_id: run for run in all_runs}
    requested = st.query_params.get("run")
    if "run" not in st.session_state:
        first = names[0] if names and not requested else None
        st.session_state["run"] = requested if requested in by_name else first
    elif st.session_state["run"] is None and requested in by_name:
        # The URL keeps the choice: a box that lost its value (the browser may send none
        # when another widget, such as a tab, reruns the page) falls back to it.
        st.session_state["run"] = requested
    current = st.session_state["run"]
    if current is not None and current not in by_name:
        st.warning(f"Run {text.code(current)} is not in the runs folder (removed?).")
        st.session_state["run"] = None
    elif requested and requested not in by_name and current is None:
        if not plain_run_name(requested):
            st.warning(f"Refused run name {text.code(requested)}: not a folder of the runs folder.")
        else:
            st.warning(f"Run {text.code(requested)} is not in the runs folder (removed?).")
        if names:
            st.info("Pick a run in the sidebar or in the Runs tab.")
    if not all_runs:
        return None
    # The state goes under the box, not into its label: the browser keeps showing the label
    # a run had when it was picked, so "running" would stay there after the run ended.
    chosen = st.sidebar.selectbox("Run", names, key="run", index=None, placeholder="Pick a run")
    if chosen is None:
        return None
    st.sidebar.markdown(f"State: {header.badge(by_name[chosen].state)}")
    if st.query_params.get("run") != chosen:
        st.query_params["run"] = chosen
    return by_name[chosen]


def render_exposure() -> None:
    """Say so when the page is served on every network interface without anyone asking:
    started from another folder, Streamlit does not read the repository's
    .streamlit/config.toml, which keeps it on this machine."""
    if not st.get_option("server.address"):
        st.sidebar.warning(
            "Served on every network interface: anyone who reaches this machine can read "
            "these runs. Started from another folder, the repository's .streamlit/config.toml "
            "is not read: add `--server.address 127.0.0.1`."
        )


def main() -> None:
    """The whole page, once per rerun (dashboard/app.py has set the page up)."""
    runs_dir = runs_dir_from(sys.argv[1:], os.environ)
    st.sidebar.title("tfcluster")
    render_exposure()
    st.sidebar.caption(f"Runs folder: {text.code(runs_dir.resolve())}")
    all_runs = load_runs(runs_dir)
    run = choose_run(all_runs)
    with st.sidebar:
        refresh.watch_runs(runs_dir, run is not None and run.active)
    if run is not None:
        refresh.live(header.render, run, "header")
    if "tab" not in st.session_state or not all_runs:
        st.session_state["tab"] = "Cluster" if run is not None else "Runs"
    tabs = dict(zip(TABS, st.tabs(list(TABS), key="tab", on_change="rerun"), strict=True))
    if tabs["Runs"].open:
        with tabs["Runs"]:
            runs.render(runs_dir, all_runs)
    if tabs["Compare"].open:
        with tabs["Compare"]:
            compare.render(all_runs, run)
    for name, render in RUN_TABS.items():
        if not tabs[name].open:
            continue
        with tabs[name]:
            if run is None:
                st.info("No run to show: pick one in the sidebar or in the Runs tab.")
            else:
                render(run)
