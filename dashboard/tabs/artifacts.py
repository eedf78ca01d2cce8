"""The Artifacts tab: the model, the test metrics, what the program saved under artifacts/
(a folder as one .zip) and the logs for download, and how to open the run in TensorBoard.
Downloads are never inside a live part (they would be redrawn)."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path

import streamlit as st

from dashboard import artifacts, charts, text, triage
from dashboard.runs import Run, run_file, safe_file
from runformat import LAUNCHER_LOG, METRICS_JSON, MODEL_FILE, WORKERS_DIR, worker_log_rel


def render(run: Run) -> None:
    render_downloads(run)
    render_saved(run)
    st.markdown("**TensorBoard** (every worker's curves and the chief's):")
    st.code(f"tensorboard --logdir {shlex.quote(shown_path(run.path))}", language="bash")


def render_downloads(run: Run) -> None:
    warnings: list[str] = []
    files = [
        (MODEL_FILE, f"Model ({MODEL_FILE})"),
        (METRICS_JSON, f"Test metrics ({METRICS_JSON})"),
    ]
    files += [(worker_log_rel(i), f"{charts.worker_label(i)} log") for i in run.indices]
    files.append((LAUNCHER_LOG, "Launcher log"))
    columns = st.columns(3)
    for position, (relative, label) in enumerate(files):
        column = columns[position % 3]
        path = run_file(run.path, relative, warnings)
        try:
            size = path.stat().st_size if path is not None else None
        except OSError:
            size = None
        if path is None or size is None:
            missing = triage.no_model_reason(run) if relative == MODEL_FILE else None
            waiting = "written when training ends" if run.active else "not there"
            column.caption(text.md(missing or f"{label}: {waiting}"))
            continue
        name = relative.replace(f"{WORKERS_DIR}/", "worker-").replace("/", "-")
        column.download_button(
            f"⬇ {label} · {size:,} bytes",
            data=file_reader(run.path, relative),
            file_name=f"{run.run_id}-{name}",
            mime="application/octet-stream" if relative.endswith(".h5") else "text/plain",
            on_click="ignore",
            key=f"download-{relative}",
        )
    for warning in warnings:
        st.warning(text.md(warning))


def render_saved(run: Run) -> None:
    """Each file and folder the program saved under artifacts/."""
    saved, more = artifacts.list_artifacts(run.path)
    if not saved:
        return
    st.markdown(f"**Saved by the program** ({text.code(artifacts.ARTIFACTS_DIR + '/')})")
    columns = st.columns(3)
    for position, artifact in enumerate(saved):
        column = columns[position % 3]
        if artifact.folder and artifact.size > artifacts.MAX_ZIP_BYTES:
            column.caption(
                f"{text.md(artifact.name)}/: {artifact.size:,} bytes, too big to zip here; "
                "`fab fetch` brings the run folder home"
            )
            continue
        what = (
            f"{artifact.files:,} files, {artifact.size:,} bytes"
            if artifact.folder
            else (f"{artifact.size:,} bytes")
        )
        column.download_button(
            f"⬇ {text.clip(artifact.download_name, 80)} · {what}",
            data=artifact_reader(run.path, artifact),
            file_name=f"{run.run_id}-{artifact.download_name}",
            mime="application/zip" if artifact.folder else "application/octet-stream",
            on_click="ignore",
            key=f"download-{artifact.relative}",
        )
    if more:
        st.caption(f"{more} more entries of {artifacts.ARTIFACTS_DIR}/ are not listed.")


def artifact_reader(run_dir: Path, artifact: artifacts.Artifact) -> Callable[[], bytes]:
    """Reads the file, or zips the folder, when the button is clicked."""
    return lambda: artifacts.read_artifact(run_dir, artifact)


def file_reader(run_dir: Path, relative: str) -> Callable[[], bytes]:
    """Reads the file when the button is clicked, checking again that it stays in the run."""

    def read() -> bytes:
        path = safe_file(run_dir, relative)
        return path.read_bytes() if path is not None else b""

    return read


def shown_path(path: Path) -> str:
    """The run folder as the user would type it: relative to here when it is below here."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
