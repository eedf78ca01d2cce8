"""The environment a user's own program gets on every worker (docs/run-format.md, "The
worker's environment"): the variable names, defined once, and their values for one worker.

`trainer.wrap` sets them before it starts the program; the launcher and the docs name them
from here.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping

from runformat.paths import ARTIFACTS_DIR, BACKUP_DIR, worker_rel

RUN_DIR_ENV = "TFCLUSTER_RUN_DIR"
"""The run's folder on this host (absolute)."""
WORKER_DIR_ENV = "TFCLUSTER_WORKER_DIR"
"""`$TFCLUSTER_RUN_DIR/workers/<index>`: event files written anywhere under it are mirrored
and charted for this worker."""
BACKUP_DIR_ENV = "TFCLUSTER_BACKUP_DIR"
"""`$TFCLUSTER_RUN_DIR/backup`: for tf.keras.callbacks.BackupAndRestore, so that
`fab train --max-restarts` resumes the program after the last completed epoch."""
ARTIFACTS_DIR_ENV = "TFCLUSTER_ARTIFACTS_DIR"
"""`$TFCLUSTER_RUN_DIR/artifacts`: what the chief writes here comes home."""
WORKER_INDEX_ENV = "TFCLUSTER_WORKER_INDEX"
"""This worker's index (0 is the chief), the task index of TF_CONFIG."""
NUM_WORKERS_ENV = "TFCLUSTER_NUM_WORKERS"
"""How many workers the job has."""
LEGACY_KERAS_ENV = "TF_USE_LEGACY_KERAS"
"""Set to 1 unless the user set it: Keras 3's fit crashes under MultiWorkerMirroredStrategy
with two or more workers (keras-team/keras#20585); tf-keras trains."""
TF_CONFIG_ENV = "TF_CONFIG"

WORKER_ENV_NAMES = (
    RUN_DIR_ENV,
    WORKER_DIR_ENV,
    BACKUP_DIR_ENV,
    ARTIFACTS_DIR_ENV,
    WORKER_INDEX_ENV,
    NUM_WORKERS_ENV,
)
"""Every variable worker_environment sets (TF_USE_LEGACY_KERAS aside, which a user may set)."""


def worker_environment(run_dir: str, index: int, num_workers: int) -> dict[str, str]:
    """The variables of worker `index` whose run folder is `run_dir` (a POSIX path)."""
    return {
        RUN_DIR_ENV: run_dir,
        WORKER_DIR_ENV: posixpath.join(run_dir, worker_rel(index)),
        BACKUP_DIR_ENV: posixpath.join(run_dir, BACKUP_DIR),
        ARTIFACTS_DIR_ENV: posixpath.join(run_dir, ARTIFACTS_DIR),
        WORKER_INDEX_ENV: str(index),
        NUM_WORKERS_ENV: str(num_workers),
    }


def with_worker_environment(
    environ: Mapping[str, str], run_dir: str, index: int, num_workers: int
) -> dict[str, str]:
    """`environ` plus this worker's variables, and TF_USE_LEGACY_KERAS=1 unless already set."""
    env = dict(environ)
    env.update(worker_environment(run_dir, index, num_workers))
    env.setdefault(LEGACY_KERAS_ENV, "1")
    return env
