"""Finishing a run's record after its launcher died (pure logic; the real runs over SSH are
test_reliability.py::test_status_finishes_the_record_of_a_run_whose_launcher_died, and its
second run, whose worker failed on a full disk)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from launcher.failure import WorkerView, exit_failure
from launcher.hostdisk import HostDisk
from launcher.record import finished_record, launcher_alive
from launcher.worker import ProcessState

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


FULL = HostDisk("/home/b/tfjobs/runs/r1", 0.0)


def test_a_full_disk_comes_first_as_the_live_watch_says_it(tmp_path: Path) -> None:
    """Worker 1's folder was full when it failed (its shell's own line, though emptied since):
    it is the cause before worker 0's exit, worded as the live watch words it, and its
    `disk` is recorded as the watch records it."""
    roomy = HostDisk("/home/a/tfjobs/runs/r1", 900.0)
    changes = finished_record(run(), {0: 1, 1: 1}, tmp_path, {0: roomy, 1: FULL})
    assert changes is not None and changes["state"] == "failed"
    failure = changes["failure"]
    assert (failure["index"], failure["host"]) == (1, "b@gpu-b")
    said = exit_failure([WorkerView(1, "b@gpu-b", ProcessState.EXITED, 1, disk=FULL.message())])
    assert said is not None and failure["reason"] == said.reason
    assert (
        failure["reason"]
        == "no space left in /home/b/tfjobs/runs/r1 (0 MB free); exited with code 1"
    )
    assert [h.get("disk") for h in changes["hosts"]] == [None, FULL.record()]
    assert changes["hosts"][1]["name"] == "b@gpu-b", "the rest of the entry stays"
    read_only = HostDisk("/r", 50.0, writable=False)
    changes = finished_record(run(), {0: 0, 1: 1}, tmp_path, {1: read_only})
    assert changes is not None
    assert changes["failure"]["reason"].startswith("/r is not writable (")


def test_disk_records_change_only_when_fullness_does(tmp_path: Path) -> None:
    recorded = [HOSTS[0], {**HOSTS[1], "disk": FULL.record()}]
    same = finished_record(run(hosts=recorded), {0: 0, 1: 1}, tmp_path, {1: FULL})
    assert same is not None and "hosts" not in same, "recorded full already"
    room = HostDisk(FULL.path, 30.0)
    cleared = finished_record(run(hosts=recorded), {0: 0, 1: 0}, tmp_path, {1: room})
    assert cleared is not None and cleared["state"] == "finished"
    assert cleared["hosts"][1]["disk"] == room.record() and not room.record()["full"]
    plain = finished_record(run(), {0: 0, 1: 2}, tmp_path, {0: room, 1: room})
    assert plain is not None and "hosts" not in plain
    assert plain["failure"]["reason"] == "exited with code 2"


def test_a_killed_worker_is_the_cause_as_in_the_live_watch(tmp_path: Path) -> None:
    """Its peers abort with exit 1 within a second: the killed one is named, not the first."""
    changes = finished_record(run(), {0: 1, 1: -9}, tmp_path)
    assert changes is not None and changes["failure"]["index"] == 1
