"""A worker really slowed down is named by the dashboard's diagnosis.

`fab train` runs two local workers; worker 1's `python=` is a wrapper that pins it to core 0
together with three busy loops started in its own session (so they share its scheduling group
and its core, as other work on a busy host would). Under synchronous all-reduce both workers
then step at the slow one's rate; the diagnosis reads the run directory the way the page does
and must name worker 1, not worker 0.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from dashboard.events import Arrays
from dashboard.live import RunEvents
from dashboard.system import WINDOW_SECONDS, Straggler, find_straggler
from tests.launcher.helpers import FAST, read_json, training_job, wait_for
from tests.sshcluster import free_ports

pytestmark = [pytest.mark.slow, pytest.mark.serial]

SLOW_PYTHON = """#!/bin/sh
# Slows this worker down: it and three busy loops share core 0 and one scheduling group.
for i in 1 2 3; do
  taskset -c 0 {python} -c 'import os
parent = os.getppid()
while os.getppid() == parent:
    sum(range(10000))' &
done
exec taskset -c 0 {python} "$@"
"""


def trained_together_for(run_dir: Path, seconds: float) -> bool:
    """Both workers have been in the training phase for `seconds`."""
    since = []
    for index in (0, 1):
        status = read_json(run_dir / "workers" / str(index) / "status.json") or {}
        if status.get("phase") != "training":
            return False
        since.append(float(status["phase_since"]))
    return time.time() - max(since) >= seconds


def test_the_slowed_worker_is_named(tmp_path: Path) -> None:
    slow = tmp_path / "slow-python"
    slow.write_text(SLOW_PYTHON.format(python=sys.executable))
    slow.chmod(0o755)
    ports = free_ports(2)
    (tmp_path / "hosts.txt").write_text(
        f"localhost tf_port={ports[0]}\nlocalhost tf_port={ports[1]} python={slow}\n"
    )
    options = [*FAST, "--epochs", "200", "--grace", "3", "--start-timeout", "400"]
    # No validation: the phase stays `training` across epochs (validation would restart it).
    options.append("--trainer-args=--system-every 1 --no-validation")
    with training_job(tmp_path, *options, wait=400) as (_, run_dir):
        # The rules average what the last WINDOW_SECONDS hold: a third of it, sampled every
        # second, already holds a dozen samples per worker.
        wait_for(lambda: trained_together_for(run_dir, WINDOW_SECONDS / 3), 300, "10 s of training")
        workers = RunEvents(run_dir).refresh([0, 1]).workers
        found: Straggler | None = find_straggler(workers, training=[0, 1])
    assert found is not None and found.index == 1, (found, _recent_waits(workers))
    assert "waited for a CPU" in found.reason, found


def _recent_waits(workers: Mapping[int, Mapping[str, Arrays]]) -> dict[int, list[int]]:
    """What the diagnosis saw, for the failure message."""
    waits = {i: s.get("system/cpu_wait_percent") for i, s in workers.items()}
    return {i: [round(float(v)) for v in a[2][-15:]] if a else [] for i, a in waits.items()}
