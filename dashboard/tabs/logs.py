"""The Logs tab: the tail of a worker's log or the launcher's, searchable, live; TensorFlow's
start-up chatter hidden by the rules the launcher's terminal uses, unless asked for."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, refresh, text
from dashboard.runs import Run, safe_file, tail_lines
from runformat import LAUNCHER_LOG, worker_log_rel
from runformat.noise import is_noise

# Lines read from the end of a log when some are left out (a search, the chatter hidden).
FILTERED_TAIL = 20_000


def render(run: Run) -> None:
    logs = {charts.worker_label(i): worker_log_rel(i) for i in run.indices}
    logs["launcher"] = LAUNCHER_LOG
    failure = run.cluster.failure if run.cluster else None
    cause = failure.index if failure is not None else None
    default = charts.worker_label(cause) if cause in run.indices else next(iter(logs))
    left, middle, right = st.columns([2, 3, 1])
    choice = left.selectbox("Log", list(logs), index=list(logs).index(default), key="log-choice")
    search = middle.text_input("Search the log", key="log-search", placeholder="e.g. error")
    lines = right.number_input("Lines", 10, 5000, 200, 10, key="log-lines")
    everything = st.toggle(
        "Show everything",
        key="log-everything",
        help="TensorFlow's and absl's logs and Keras' progress bars are hidden by default, "
        "as in fab train's terminal; the file keeps them.",
    )
    relative = logs[choice or "launcher"]
    refresh.live(render_tail, run, "rows", relative, int(lines), search or "", everything)


def render_tail(run: Run, relative: str, lines: int, search: str, everything: bool) -> None:
    path = safe_file(run.path, relative)
    if path is None:
        st.caption(f"{text.md(relative)}: nothing to show")
        return
    tail = tail_lines(path, lines if everything and not search else FILTERED_TAIL)
    notes = []
    if not everything:
        kept = [line for line in tail if not is_noise(line)]
        if len(kept) < len(tail):
            notes.append(f"{len(tail) - len(kept)} line(s) of TensorFlow's chatter hidden")
        tail = kept
    if search:
        needle = search.lower()
        tail = [line for line in tail if needle in line.lower()]
        notes.append(f"{len(tail[-lines:])} line(s) containing “{text.md(search, 60)}”")
    tail = tail[-lines:]
    if notes:
        st.caption(" · ".join(notes))
    st.code("\n".join(tail) or "(empty)", language=None)
