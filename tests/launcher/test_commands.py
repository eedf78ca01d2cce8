"""Shell commands: values with shell metacharacters arrive intact and never run as code.

These run the real commands with /bin/sh and a stand-in `trainer` package that records the
argv and environment it received.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher import commands
from launcher.hostdisk import HostDisk, closing_disk, parse_disk
from launcher.options import arg_value, int_or_none
from launcher.worker import Poll, ProcessState
from launcher.worker import local_poll as _local_poll
from runformat import EXIT_CODE_FILE, EXIT_DISK_FILE
from tests.launcher.helpers import small_disk, wait_for

ENDED = (EXIT_CODE_FILE, EXIT_DISK_FILE)

NASTY = [
    "plain",
    "with space",
    "$(touch PWNED)",
    "`touch PWNED`",
    "a;touch PWNED",
    "x' ; touch PWNED; '",
    '"double" $HOME \\ back',
    "new\nline",
    "*",
    '{"cluster": {"worker": ["a:1"]}}',
]

RECORDER = """
import json, os, sys
out = os.path.join(sys.argv[sys.argv.index("--run-dir") + 1], "got.json")
json.dump({"argv": sys.argv[1:], "env": dict(os.environ)}, open(out, "w"))
"""


def wait_group_gone(pgid: int, timeout: float) -> bool:
    """Killed processes stay zombies until their (new) parent reaps them: allow for that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def sh(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", command], cwd=cwd, capture_output=True, text=True, check=False, timeout=30
    )


@pytest.fixture
def fake_code_dir(tmp_path: Path) -> Path:
    """A folder with a `trainer` package that records its argv and environment."""
    pkg = tmp_path / "code" / "trainer"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(RECORDER)
    return tmp_path / "code"


def test_env_file_round_trips_every_value(tmp_path: Path) -> None:
    env = {f"V{i}": v for i, v in enumerate(NASTY)}
    (tmp_path / "env").write_text(commands.env_file_content(env))
    script = (
        ". ./env && " + sys.executable + " -c 'import json,os; print(json.dumps(dict(os.environ)))'"
    )
    got = json.loads(sh(script, tmp_path).stdout)
    assert {k: got[k] for k in env} == env
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("bad", ["1X", "A-B", "A B", "$(x)", ""])
def test_env_names_are_checked(bad: str) -> None:
    with pytest.raises(ValueError):
        commands.env_file_content({bad: "v"})


def test_start_command_passes_values_intact(tmp_path: Path, fake_code_dir: Path) -> None:
    run_dir = tmp_path / "runs with space" / "$(touch PWNED)"
    run_dir.mkdir(parents=True)
    env = {"TF_CONFIG": NASTY[-1], "SECRET": "x' ; touch PWNED; '"}
    commands_env = commands.env_file_path(str(run_dir), 1)
    Path(commands_env).write_text(commands.env_file_content(env))
    args = ["--dataset", "a;touch PWNED", "--data", "$(touch PWNED)"]
    cmd = commands.start_command(
        str(fake_code_dir), sys.executable, "trainer", str(run_dir), 1, args
    )
    assert sh(cmd, tmp_path).returncode == 0
    wdir = Path(commands.worker_dir(str(run_dir), 1))
    deadline = time.monotonic() + 20
    while not (wdir / "exit_code").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (wdir / "exit_code").read_text().strip() == "0"
    got = json.loads((run_dir / "got.json").read_text())
    assert got["argv"] == ["--run-dir", str(run_dir), *args]
    assert got["env"]["TF_CONFIG"] == env["TF_CONFIG"]
    assert got["env"]["SECRET"] == env["SECRET"]
    assert not Path(commands_env).exists(), "the env file is removed once read"
    assert not list(tmp_path.rglob("PWNED"))
    assert _local_poll(wdir) == "exit 0"


def test_start_and_stop_a_process_group(tmp_path: Path) -> None:
    """A worker that ignores TERM (as TensorFlow may) is killed after the grace period."""
    code = tmp_path / "code" / "trainer"
    code.mkdir(parents=True)
    ready = tmp_path / "ready"
    (code / "__init__.py").write_text("")  # a regular package: the project's trainer may not win
    (code / "__main__.py").write_text(
        "import signal, subprocess, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "subprocess.Popen(['sleep', '300'])\n"
        f"open({str(ready)!r}, 'w').close()\n"
        "time.sleep(300)\n"
    )
    run_dir = tmp_path / "run"
    Path(commands.env_file_path(str(run_dir), 0)).parent.mkdir(parents=True, exist_ok=True)
    Path(commands.env_file_path(str(run_dir), 0)).write_text("")
    cmd = commands.start_command(str(code.parent), sys.executable, "trainer", str(run_dir), 0, [])
    assert sh(cmd, tmp_path).returncode == 0
    wdir = run_dir / "workers" / "0"
    deadline = time.monotonic() + 10
    while _local_poll(wdir) != "alive" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _local_poll(wdir) == "alive"
    pgid = int((wdir / "pgid").read_text())
    # Private on a shared host: only the worker's user may read what it writes.
    for path in (run_dir, wdir, wdir / "worker.log", wdir / "pgid"):
        assert path.stat().st_mode & 0o077 == 0, (path, oct(path.stat().st_mode))
    wait_for(ready.exists, 60, "the worker ignoring TERM")
    t0 = time.monotonic()
    stop = sh(commands.stop_command(str(run_dir), 0, grace=1.0), tmp_path)
    took = time.monotonic() - t0
    assert (stop.returncode, stop.stdout.strip()) == (0, "stopped")
    # The promise: TERM, the grace period, then KILL, and back once the group is gone (at most
    # 5 s after KILL). Measured here: 1.3 s.
    assert 1.0 <= took < 1.0 + 5, took
    assert wait_group_gone(pgid, 10), "a killed process group is reaped"
    assert _local_poll(wdir) == "gone"


def test_stop_of_a_finished_worker_is_harmless(tmp_path: Path) -> None:
    wdir = tmp_path / "workers" / "0"
    wdir.mkdir(parents=True)
    (wdir / "pgid").write_text("999999\n")
    out = sh(commands.stop_command(str(tmp_path), 0, grace=0.2), tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "not running"


def test_stop_of_a_group_of_zombies_is_not_running(tmp_path: Path) -> None:
    """Where nothing reaps orphans, an ended worker stays a zombie: `kill` still succeeds on
    its group, but a second `fab stop` must say it was not running."""
    wdir = tmp_path / "workers" / "0"
    wdir.mkdir(parents=True)
    zombie = subprocess.Popen(["true"], start_new_session=True)
    try:
        deadline = time.monotonic() + 5
        while _proc_state(zombie.pid) != "Z" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _proc_state(zombie.pid) == "Z"
        (wdir / "pgid").write_text(str(zombie.pid))
        out = sh(commands.stop_command(str(tmp_path), 0, grace=0.2), tmp_path)
        assert out.returncode == 0 and out.stdout.strip() == "not running"
    finally:
        zombie.wait()


def _proc_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_stop_ends_a_frozen_worker_and_only_then_its_lock_goes(tmp_path: Path) -> None:
    """A SIGSTOPped process acts on TERM only once continued; the lock of its run stays
    while it lives, whoever asks to release it."""
    wdir = tmp_path / "run" / "workers" / "0"
    wdir.mkdir(parents=True)
    frozen = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        (wdir / "pgid").write_text(str(frozen.pid))
        frozen.send_signal(signal.SIGSTOP)
        wd = str(tmp_path / "wd")
        lock = commands.lock_command(wd, 5001, "R", str(tmp_path / "run"), 0)
        assert sh(lock, tmp_path).stdout.strip() == "acquired"
        assert sh(commands.unlock_command(wd, 5001, "R"), tmp_path).stdout.strip() == "kept"
        assert Path(commands.lock_path(wd, 5001)).exists()
        out = sh(commands.stop_command(str(tmp_path / "run"), 0, grace=0.4), tmp_path)
        assert out.stdout.strip() == "stopped"
        assert frozen.wait(5) == -signal.SIGTERM
        assert sh(commands.unlock_command(wd, 5001, "R"), tmp_path).stdout.strip() == "released"
        assert not Path(commands.lock_path(wd, 5001)).exists()
    finally:
        frozen.kill()
        frozen.wait()


def test_poll_command_matches_local_poll(tmp_path: Path) -> None:
    wdir = tmp_path / "workers" / "3"
    wdir.mkdir(parents=True)
    poll = commands.poll_command(str(tmp_path), 3)
    assert sh(poll, tmp_path).stdout.strip() == "pending" == _local_poll(wdir)
    (wdir / "pgid").write_text(str(os.getpgid(0)))
    assert sh(poll, tmp_path).stdout.strip() == "alive" == _local_poll(wdir)
    sleeper = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        (wdir / "pgid").write_text(str(sleeper.pid))
        assert sh(poll, tmp_path).stdout.strip() == "alive" == _local_poll(wdir)
        sleeper.send_signal(signal.SIGSTOP)
        time.sleep(0.2)
        assert sh(poll, tmp_path).stdout.strip() == "frozen" == _local_poll(wdir)
    finally:
        sleeper.kill()
        sleeper.wait()
    (wdir / "exit_code").write_text("137\n")
    assert sh(poll, tmp_path).stdout.strip() == "exit 137" == _local_poll(wdir)


def test_home_path_expands_only_the_tilde(tmp_path: Path) -> None:
    out = sh(f"echo {commands.home_path('~/a b/$(x)')}", tmp_path).stdout.strip()
    assert out == os.path.expanduser("~") + "/a b/$(x)"
    assert commands.expand_home("~/w", "/home/u") == "/home/u/w"
    assert commands.expand_home("/abs", "/home/u") == "/abs"


def test_trainer_args() -> None:
    args = commands.trainer_args({"epochs": 3, "batch_size": None, "dataset": "digits", "x": True})
    assert args == ["--epochs", "3", "--dataset", "digits", "--x"]


def test_lock_is_exclusive_and_stale_locks_are_taken_over(tmp_path: Path) -> None:
    wd = str(tmp_path / "wd")
    run_a, run_b = str(tmp_path / "a"), str(tmp_path / "b")
    assert sh(commands.lock_command(wd, 5000, "A", run_a, 0), tmp_path).stdout.strip() == "acquired"
    # A starting run (no pgid yet) holds its lock.
    assert sh(commands.lock_command(wd, 5000, "B", run_b, 0), tmp_path).stdout.strip() == "held A"
    # Its workers ran and are gone: the lock is stale.
    (tmp_path / "a" / "workers" / "0").mkdir(parents=True)
    (tmp_path / "a" / "workers" / "0" / "pgid").write_text("999999\n")
    assert sh(commands.lock_command(wd, 5000, "B", run_b, 0), tmp_path).stdout.strip() == (
        "taken-over A"
    )
    sh(commands.unlock_command(wd, 5000, "A"), tmp_path)  # not A's any more: kept
    assert Path(commands.lock_path(wd, 5000)).read_text().splitlines()[0] == "B"
    sh(commands.unlock_command(wd, 5000, "B"), tmp_path)
    assert not Path(commands.lock_path(wd, 5000)).exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--run-dir", "/elsewhere"], "--run-dir is set by the launcher"),
        (["--run-dir=/elsewhere"], "--run-dir is set by the launcher"),
        (["--run", "/elsewhere"], "unrecognized arguments: --run"),
        (["--epochs", "zero"], "--epochs"),
        (["--colour", "red"], "--colour"),
    ],
)
def test_trainer_options_are_checked_here(args: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        commands.check_trainer_args(args)
    commands.check_trainer_args(["--epochs", "2", "--dataset", "digits", "--backup"])


def test_cluster_json_reads_dataset_and_epochs_back_from_trainer_args() -> None:
    args = ["--dataset", "digits", "--epochs", "3", "--trainer-flag"]
    assert arg_value(args, "--dataset") == "digits"
    assert int_or_none(arg_value(args, "--epochs")) == 3
    assert arg_value(args, "--trainer-flag") is None  # a flag without a value
    assert arg_value([], "--epochs") is None
    assert int_or_none("three") is None
    assert int_or_none(None) is None


def test_locks_under_a_home_relative_workdir(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home)}

    def run(cmd: str) -> str:
        out = subprocess.run(["sh", "-c", cmd], env=env, capture_output=True, text=True)
        return out.stdout.strip()

    assert run(commands.lock_command("~/wd", 5002, "R", str(tmp_path / "run"), 0)) == "acquired"
    assert (home / "wd" / "locks" / "tf_port-5002.lock").exists()
    assert oct((home / "wd" / "locks").stat().st_mode & 0o777) == "0o700"
    assert run(commands.unlock_command("~/wd", 5002, "R")) == "released"
    assert not (home / "wd" / "locks" / "tf_port-5002.lock").exists()


def test_a_group_left_only_as_a_zombie_is_not_alive(tmp_path: Path) -> None:
    """Where nothing reaps orphans, an ended worker's shell stays a zombie: its lock must go."""
    release = tmp_path / "release"
    # This test is the parent and reaps it only at the end: a zombie in between, as under a
    # PID 1 that never reaps (this machine's PID 1 does: an orphan would just vanish).
    wait = f"while [ ! -e {release} ]; do sleep 0.05; done"
    group = subprocess.Popen(["sh", "-c", wait], start_new_session=True)
    try:
        pgid = str(group.pid)
        alive = f"if {commands.group_alive(pgid)}; then echo yes; else echo no; fi"
        assert sh(alive, tmp_path).stdout.strip() == "yes"  # waiting: alive
        release.touch()
        wait_for(lambda: _proc_state(group.pid) == "Z", 30, "the shell to end as a zombie")
        assert sh(alive, tmp_path).stdout.strip() == "no"
        assert _local_poll_for(tmp_path, pgid) == "gone"
    finally:
        group.wait()


def _local_poll_for(tmp_path: Path, pgid: str) -> str:
    wdir = tmp_path / "w"
    wdir.mkdir(exist_ok=True)
    (wdir / "pgid").write_text(pgid + "\n")
    return _local_poll(wdir)


def run_script(run_dir: Path, index: int, program: str) -> Path:
    """The worker's real script, with `program` in place of the trainer; its folder."""
    wdir = Path(commands.worker_dir(str(run_dir), index))
    wdir.mkdir(parents=True, exist_ok=True)
    Path(commands.env_file_path(str(run_dir), index)).write_text("")
    script = commands.worker_script("python3", "x", str(run_dir), index, [])
    argv = f"python3 -m x --run-dir {run_dir}"
    assert argv in script
    assert sh(script.replace(argv, program), run_dir).returncode == 0
    return wdir


def look(run_dir: Path, index: int) -> tuple[Poll, HostDisk | None, HostDisk | None]:
    """What `fab status` learns of a worker: its poll, its disk now and when it failed."""
    said = sh(commands.look_command(str(run_dir), index), run_dir).stdout
    now, ended = commands.split_look(said)
    return Poll.parse(now), parse_disk(now, str(run_dir)), parse_disk(ended, str(run_dir))


def test_a_failed_worker_leaves_its_full_disk_in_the_room_it_kept(tmp_path: Path) -> None:
    """The worker fills its folder and fails: the disk line (written into bytes reserved at
    the start) says full, and still does once the folder was emptied; a worker that
    finished leaves no disk line and gives the room back."""
    with small_disk(tmp_path / "disk", "2m") as disk:
        run_dir = disk / "run-full"
        run_dir.mkdir()
        wdir = run_script(run_dir, 1, f"(cat /dev/zero > {disk}/filler; exit 3)")
        assert (wdir / "exit_code").read_text().split() == ["3"]
        assert (wdir / EXIT_DISK_FILE).read_text().split() == ["disk", "0", "w"]
        (disk / "filler").unlink()
        poll, now, ended = look(run_dir, 1)
        assert poll == Poll(ProcessState.EXITED, 3)
        assert now is not None and not now.full, "room again"
        assert ended == HostDisk(str(run_dir), 0.0, True)
        told = closing_disk(now, ended)
        assert told is ended and told.message() == f"no space left in {run_dir} (0 MB free)"
        assert not [p for p in wdir.iterdir() if p.name.endswith((".reserve", ".tmp"))]

        finished = run_script(run_dir, 0, "true")
        assert sorted(p.name for p in finished.iterdir()) == ["exit_code", "pgid"]
        poll, now, ended = look(run_dir, 0)
        assert poll == Poll(ProcessState.EXITED, 0) and ended is None
        assert closing_disk(now, ended) is now and now is not None and not now.full

        # A restart clears the last attempt's disk line with its exit code.
        reset = sh(commands.reset_command(str(run_dir), 1, "--- restart ---"), run_dir)
        assert reset.returncode == 0 and not (wdir / EXIT_DISK_FILE).exists()
        assert look(run_dir, 1)[2] is None


def test_a_failed_worker_on_a_read_only_folder_leaves_its_disk_line_outside(
    tmp_path: Path,
) -> None:
    with small_disk(tmp_path / "disk", "2m") as disk:
        run_dir = disk / f"run-ro-{tmp_path.name}"
        run_dir.mkdir()
        outside = [Path(commands.exit_fallback_path(str(run_dir), 0, n)) for n in ENDED]
        try:
            run_script(run_dir, 0, f"(mount -o remount,ro {disk}; exit 1)")
            poll, now, ended = look(run_dir, 0)
            assert poll == Poll(ProcessState.EXITED, 1)
            assert ended is not None and not ended.writable
            assert closing_disk(now, ended) is now and now is not None and now.full
            assert "is not writable" in now.message()
            subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
            sh(commands.reset_command(str(run_dir), 0, "again"), run_dir)
            assert not any(p.exists() for p in outside), "a restart clears them too"
        finally:
            for path in outside:
                path.unlink(missing_ok=True)
