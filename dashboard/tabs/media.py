"""The Media tab: a worker's images, histograms and text, as TensorBoard shows them.

Images per tag with a step slider (the latest step first), histograms over steps as a heatmap
or TensorBoard's offset and overlay views, text as plain text (markdown on request, as
TensorBoard renders it, never HTML). What could not be read is a warning above the rest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import streamlit as st

from dashboard import refresh, text
from dashboard.charts import worker_label
from dashboard.livechart import live_chart
from dashboard.media import (
    HISTOGRAMS,
    IMAGES,
    KINDS,
    TEXT,
    Histogram,
    Image,
    RunMedia,
    Text,
    TrackView,
)
from dashboard.mediacharts import HISTOGRAM_MODES, histogram_figure
from dashboard.runs import Run

# Warnings shown at once; the rest behind an expander.
SHOWN_PROBLEMS = 3
# Text entries shown per tag (newest first).
SHOWN_TEXTS = 20


@st.cache_resource(max_entries=32, show_spinner=False)
def run_media(run_dir: str) -> RunMedia:
    """One set of media readers per run, shared by every session (it locks itself)."""
    return RunMedia(Path(run_dir))


def _key(*parts: object) -> str:
    return "media-" + hashlib.sha1(repr(parts).encode()).hexdigest()[:16]


def render(run: Run) -> None:
    """The Media tab of one run, redrawn while it runs."""
    refresh.live(render_media, run)


def render_media(run: Run) -> None:
    snapshot = run_media(str(run.path)).refresh(run.indices)
    render_problems(snapshot.problems)
    workers = sorted(i for i, tracks in snapshot.workers.items() if tracks)
    if not workers:
        st.info(
            "No images, histograms or text in this run's event files yet. Programs log them"
            " with tf.summary.image, tf.summary.histogram and tf.summary.text (or Keras'"
            " TensorBoard callback with histogram_freq=1) under their worker's folder."
        )
        return
    worker = st.selectbox(
        "Worker",
        workers,
        index=workers.index(0) if 0 in workers else 0,
        format_func=worker_label,
        key=f"media-worker-{run.run_id}",
    )
    tracks = snapshot.workers[worker if worker is not None else workers[0]]
    kinds = {kind: {k: v for k, v in tracks.items() if v.kind == kind} for kind in KINDS}
    counts = ", ".join(f"{len(v)} {kind} tag(s)" for kind, v in kinds.items() if v)
    st.caption(f"{worker_label(worker or 0)}: {counts}")
    for (folder, tag), track in sorted(kinds[IMAGES].items(), key=_newest_first):
        render_images(run.run_id, worker or 0, folder, tag, track)
    if kinds[HISTOGRAMS]:
        mode = st.segmented_control(
            "Histograms",
            list(HISTOGRAM_MODES),
            format_func=HISTOGRAM_MODES.__getitem__,
            default="heatmap",
            key="media-histogram-mode",
        )
        for (folder, tag), track in sorted(kinds[HISTOGRAMS].items()):
            render_histogram(run.run_id, worker or 0, folder, tag, track, mode or "heatmap")
    for (folder, tag), track in sorted(kinds[TEXT].items(), key=_newest_first):
        render_text(run.run_id, worker or 0, folder, tag, track)


def _newest_first(item: tuple[tuple[str, str], TrackView]) -> tuple[float, str, str]:
    """Tags whose latest entry is newest come first."""
    (folder, tag), track = item
    return (-track.latest_wall, folder, tag)


def render_problems(problems: Sequence[str]) -> None:
    for problem in problems[:SHOWN_PROBLEMS]:
        st.warning(text.md(problem))
    if len(problems) > SHOWN_PROBLEMS:
        with st.expander(f"{len(problems) - SHOWN_PROBLEMS} more problems in the event files"):
            for problem in problems[SHOWN_PROBLEMS:]:
                st.caption(text.md(problem))


def _title(folder: str, tag: str) -> str:
    return f"**{text.md(tag)}** · {text.code(folder)}"


def render_images(run_id: str, worker: int, folder: str, tag: str, track: TrackView) -> None:
    images = sorted((e for e in track.entries if isinstance(e, Image)), key=lambda e: e.step)
    if not images:
        return
    st.markdown(_title(folder, tag))
    steps = [e.step for e in images]
    step = steps[-1]
    if len(set(steps)) > 1:
        step = st.select_slider(
            "Step",
            options=sorted(set(steps)),
            value=steps[-1],
            key=_key(run_id, worker, folder, tag),
        )
    image = [e for e in images if e.step == step][-1]
    caption = f"step {image.step} · {image.width} x {image.height}"
    try:
        st.image(
            list(image.pictures),
            caption=[caption] * len(image.pictures),
            output_format="PNG",
        )
    except Exception as error:  # a picture whose bytes past the signature are damaged
        st.warning(f"{text.md(tag)} at step {image.step}: cannot show it ({text.md(error)})")
    if note := track.note():
        st.caption(note)


def render_histogram(
    run_id: str, worker: int, folder: str, tag: str, track: TrackView, mode: str
) -> None:
    histograms = [e for e in track.entries if isinstance(e, Histogram)]
    if not histograms:
        return
    figure = histogram_figure(histograms, f"{tag} · {folder}", mode)
    live_chart(figure, key=f"histogram-{run_id}-{worker}-{folder}-{tag}")
    if note := track.note():
        st.caption(note)


def render_text(run_id: str, worker: int, folder: str, tag: str, track: TrackView) -> None:
    texts = sorted((e for e in track.entries if isinstance(e, Text)), key=lambda e: -e.step)
    if not texts:
        return
    st.markdown(_title(folder, tag))
    markdown = st.toggle(
        "Markdown, as TensorBoard renders it", key=_key("md", run_id, worker, folder, tag)
    )
    for entry in texts[:SHOWN_TEXTS]:
        st.caption(f"step {entry.step}")
        if len(entry.shape) == 2 and entry.shape[0] * entry.shape[1] == len(entry.strings):
            columns = entry.shape[1]
            rows = [
                list(entry.strings[i : i + columns]) for i in range(0, len(entry.strings), columns)
            ]
            st.table(rows)
        elif markdown:
            for line in entry.strings:
                st.markdown(line)
        else:
            st.text("\n".join(entry.strings))
    hidden = len(texts) - SHOWN_TEXTS
    notes = [track.note() or ""]
    if hidden > 0:
        notes.append(f"{hidden:,} older entries kept but not shown")
    if any(notes):
        st.caption(" · ".join(n for n in notes if n))
