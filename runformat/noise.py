"""Which lines of a worker's output are TensorFlow's or Keras' chatter, not the program's.

They stay in worker.log and launcher.log; the launcher's terminal leaves them out unless
--verbose, a failure report shows only the lines that are left, and the dashboard's log
viewer hides them unless asked to show everything. Standard library only (runformat).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# TensorFlow's C++ logs (absl: `E0000 00:00:... file.cc:52] ...`, and the older
# `2024-01-01 12:00:00.000000: I tensorflow/...`), Python's absl/tensorflow logging, and the
# start-up notices that print whatever the log level.
_TF_LOG = re.compile(
    r"^(?:[IWEF]\d{4} "
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?: [IWEF] "
    r"|(?:INFO|WARNING|ERROR|DEBUG|CRITICAL):(?:absl|tensorflow|h5py)\b"
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called)"
)
_TF_NOTICE = re.compile(
    r"failed call to cuInit|oneDNN custom operations are on"
    r"|rebuild TensorFlow with the appropriate compiler flags"
    r"|This TensorFlow binary is optimized to use available CPU instructions"
    r"|Could not find cuda drivers on your machine"
)
# Keras' per-epoch output: `Epoch 2/30` and `21/21 - 1s - loss: ... ` or a progress bar.
_KERAS = re.compile(r"^(?:Epoch \d+/\d+\s*$|\s*\d+/\d+ (?:\[|- |━))")


def is_tf_log(line: str) -> bool:
    """A TensorFlow or absl log line, or one of TensorFlow's start-up notices."""
    return bool(_TF_LOG.match(line) or _TF_NOTICE.search(line))


def is_keras_progress(line: str) -> bool:
    """Keras' per-epoch line or progress bar (the live table already says it)."""
    return bool(_KERAS.match(line))


def is_noise(line: str) -> bool:
    """TensorFlow's or absl's logs, or Keras' progress: what a person reading a log skips."""
    return is_tf_log(line) or is_keras_progress(line)


def meaningful(lines: Iterable[str], last: int = 5) -> list[str]:
    """The last `last` lines that are neither blank, TensorFlow's logs nor Keras' progress."""
    kept = [ln for ln in lines if ln.strip() and not is_noise(ln)]
    return kept[-last:]
