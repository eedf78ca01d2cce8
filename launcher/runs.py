"""Finding a run directory and reading its cluster.json for `fab status | stop | fetch`."""

from __future__ import annotations

from pathlib import Path

from runformat import CLUSTER_JSON, RUNS_DIR, ClusterRecord, load_cluster


def read_cluster(run_dir: Path) -> ClusterRecord:
    """cluster.json of a run; a ValueError naming the file if it is missing or unreadable.

    Fields of the wrong type are tolerated (they read as missing), so that a hand-edited or
    older run can still be stopped.
    """
    path = run_dir / CLUSTER_JSON
    record, warnings = load_cluster(path, str(path))
    if record is None:
        if not warnings:
            raise ValueError(f"{path}: not found; is {run_dir} a run directory?")
        raise ValueError(warnings[0])
    return record


def find_run(runs_dir: Path, run: str | None) -> Path:
    """The named run (id or path), or the latest one; ValueError when there is none."""
    if run:
        candidate = Path(run)
        if not candidate.is_dir():
            candidate = runs_dir / run
        if not (candidate / CLUSTER_JSON).is_file():
            raise ValueError(f"no run {run!r} in {runs_dir}/ (no {CLUSTER_JSON} there)")
        return candidate
    runs = sorted(runs_dir.glob(f"*/{CLUSTER_JSON}")) if runs_dir.is_dir() else []
    if not runs:
        raise ValueError(f"no runs in {runs_dir}/ yet; start one with `fab train`")
    return runs[-1].parent


__all__ = ["RUNS_DIR", "find_run", "read_cluster"]
