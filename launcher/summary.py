"""The closing words of a run: what a user wants after a good run, and after a failed one."""

from __future__ import annotations

import json
from pathlib import Path

from launcher.failure import Failure
from runformat import METRICS_JSON, MODEL_FILE, worker_log_rel


def summary(local_dir: Path) -> str:
    """What a user wants after a good run: accuracy, where the model is, how to look at it."""
    lines = ["finished: every worker exited 0"]
    try:
        m = json.loads((local_dir / METRICS_JSON).read_text())
        lines.append(
            f"  test accuracy {m.get('test_accuracy', float('nan')):.4f}, "
            f"test loss {m.get('test_loss', float('nan')):.4f}, "
            f"{m.get('epochs', '?')} epoch(s) on {m.get('workers', '?')} worker(s) "
            f"in {m.get('wall_time_sec', m.get('train_time_sec', float('nan'))):.1f} s"
        )
    except (OSError, ValueError, TypeError):
        lines.append(f"  (no {METRICS_JSON} from the chief)")
    model = local_dir / MODEL_FILE
    if model.exists():
        lines.append(f"  model: {model}  (keras.models.load_model(path) in tf-keras or Keras 3)")
    lines.append("  dashboard: streamlit run dashboard/app.py")
    lines.append(f"  tensorboard --logdir {local_dir}")
    return "\n".join(lines)


def failure_report(failure: Failure) -> list[str]:
    """The failed worker and why, then the last lines of its log."""
    lines = [f"FAILED: worker {failure.index} ({failure.host}) {failure.reason}"]
    if failure.log_tail:
        lines.append(f"last lines of {worker_log_rel(failure.index)}:")
        lines += [f"  {line}" for line in failure.log_tail]
    return lines
