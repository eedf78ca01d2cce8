"""Job decisions from what the workers left on disk (real files, real LocalShell polling)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from launcher.backup import latest_backup
from launcher.display import Output
from launcher.failure import may_restart
from launcher.hosts import parse_hosts
from launcher.job import Job
from launcher.options import WatchOptions
from launcher.remote import LocalShell
from launcher.worker import Worker


def make_job(run_dir: Path, n: int, **watch: float) -> Job:
    hosts = parse_hosts("".join(f"localhost tf_port={7000 + i}\n" for i in range(n)))
    workers = [
        Worker(h, LocalShell(h), "python3", ".", str(run_dir), run_dir, [], {}) for h in hosts
    ]
    for i in range(n):
        (run_dir / "workers" / str(i)).mkdir(parents=True, exist_ok=True)
    return Job(workers, run_dir, {}, Output(io.StringIO(), live=False), WatchOptions(**watch))


def write(run_dir: Path, index: int, name: str, text: str) -> None:
    (run_dir / "workers" / str(index) / name).write_text(text)


@pytest.mark.parametrize(
    ("codes", "index", "reason"),
    [
        # The killed worker is the cause even when an aborted peer exits in the same tick.
        ({0: "1", 1: "137"}, 1, "killed by SIGKILL"),
        ({0: "0", 1: "2", 2: "1"}, 1, "exited with code 2"),
        ({0: "143", 1: "1"}, 0, "killed by SIGTERM"),
    ],
)
def test_first_failure_is_the_cause(
    tmp_path: Path, codes: dict[int, str], index: int, reason: str
) -> None:
    job = make_job(tmp_path, len(codes))
    for i, code in codes.items():
        write(tmp_path, i, "exit_code", code + "\n")
    job._tick()
    assert job.failure is not None
    assert (job.failure.index, job.failure.reason) == (index, reason)


def test_a_vanished_process_group_is_a_failure(tmp_path: Path) -> None:
    job = make_job(tmp_path, 2)
    write(tmp_path, 1, "pgid", "999999\n")  # no such group, and no exit code recorded
    job._tick()
    assert job.failure is not None and job.failure.index == 1
    assert "died without an exit code" in job.failure.reason


def test_all_zero_is_success(tmp_path: Path) -> None:
    job = make_job(tmp_path, 2)
    for i in range(2):
        write(tmp_path, i, "exit_code", "0\n")
    job._tick()
    assert job.failure is None and all(w.ended for w in job.workers)


def test_start_deadline_names_the_silent_worker(tmp_path: Path) -> None:
    job = make_job(tmp_path, 2, start_timeout=0.0, interval=0)
    for i in range(2):
        write(tmp_path, i, "pgid", f"{os.getpgid(0)}\n")  # alive: this test's own group
    write(tmp_path, 0, "status.json", '{"state": "starting", "step": 0}')
    job._watch()
    assert job.failure is not None and job.failure.index == 1
    assert "never reported (no status.json)" in job.failure.reason


def test_a_running_worker_without_progress_is_named(tmp_path: Path) -> None:
    now = [0.0]
    job = make_job(tmp_path, 2, stall_timeout=30)
    job.clock = lambda: now[0]
    for i in range(2):
        write(tmp_path, i, "status.json", '{"state": "running", "step": 5}')
    assert job._silent_worker() is None
    now[0] = 20.0
    write(tmp_path, 0, "status.json", '{"state": "running", "step": 9}')
    assert job._silent_worker() is None
    now[0] = 31.0
    silent = job._silent_worker()
    assert silent is not None and silent.index == 1


@pytest.mark.parametrize(
    ("exit_code", "restarts", "max_restarts", "expected"),
    [
        (-9, 0, 1, True),
        (1, 1, 2, True),
        (None, 0, 1, True),  # vanished or went silent
        (-9, 1, 1, False),  # none left
        (-9, 0, 0, False),  # the default: no restart
        (2, 0, 3, False),  # bad input fails again the same way
    ],
)
def test_may_restart(
    exit_code: int | None, restarts: int, max_restarts: int, expected: bool
) -> None:
    assert may_restart(exit_code, restarts, max_restarts) is expected


def test_reset_clears_the_last_attempt_and_keeps_its_log(tmp_path: Path) -> None:
    job = make_job(tmp_path, 1)
    worker = job.workers[0]
    for name, text in [("exit_code", "137\n"), ("pgid", "999999\n"), ("status.json", "{}")]:
        write(tmp_path, 0, name, text)
    write(tmp_path, 0, "worker.log", "epoch 2 done\n")
    job._tick()
    assert worker.ended and worker.exit_code == -9
    worker.reset("--- restart 1: attempt 2 ---")
    left = sorted(p.name for p in (tmp_path / "workers" / "0").iterdir())
    assert left == ["worker.log"]
    log = (tmp_path / "workers" / "0" / "worker.log").read_text()
    assert log == "epoch 2 done\n--- restart 1: attempt 2 ---\n"
    assert not worker.ended and worker.exit_code is None
    assert worker.poll() == "pending"


def test_only_the_newest_checkpoint_is_shared(tmp_path: Path) -> None:
    chief = tmp_path / "chief"
    scratch = tmp_path / "workertemp_1" / "chief"
    for folder in (chief, scratch):
        folder.mkdir(parents=True)
        (folder / "checkpoint").write_text(
            'model_checkpoint_path: "ckpt-3"\nall_model_checkpoint_paths: "ckpt-3"\n'
        )
    for name in ("ckpt-2.index", "ckpt-3.index", "ckpt-3.data-00000-of-00001", "ckpt-30.index"):
        (chief / name).write_bytes(b"x")
        (scratch / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in latest_backup(tmp_path)] == [
        "chief/checkpoint",
        "chief/ckpt-3.data-00000-of-00001",
        "chief/ckpt-3.index",
    ]
    assert latest_backup(tmp_path / "missing") == []
