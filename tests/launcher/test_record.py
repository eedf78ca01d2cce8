"""Finishing a run's record after its launcher died (pure logic; the real run over SSH is
test_reliability.py::test_status_finishes_the_record_of_a_run_whose_launcher_died)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from launcher.record import finished_record, launcher_alive

HOSTS = [{"index": 0, "name": "a@gpu-a"}, {"index": 1, "name": "b@gpu-b"}]


def run(state: str = "running", **extra: Any) -> dict[str, Any]:
    return {
        "state": state,
        "hosts": HOSTS,
        "attempts": [{"attempt": 1, "ended": None, "failure": None}],
        "launcher": {"host": "elsewhere", "pid": 1},
        **extra,
    }


def test_every_worker_exited_0_finishes_the_run(tmp_path: Path) -> None:
    changes = finished_record(run(), {0: 0, 1: 0}, tmp_path)
    assert changes is not None
    assert changes["state"] == "finished" and changes["exit_codes"] == {"0": 0, "1": 0}
    assert changes["failure"] is None and changes["attempts"][0]["ended"] == changes["finished"]


def test_a_worker_that_failed_fails_the_run_with_its_log_tail(tmp_path: Path) -> None:
    (tmp_path / "workers" / "1").mkdir(parents=True)
    (tmp_path / "workers" / "1" / "worker.log").write_text("start\nboom\n")
    changes = finished_record(run(), {0: 0, 1: -9}, tmp_path)
    assert changes is not None and changes["state"] == "failed"
    assert changes["failure"] == {
        "index": 1,
        "host": "b@gpu-b",
        "reason": "killed by SIGKILL",
        "log_tail": ["start", "boom"],
    }
    assert changes["attempts"][0]["failure"] == changes["failure"]


def test_nothing_changes_while_a_worker_has_no_exit_code_or_the_run_is_closed(
    tmp_path: Path,
) -> None:
    assert finished_record(run(), {0: 0}, tmp_path) is None
    assert finished_record(run(), {0: 0, 1: None}, tmp_path) is None
    for closed in ("finished", "failed", "stopped"):
        assert finished_record(run(closed), {0: 0, 1: 0}, tmp_path) is None


def test_a_live_launcher_on_this_machine_finishes_its_own_record(tmp_path: Path) -> None:
    fab = subprocess.Popen(
        [sys.executable, "-c", "import time; print(flush=True); time.sleep(60)", "fab"],
        stdout=subprocess.PIPE,
    )
    try:
        assert fab.stdout is not None and fab.stdout.readline() == b"\n"  # running, not forking
        here = {"host": socket.gethostname(), "pid": fab.pid}
        assert launcher_alive({"launcher": here})
        assert finished_record(run(launcher=here), {0: 0, 1: 0}, tmp_path) is None
        assert not launcher_alive({"launcher": {"host": "elsewhere", "pid": fab.pid}})
    finally:
        fab.kill()
        fab.wait()
    assert not launcher_alive({"launcher": here}), "a dead launcher finishes nothing"
