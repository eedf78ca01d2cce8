"""Run ids and the local run directory's launcher-owned files (cluster.json, launcher.log)."""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

RUNS_DIR = Path("runs")


def new_run_id(now: float | None = None) -> str:
    """Sortable by time (`YYYYmmdd-HHMMSS-xxxx`), unique thanks to 4 random hex characters."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(time.time() if now is None else now))
    return f"{stamp}-{secrets.token_hex(2)}"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write to a temp file in the same folder, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_cluster(run_dir: Path) -> dict[str, Any]:
    """cluster.json of a run; a ValueError naming the file if it is missing or not JSON."""
    path = run_dir / "cluster.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: not found; is {run_dir} a run directory?") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot be read: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def find_run(runs_dir: Path, run: str | None) -> Path:
    """The named run (id or path), or the latest one; ValueError when there is none."""
    if run:
        candidate = Path(run)
        if not candidate.is_dir():
            candidate = runs_dir / run
        if not (candidate / "cluster.json").is_file():
            raise ValueError(f"no run {run!r} in {runs_dir}/ (no cluster.json there)")
        return candidate
    runs = sorted(p for p in runs_dir.glob("*/cluster.json")) if runs_dir.is_dir() else []
    if not runs:
        raise ValueError(f"no runs in {runs_dir}/ yet; start one with `fab train`")
    return runs[-1].parent
