"""The closing words of a run: what a user wants after a good run, and after a failed one."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.exits import describe_exit
from launcher.failure import Failure
from runformat import ARTIFACTS_DIR, METRICS_JSON, MODEL_FILE, worker_log_rel
from runformat.noise import meaningful

DASHBOARD_URL = "http://127.0.0.1:8501/?run={run_id}"


def shown_path(path: Path) -> str:
    """A path as a user would type it here: relative to the current folder when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def where(local_dir: Path) -> list[str]:
    """How to look at a run: its page in the dashboard, and TensorBoard."""
    return [
        f"  dashboard: {DASHBOARD_URL.format(run_id=local_dir.name)}  "
        "(after `streamlit run dashboard/app.py`)",
        f"  tensorboard --logdir {shown_path(local_dir)}",
    ]


def summary(local_dir: Path, seconds: float | None = None) -> str:
    """What a user wants after a good run: accuracy, time, where the model is, where to look."""
    took = f" in {seconds:.0f} s" if seconds is not None else ""
    lines = [f"finished: every worker exited 0{took}"]
    try:
        m = json.loads((local_dir / METRICS_JSON).read_text())
        lines.append(
            f"  test accuracy {m.get('test_accuracy', float('nan')):.4f}, "
            f"test loss {m.get('test_loss', float('nan')):.4f}, "
            f"{m.get('epochs', '?')} epoch(s) on {m.get('workers', '?')} worker(s), "
            f"training {m.get('wall_time_sec', m.get('train_time_sec', float('nan'))):.1f} s"
        )
    except (OSError, ValueError, TypeError):
        pass  # a user's own program writes none
    artifacts = local_dir / ARTIFACTS_DIR
    if artifacts.is_dir():
        count = sum(1 for p in artifacts.rglob("*") if p.is_file())
        lines.append(f"  artifacts: {shown_path(artifacts)}  ({count} file(s) from the chief)")
    model = local_dir / MODEL_FILE
    if model.exists():
        lines.append(
            f"  model: {shown_path(model)}  (keras.models.load_model(path) in tf-keras or Keras 3)"
        )
    lines += where(local_dir)
    return "\n".join(lines)


@dataclass(frozen=True)
class Peer:
    """Another worker of a failed job: how it ended and what its status.json said."""

    index: int
    host: str
    exit_code: int | None
    status: dict[str, Any] | None


def _one_line(text: object, limit: int = 160) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def failure_report(
    failure: Failure,
    status: dict[str, Any] | None,
    log: Sequence[str],
    peers: Sequence[Peer],
) -> list[str]:
    """The cause first, in three parts: the worker and why, its error (status.json's, or how
    it ended), the meaningful end of its log; then one line per worker that only aborted."""
    lines = [f"FAILED: worker {failure.index} ({failure.host}) {failure.reason}"]
    error = (status or {}).get("error")
    if error:
        lines.append(f"  error: {_one_line(error)}")
    else:
        at = ""
        if status:
            epoch, epochs = status.get("epoch", 0), status.get("epochs", "?")
            at = f" at epoch {epoch}/{epochs}, step {status.get('step', 0)}"
        lines.append(f"  error: none recorded in its status.json{at}")
    tail = meaningful(log)
    path = worker_log_rel(failure.index)
    if tail:
        lines.append(f"  last lines of {path} (TensorFlow's messages left out):")
        lines += [f"    {line}" for line in tail]
    else:
        lines.append(f"  {path} has nothing but TensorFlow's start-up messages")
    for peer in peers:
        err = (peer.status or {}).get("error")
        if peer.exit_code == 0:
            continue
        how = f" ({describe_exit(peer.exit_code)})" if peer.exit_code is not None else ""
        said = f": {_one_line(err, 120)}" if err else ""
        verb = "aborted" if err or (peer.exit_code or 0) > 0 else "stopped by the launcher"
        lines.append(f"  worker {peer.index} ({peer.host}) {verb}{how}{said}")
    return lines
