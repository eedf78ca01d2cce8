"""A worker host's disk: the exit code a worker's shell records on a real full (and a
read-only) tmpfs, the poll's disk line, the notices and record while the job goes on, the
failure it names, and the ages a host whose clock is off shows. Pure logic, and real shells."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from launcher import commands
from launcher.display import WorkerRow, ago
from launcher.failure import WorkerView, exit_failure, may_restart
from launcher.hostdisk import FULL_MB, REMEMBER_SEC, DiskWatch, HostDisk, local_disk, parse_disk
from launcher.probe import MIN_FREE_ENV, MIN_FREE_MB, free_needed
from launcher.worker import Poll, ProcessState, local_poll
from tests.launcher.helpers import small_disk


def sh(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=False)


def run_worker(run_dir: Path, index: int, program: str) -> None:
    """The worker's real script with `program` in place of the trainer."""
    wdir = run_dir / "workers" / str(index)
    wdir.mkdir(parents=True, exist_ok=True)
    Path(commands.env_file_path(str(run_dir), index)).write_text("")
    script = commands.worker_script("python3", "x", str(run_dir), index, [])
    argv = f"python3 -m x --run-dir {run_dir}"
    assert argv in script
    assert sh(script.replace(argv, program)).returncode == 0


def test_the_exit_code_is_recorded_on_a_disk_filled_by_the_worker(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "64k") as disk:
        run_dir = disk / "run-a"
        run_dir.mkdir()
        run_worker(run_dir, 1, f"(cat /dev/zero > {run_dir}/filler; exit 3)")
        assert sh(f"df -Pk {disk} | awk 'NR==2 {{print $4}}'").stdout.strip() == "0"
        poll = sh(commands.poll_command(str(run_dir), 1)).stdout.strip()
        assert poll == "exit 3"
        assert local_poll(run_dir / "workers" / "1") == "exit 3"
        assert Poll.parse(poll) == Poll(ProcessState.EXITED, 3)


def test_a_folder_that_takes_nothing_leaves_the_exit_code_outside(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "64k") as disk:
        run_dir = disk / f"run-ro-{tmp_path.name}"
        run_dir.mkdir()
        remount = ["mount", "-o", "remount,ro", str(disk)]
        run_worker(run_dir, 0, f"({' '.join(remount)}; exit 0)")
        fallback = Path(commands.exit_fallback_path(str(run_dir), 0))
        try:
            assert fallback.read_text().strip() == "0"
            assert sh(commands.poll_command(str(run_dir), 0)).stdout.strip() == "exit 0"
            wdir = run_dir / "workers" / "0"
            assert local_poll(wdir, fallback) == "exit 0"
            assert sh(commands.reset_command(str(run_dir), 0, "again")).returncode != 0
        finally:
            fallback.unlink(missing_ok=True)


def test_the_disk_line_comes_with_the_poll(tmp_path: Path) -> None:
    out = sh(f"{commands.poll_command(str(tmp_path), 0)}; {commands.disk_command(str(tmp_path))}")
    lines = out.stdout.splitlines()
    assert lines[0] == "pending" and Poll.parse(out.stdout).state is ProcessState.PENDING
    disk = parse_disk(out.stdout, str(tmp_path))
    assert disk is not None and disk.writable and disk.free_mb and disk.free_mb > 0
    local = local_disk(str(tmp_path))
    assert local is not None and local.writable and not local.full
    missing = parse_disk(sh(commands.disk_command(str(tmp_path / "no"))).stdout, "/no")
    assert missing == HostDisk("/no", None) and not missing.full


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("disk 0 w", HostDisk("/r", 0.0, True)),
        ("exit 0\ndisk 2048 w", HostDisk("/r", 2.0, True)),
        ("disk 99999 ro", HostDisk("/r", 99999 / 1024, False)),
        ("disk  w", HostDisk("/r", None, True)),
        ("alive", None),
    ],
)
def test_parse_disk(line: str, expected: HostDisk | None) -> None:
    assert parse_disk(line, "/r") == expected


def test_full_means_less_than_a_megabyte_or_no_writes() -> None:
    assert HostDisk("/r", FULL_MB - 0.1).full
    assert not HostDisk("/r", FULL_MB).full
    assert not HostDisk("/r", None).full
    assert HostDisk("/r", 900.0, writable=False).full
    assert HostDisk("/r", 0.2).message() == "no space left in /r (0 MB free)"
    assert "not writable" in HostDisk("/r", 5.0, False).message()
    assert HostDisk("/r", 0.04).record() == {
        "full": True,
        "path": "/r",
        "free_mb": 0.0,
        "message": "no space left in /r (0 MB free)",
    }
    assert HostDisk("/r", 12.34).record() == {
        "full": False,
        "path": "/r",
        "free_mb": 12.3,
        "message": "",
    }


def test_the_watch_says_each_change_once_and_records_it() -> None:
    watch = DiskWatch()
    assert watch.seen(HostDisk("/r", 50.0), 0) is None
    assert watch.changed(None) is None, "room from the start: nothing to record"
    said = watch.seen(HostDisk("/r", 0.0), 1)
    assert said is not None and said.startswith("no space left in /r (0 MB free)")
    assert watch.seen(HostDisk("/r", 0.0), 2) is None
    record = watch.changed(None)
    assert record is not None and record["full"] is True
    assert watch.changed(record) is None, "recorded once"
    assert watch.full and watch.trouble(3) == "no space left in /r (0 MB free)"
    assert watch.seen(HostDisk("/r", 30.0), 4) == "has room again in /r (30 MB free)"
    assert watch.changed(record) == {"full": False, "path": "/r", "free_mb": 30.0, "message": ""}
    assert not watch.full
    # A worker that fails soon after is still named with the full disk (its failure may
    # have freed what it was writing); long after, or in a new attempt, not.
    assert watch.trouble(4 + 1) == "no space left in /r (0 MB free)"
    assert watch.trouble(2 + REMEMBER_SEC + 1) is None
    watch.clear()
    assert watch.trouble(5) is None
    assert watch.seen(None, 6) is None


def view(index: int, state: ProcessState, code: int | None, disk: str | None = None) -> WorkerView:
    return WorkerView(index, f"h{index}", state, code, None, {"state": "failed"}, None, disk)


def test_a_failure_on_a_full_disk_names_the_disk_first_and_is_not_retried() -> None:
    full = "no space left in /r (0 MB free)"
    aborted, killed = ProcessState.EXITED, ProcessState.EXITED
    found = exit_failure([view(0, aborted, 1, full), view(1, killed, -9)])
    assert found is not None and found.index == 0
    assert found.line() == f"worker 0 (h0) {full}; exited with code 1"
    assert not found.retry and not may_restart(1, 0, 1, found.retry)
    gone = exit_failure([view(0, ProcessState.ALIVE, None), view(1, ProcessState.GONE, None, full)])
    assert gone is not None and gone.reason.startswith(full + "; died without an exit code")
    plain = exit_failure([view(0, aborted, 1), view(1, killed, -9)])
    assert plain is not None and plain.index == 1 and plain.retry
    assert exit_failure([view(0, ProcessState.EXITED, 0, full)]) is None, "finished is fine"


def test_the_row_shows_disk_trouble_beside_the_phase() -> None:
    row = WorkerRow(1, "h", {"state": "running", "phase": "training"}, disk="disk full")
    assert row.phase == "training, disk full"
    assert row.plain().startswith("[1 h] disk full  training")
    assert WorkerRow(1, "h", None).phase == "waiting"


def test_ages_use_the_measured_clock_offset_and_are_never_negative() -> None:
    now = 1_000_000.0
    assert ago(now, now + 3600 - 12, 3600.0) == "12 s ago"
    assert ago(now, now + 2554, None) == "0 s ago"
    assert ago(now, now - 5, None) == "5 s ago"
    assert ago(now, None, 3600.0) == "-"
    assert ago(now, True, None) == "-"


def test_the_free_space_a_run_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MIN_FREE_ENV, raising=False)
    assert free_needed() == MIN_FREE_MB
    assert free_needed(max_restarts=1) > MIN_FREE_MB
    monkeypatch.setenv(MIN_FREE_ENV, "20")
    assert free_needed(max_restarts=3) == 20
    monkeypatch.setenv(MIN_FREE_ENV, "lots")
    assert free_needed() == MIN_FREE_MB
