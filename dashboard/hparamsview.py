"""A run's logged hyperparameters on the page: read once per run and kept (shared by every
viewer, like the other readers), and its sessions as a table (names and values are the
program's: shown as data, never as markdown or HTML)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard import text
from dashboard.hparams import HParamsSnapshot, RunHParams, show
from dashboard.runs import Run

SESSION_COLUMNS = ("folder", "worker", "started", "status", "ended")


@st.cache_resource(max_entries=32, show_spinner=False)
def run_hparams(run_dir: str) -> RunHParams:
    """One set of hparams readers per run, shared by every session (it locks itself)."""
    return RunHParams(Path(run_dir))


def hparams_of(run: Run) -> HParamsSnapshot:
    """What the run's programs logged for TensorBoard's HParams tab, read up to now."""
    return run_hparams(str(run.path)).refresh(run.indices)


def render_sessions(snapshot: HParamsSnapshot) -> None:
    """Every session, folded away: where, when, how it ended, each hyperparameter."""
    sessions = snapshot.sessions
    if not sessions:
        return
    import pandas as pd  # lazily (see dashboard.compare)

    names = list(dict.fromkeys(name for s in sessions for name in s.hparams))
    rows = []
    for s in sessions:
        row: dict[str, object] = {
            "folder": s.folder,
            "worker": s.worker,
            "started": text.when(s.started),
            "status": s.status or "no end logged",
            "ended": text.when(s.ended),
        }
        for name in names:
            column = f"{name} (hparam)" if name in SESSION_COLUMNS else name
            row[column] = show(s.hparams[name]) if name in s.hparams else text.MISSING
        rows.append(row)
    label = f"Hyperparameters logged for TensorBoard: {len(sessions)} session(s)"
    with st.expander(label):
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
