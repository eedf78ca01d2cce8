"""What a job survives over the SSH test hosts (tests/sshcluster.py), with the real `fab` and
real workers: a dropped SSH session, a paused launcher, a full local disk, a hostile worker
host, a killed launcher with a frozen worker, a killed launcher whose worker then failed on
its host's full disk, and another user of the host. Every test checks the outcome, that
nothing mirrored differs from the host's copy, and that nothing is left.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from launcher.hostdisk import FULL_MB
from launcher.sync import mirrored
from tests.conftest import Firewall
from tests.launcher.helpers import (
    FAST,
    UNTIL_STOPPED,
    check_model_loads,
    fab_env,
    fill_disk,
    read_json,
    run_dir_appeared,
    run_fab,
    small_disk,
    start_fab,
    stop_process,
    training,
    wait_for,
)
from tests.sshcluster import SshCluster, TestHost, free_ports, ssh_session_pids

pytestmark = pytest.mark.slow

# Long enough to span the scenarios below on a busy 2-core machine, short enough to finish.
STEPS = ["--batch-size", "8", "--trainer-args", "--no-validation"]
TRAIN_WAIT = 180


@pytest.fixture
def ssh_env(ssh_cluster: SshCluster) -> dict[str, str]:
    return fab_env(TFCLUSTER_KNOWN_HOSTS=str(ssh_cluster.known_hosts))


@pytest.fixture
def two_hosts(ssh_cluster: SshCluster, ssh_env: dict[str, str], tmp_path: Path) -> SshCluster:
    """Hosts 1 and 2 with fresh homes (so deploy creates the workdir), the code deployed."""
    for host in ssh_cluster.hosts[:2]:
        ssh_cluster.reset_home(host)
    ssh_cluster.hosts_file(tmp_path / "hosts.txt", 2)
    out = run_fab(tmp_path, "deploy", env=ssh_env, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    return ssh_cluster


class Lines:
    """The output of a running `fab`, read by a thread so that a test can wait for a line."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def wait(self, pattern: str, timeout: float) -> str:
        return wait_for(
            lambda: next((line for line in self.lines if re.search(pattern, line)), None),
            timeout,
            f"a line matching {pattern!r}",
        )

    def join(self) -> None:
        self._thread.join(30)


def wait_exit(proc: subprocess.Popen[str], out: Lines, timeout: float) -> int:
    """The exit code of `fab`, or a failure that shows what it printed."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"fab still runs after {timeout} s:\n{out.text[-5000:]}") from None


@contextmanager
def fab_train(
    cwd: Path, env: dict[str, str], *args: str
) -> Iterator[tuple[subprocess.Popen[str], Lines]]:
    proc = start_fab(cwd, "train", *args, env=env)
    lines = Lines(proc)
    try:
        yield proc, lines
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)  # a test that failed while it was paused
        stop_process(proc)
        lines.join()


def orphaned_run(cwd: Path, env: dict[str, str], *args: str) -> Path:
    """The run directory of `fab train ARGS` whose launcher was killed (SIGKILL to its own
    pid) once both workers trained: the workers go on with nobody watching them."""
    runs = cwd / "runs"
    before = set(runs.iterdir()) if runs.is_dir() else set()

    def new_run() -> Path | None:
        return next((p.parent for p in runs.glob("*/cluster.json") if p.parent not in before), None)

    with fab_train(cwd, env, *args) as (proc, _):
        run_dir = wait_for(new_run, 60, "the run directory")
        wait_for(lambda: training(run_dir, 2), TRAIN_WAIT, "every worker training")
        proc.kill()
        proc.wait(30)
    return run_dir


def remote_run(host: TestHost, run_id: str) -> Path:
    return host.home / "tfjobs" / "runs" / run_id


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_under(root: Path) -> dict[str, str]:
    """Regular files under root (links not followed) by relative path, with their sha256."""
    out = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            out[path.relative_to(root).as_posix()] = sha256(path)
    return out


def assert_workers_mirrored(run_dir: Path, hosts: list[TestHost]) -> int:
    """Every worker's folder is here byte for byte, and nothing else of it; returns how many
    files were compared."""
    compared = 0
    for i, host in enumerate(hosts):
        remote = remote_run(host, run_dir.name)
        theirs = {
            k: v
            for k, v in files_under(remote / "workers" / str(i)).items()
            if k.isprintable() and mirrored(k)
        }
        assert files_under(run_dir / "workers" / str(i)) == theirs, host.name
        compared += len(theirs)
    return compared


def assert_mirror_equals_hosts(run_dir: Path, hosts: list[TestHost]) -> int:
    """Every file a host may send is here byte for byte, and nothing else of it; returns
    how many files were compared."""
    compared = assert_workers_mirrored(run_dir, hosts)
    chief = remote_run(hosts[0], run_dir.name)
    for name in ("model.h5", "metrics.json"):
        assert sha256(run_dir / name) == sha256(chief / name), name
    assert files_under(run_dir / "tensorboard") == files_under(chief / "tensorboard")
    return compared + 2 + len(files_under(chief / "tensorboard"))


def assert_nothing_left(cluster: SshCluster, hosts: list[TestHost], run_dir: Path) -> None:
    for host in hosts:
        assert cluster.wait_idle(host, timeout=15) == [], host.name
        locks = host.home / "tfjobs" / "locks"
        assert not locks.exists() or list(locks.iterdir()) == [], (host.name, "lock left")
    assert not [p for p in run_dir.rglob("*") if p.name.endswith((".sync", ".tmp"))]


def page_advice(run_dir: Path) -> str:
    """What the dashboard's "What to do next" says of a real failed run (dashboard.triage)."""
    from dashboard.cluster import run_rows
    from dashboard.runs import load_run
    from dashboard.triage import failure_story

    run = load_run(run_dir)
    story = failure_story(run, run_rows(run, {}, time.time()))
    assert story is not None, run_dir
    return " ".join(story.advice)


def plant(cluster: SshCluster, host: TestHost, run_id: str, files: dict[str, str]) -> None:
    """Write files into the host's run directory as its own user (a compromised host)."""
    script = ["umask 077", f"cd ~/tfjobs/runs/{run_id}"]
    for rel, content in files.items():
        script.append(f"mkdir -p \"$(dirname '{rel}')\" && printf %s '{content}' > '{rel}'")
    out = cluster.run_as(host, " && ".join(script))
    assert out.returncode == 0, out.stderr


def test_session_drop_pause_and_a_hostile_host_leave_the_job_whole(
    two_hosts: SshCluster,
    ssh_env: dict[str, str],
    tmp_path: Path,
    record_figures: Callable[..., None],
) -> None:
    """One run: host 2 plants files it must not send and its SSH sessions are killed; the
    launcher is paused (SIGSTOP) for 20 s. The job finishes, and another user of the hosts
    cannot read any of it."""
    chief, other = two_hosts.hosts[0], two_hosts.hosts[1]
    args = [*FAST, *STEPS, "--epochs", "3", "--steps-per-epoch", "50"]
    t_start = time.monotonic()
    with fab_train(tmp_path, ssh_env, *args) as (proc, out):
        run_dir = wait_for(lambda: run_dir_appeared(tmp_path), 60, "the run directory")
        wait_for(lambda: training(run_dir, 2), TRAIN_WAIT, "every worker training")
        run_id = run_dir.name

        # A network blip: the sshd processes serving host 2's sessions die, the worker lives.
        sessions = ssh_session_pids(other)
        assert sessions, "the launcher holds SSH sessions to host 2"
        t_drop = time.monotonic()
        for pid in sessions:
            os.kill(pid, signal.SIGKILL)

        # Meanwhile both hosts plant files that are not theirs to send.
        planted = {
            "cluster.json": '{"state": "stopped"}',
            "model.h5": "0123456789",
            "launcher.log": "forged",
            "workers/0/status.json": '{"state": "failed"}',
        }
        plant(two_hosts, other, run_id, planted)
        plant(two_hosts, chief, run_id, {"workers/1/model.h5": "0123456789"})
        remote = remote_run(other, run_id)
        os.symlink("/etc/passwd", remote / "workers" / "1" / "passwd")
        (remote / "workers" / "1" / "bad\nname").write_text("x")

        reconnected = out.wait(rf"\[1 {other.user}@[^]]*\] .*(reconnected|contact restored)", 120)
        reconnect_sec = time.monotonic() - t_drop

        # The laptop sleeps: the launcher is stopped for 20 s; the workers go on (or finish).
        chief_status = remote_run(chief, run_id) / "workers" / "0" / "status.json"
        before = read_json(chief_status) or {}
        os.kill(proc.pid, signal.SIGSTOP)
        time.sleep(20)
        after = read_json(chief_status) or {}
        os.kill(proc.pid, signal.SIGCONT)
        code = wait_exit(proc, out, 600)
    took = time.monotonic() - t_start
    text = out.text
    assert code == 0, text[-4000:]
    assert "Traceback" not in text
    moved = after.get("step", 0) > before.get("step", 0) or after.get("state") == "finished"
    assert moved, (before, after)

    # Refused, each named with its host and path; none of it reached this machine.
    for rel in ("'cluster.json'", "'model.h5'", "'launcher.log'", "'workers/0/status.json'"):
        assert re.search(rf"WARNING: \[1 {other.user}@.*refused .*{re.escape(rel)}", text), rel
    assert re.search(rf"WARNING: \[0 {chief.user}@.*refused .*'workers/1/model\.h5'", text)
    assert re.search(r"refused .*'workers/1/passwd': a link", text)
    assert re.search(r"refused .*'workers/1/bad\\nname': control character", text)
    cluster = read_json(run_dir / "cluster.json")
    assert cluster["state"] == "finished" and cluster["exit_codes"] == {"0": 0, "1": 0}
    assert "forged" not in (run_dir / "launcher.log").read_text()
    compared = assert_mirror_equals_hosts(run_dir, [chief, other])
    check_model_loads(run_dir / "model.h5")
    assert_nothing_left(two_hosts, [chief, other], run_dir)

    # Another user of the host (home opened to everyone, as on many shared hosts).
    intruder = two_hosts.hosts[2]
    readable = []
    home_mode = chief.home.stat().st_mode & 0o777
    os.chmod(chief.home, 0o755)
    try:
        for rel in (
            "",
            "runs",
            f"runs/{run_id}",
            f"runs/{run_id}/workers/0/worker.log",
            f"runs/{run_id}/model.h5",
        ):
            path = f"{chief.home}/tfjobs/{rel}"
            res = two_hosts.run_as(intruder, f"ls {path} || cat {path}")
            if res.returncode == 0:
                readable.append(rel)
    finally:
        os.chmod(chief.home, home_mode)
    assert readable == [], readable
    loose = [
        str(p)
        for p in (chief.home / "tfjobs").rglob("*")
        if p.stat().st_mode & 0o077 and not p.is_symlink()
    ]
    assert (chief.home / "tfjobs").stat().st_mode & 0o777 == 0o700
    assert loose == [], loose[:5]

    record_figures(
        11,
        case="SSH sessions of one host killed mid-run",
        reconnect_sec=round(reconnect_sec, 1),
        exit_code=code,
        files_equal_by_sha256=compared,
        job_sec=round(took, 1),
        note=reconnected[-120:],
        processes_left=0,
        locks_left=0,
    )
    record_figures(
        12,
        case="launcher paused (SIGSTOP) 20 s",
        paused_sec=20,
        worker_steps_during_pause=after.get("step", 0) - before.get("step", 0),
        workers_finished_during_pause=after.get("state") == "finished",
        exit_code=code,
    )
    refused = len(re.findall(r"WARNING: .* refused ", text))
    record_figures(14, case="planted files from hosts", refused=refused, model_is_chiefs=True)
    record_figures(17, case="another user of the host", readable_paths=0, loose_modes=0)


def test_a_full_local_disk_keeps_the_job_and_brings_everything_home(
    two_hosts: SshCluster,
    ssh_env: dict[str, str],
    tmp_path: Path,
    record_figures: Callable[..., None],
) -> None:
    """The runs folder fills up mid-run: the launcher warns, the workers train on; when the
    job ends it waits for space, then brings every file home."""
    chief, other = two_hosts.hosts[0], two_hosts.hosts[1]
    args = [*FAST, *STEPS, "--epochs", "2", "--steps-per-epoch", "40"]
    with small_disk(tmp_path / "runs", "32m") as runs:  # model.h5 alone is 8.4 MB
        with fab_train(tmp_path, ssh_env, *args) as (proc, out):
            run_dir = wait_for(lambda: run_dir_appeared(tmp_path), 60, "the run directory")
            wait_for(lambda: training(run_dir, 2), TRAIN_WAIT, "every worker training")
            filler = fill_disk(runs)
            out.wait("WARNING: .*No space left on device", 60)
            ended = [
                remote_run(h, run_dir.name) / f"workers/{i}/exit_code"
                for i, h in enumerate([chief, other])
            ]
            wait_for(lambda: all(p.exists() for p in ended), TRAIN_WAIT, "both workers ending")
            waiting = out.wait("waiting for disk space", 60)
            assert proc.poll() is None, "the launcher waits for space instead of giving up"
            t_free = time.monotonic()
            filler.unlink()
            code = wait_exit(proc, out, 120)
            done_sec = time.monotonic() - t_free
        text = out.text
        assert code == 0, text[-4000:]
        assert "Traceback" not in text
        cluster = read_json(run_dir / "cluster.json")
        assert cluster["state"] == "finished", cluster
        compared = assert_mirror_equals_hosts(run_dir, [chief, other])
        assert "waiting for disk space" in (run_dir / "launcher.log").read_text(), (
            "the log caught up with what was printed while the disk was full"
        )
        assert_nothing_left(two_hosts, [chief, other], run_dir)
    record_figures(
        13,
        case="runs folder full mid-run (tmpfs)",
        exit_code=code,
        finished_sec_after_space=round(done_sec, 1),
        files_equal_by_sha256=compared,
        partial_files_left=0,
        processes_left=0,
        locks_left=0,
        note=waiting[-100:],
    )


def test_fab_stop_ends_a_frozen_worker_of_a_killed_launcher_on_a_full_disk(
    two_hosts: SshCluster,
    ssh_env: dict[str, str],
    tmp_path: Path,
    record_figures: Callable[..., None],
) -> None:
    """The machine that ran `fab train` went away: the run is found, fetched and followed
    from here, and `fab stop` ends it even with a worker frozen and this disk full."""
    chief, other = two_hosts.hosts[0], two_hosts.hosts[1]
    with small_disk(tmp_path / "runs", "8m") as runs:
        run_dir = orphaned_run(tmp_path, ssh_env, *UNTIL_STOPPED)
        status = run_fab(tmp_path, "status", env=ssh_env, timeout=60)
        assert status.returncode == 0 and status.stdout.count(" alive ") == 2, status.stdout
        log = run_dir / "workers" / "1" / "worker.log"
        written = (remote_run(other, run_dir.name) / "workers" / "1" / "worker.log").stat().st_size
        fetch = run_fab(tmp_path, "fetch", env=ssh_env, timeout=60)
        assert fetch.returncode == 0, fetch.stderr
        assert log.stat().st_size >= written, "every byte the worker had written came back"
        follower = start_fab(tmp_path, "fetch", "--follow", "--interval", "0.5", env=ssh_env)
        try:
            frozen = read_json(run_dir / "workers" / "1" / "status.json")["pid"]
            os.kill(frozen, signal.SIGSTOP)
            filler = fill_disk(runs)
            t0 = time.monotonic()
            stop = run_fab(tmp_path, "stop", "--grace", "3", env=ssh_env, timeout=120)
            took = time.monotonic() - t0
            followed, _ = follower.communicate(timeout=60)
        finally:
            stop_process(follower)
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert "Traceback" not in stop.stdout + stop.stderr
        assert re.search(rf"\[1 {other.user}@.*\] stopped \(was frozen\)", stop.stdout), stop.stdout
        assert "No space left on device" in stop.stdout + stop.stderr
        # The follower ends with the run, and says what it could not write here.
        assert follower.returncode == 1 and "Traceback" not in followed, followed
        assert "fetch incomplete: " in followed and "make room and fetch again" in followed
        assert_nothing_left(two_hosts, [chief, other], run_dir)
        filler.unlink()
        fetched = run_fab(tmp_path, "fetch", env=ssh_env, timeout=60)
        assert fetched.returncode == 0 and "fetched" in fetched.stdout, fetched.stderr
        assert_workers_mirrored(run_dir, [chief, other])
        again = run_fab(tmp_path, "stop", env=ssh_env, timeout=120)
        assert again.returncode == 0 and again.stdout.count("not running") == 2, again.stdout
        assert read_json(run_dir / "cluster.json")["state"] == "stopped"
    record_figures(
        15,
        case="fab stop: launcher killed, worker frozen, local disk full",
        stop_sec=round(took, 1),
        processes_left=0,
        locks_left=0,
    )


def test_status_finishes_the_record_of_a_run_whose_launcher_died(
    two_hosts: SshCluster,
    ssh_env: dict[str, str],
    tmp_path: Path,
    record_figures: Callable[..., None],
) -> None:
    chief, other = two_hosts.hosts[0], two_hosts.hosts[1]
    # Bad trainer options are refused here, before any host is touched.
    for bad, said in (
        (["--trainer-args", "--run-dir /tmp/elsewhere"], "--run-dir is set by the launcher"),
        (["--epochs", "0"], "--epochs"),
    ):
        refused = run_fab(tmp_path, "train", *bad, env=ssh_env, timeout=120)
        assert refused.returncode == 2 and said in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
    assert not (tmp_path / "runs").exists()
    assert not any((h.home / "tfjobs" / "runs").exists() for h in (chief, other))
    run_dir = orphaned_run(tmp_path, ssh_env, *FAST, "--epochs", "2", "--steps-per-epoch", "10")
    ended = [
        remote_run(h, run_dir.name) / f"workers/{i}/exit_code" for i, h in enumerate([chief, other])
    ]
    wait_for(lambda: all(p.exists() for p in ended), TRAIN_WAIT, "both workers ending")
    assert read_json(run_dir / "cluster.json")["state"] == "running"
    status = run_fab(tmp_path, "status", env=ssh_env, timeout=120)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "finished" in status.stdout.splitlines()[0], status.stdout
    fetch = run_fab(tmp_path, "fetch", env=ssh_env, timeout=120)
    assert fetch.returncode == 0, fetch.stderr
    cluster = read_json(run_dir / "cluster.json")
    assert cluster["state"] == "finished" and cluster["exit_codes"] == {"0": 0, "1": 0}
    assert cluster["finished"] is not None
    stop = run_fab(tmp_path, "stop", env=ssh_env, timeout=120)
    assert stop.returncode == 0 and stop.stdout.count("not running") == 2, stop.stdout
    assert read_json(run_dir / "cluster.json")["state"] == "finished", "stop never relabels"
    assert_mirror_equals_hosts(run_dir, [chief, other])
    assert_nothing_left(two_hosts, [chief, other], run_dir)
    record_figures(
        16,
        case="launcher killed, workers finished; fab status",
        state="finished",
        relabelled_by_stop=False,
        processes_left=0,
        locks_left=0,
    )

    # 2. Again, worker 1's runs folder on a small disk of its own: it fills while both train
    # with backups, worker 1 fails on it (its peer then too), and it is emptied before anyone
    # looks. The record names the full folder first, from the line worker 1's shell left.
    args = [*FAST, *STEPS, "--epochs", "3", "--steps-per-epoch", "50", "--max-restarts", "1"]
    env = {**ssh_env, "TFCLUSTER_MIN_FREE_MB": "1"}  # fab check's 1000 MB: not on 16 MB
    with host_runs_disk(other, "16m") as disk:
        run_dir = orphaned_run(tmp_path, env, *args)
        filler = fill_disk(disk)
        t_full = time.monotonic()
        ended = [remote_run(h, run_dir.name) / f"workers/{i}" for i, h in enumerate([chief, other])]
        wait_for(lambda: all((d / "exit_code").exists() for d in ended), TRAIN_WAIT, "both ending")
        failed_sec = time.monotonic() - t_full
        left = (ended[1] / "exit_disk").read_text().split()
        filler.unlink()
        status = run_fab(tmp_path, "status", env=env, timeout=120)
        fetch = run_fab(tmp_path, "fetch", env=env, timeout=120)
        assert fetch.returncode == 0, fetch.stdout + fetch.stderr
        assert_workers_mirrored(run_dir, [chief, other])
    assert status.returncode == 0 and "Traceback" not in status.stdout + status.stderr
    cluster = read_json(run_dir / "cluster.json")
    folder = cluster["hosts"][1]["run_dir"]
    assert folder == str(disk / run_dir.name), cluster["hosts"][1]
    cause = f"no space left in {folder} (0 MB free); exited with code 1"
    assert cluster["state"] == "failed" and cluster["exit_codes"]["1"] == 1, cluster
    failure = cluster["failure"]
    assert (failure["index"], failure["reason"]) == (1, cause), (failure, left)
    assert cluster["attempts"][-1]["failure"] == failure
    disk = dict(cluster["hosts"][1]["disk"])
    assert disk.pop("free_mb") < FULL_MB, cluster["hosts"][1]  # the last few KB it measured
    assert disk == {
        "full": True,
        "path": folder,
        "message": f"no space left in {folder} (0 MB free)",
    }
    assert cluster["hosts"][0].get("disk") is None
    assert left == ["disk", "0", "w"] and (run_dir / "workers/1/exit_disk").exists()
    told = rf"^failure: worker 1 \({other.user}@.*\) {re.escape(cause)}$"
    assert re.search(told, status.stdout, re.M), status.stdout
    assert "failed" in status.stdout.splitlines()[0], status.stdout
    assert_nothing_left(two_hosts, [chief, other], run_dir)
    record_figures(
        25,
        case="launcher killed; worker 1's runs folder fills, fails it, is emptied; fab status",
        failed_sec_after_full=round(failed_sec, 1),
        exit_codes=cluster["exit_codes"],
        exit_disk=" ".join(left),
        failure=f"worker {failure['index']} ({failure['host']}) {failure['reason']}"[:200],
        disk_recorded=cluster["hosts"][1]["disk"],
        processes_left=0,
    )


@contextmanager
def host_runs_disk(host: TestHost, size: str, *flags: str) -> Iterator[Path]:
    """The host's runs folder on a tmpfs of its own (owned by its user): a real ENOSPC when
    filled, a real read-only file system with `ro`."""
    if os.geteuid() != 0:
        from tests.conftest import skip_or_fail

        skip_or_fail("the host-disk tests need root to mount a tmpfs")
    user = pwd.getpwnam(host.user)
    path = host.home / "tfjobs" / "runs"
    path.mkdir(exist_ok=True)
    os.chown(path, user.pw_uid, user.pw_gid)
    options = ",".join([f"size={size}", f"uid={user.pw_uid}", f"gid={user.pw_gid}", "mode=0700"])
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        for flag in flags:
            subprocess.run(["mount", "-o", f"remount,{flag}", str(path)], check=True)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def skewed_python(host: TestHost, seconds: int) -> str:
    """A `python=` for the hosts file that runs the host's interpreter with its clock
    `seconds` ahead (faketime), as on a host whose clock is off."""
    if shutil.which("faketime") is None:
        from tests.conftest import skip_or_fail

        skip_or_fail("faketime is not installed (scripts/system-packages.sh)")
    wrapper = host.home / "python-ahead"
    wrapper.write_text(f'#!/bin/sh\nexec faketime -f "+{seconds}s" {host.python} "$@"\n')
    user = pwd.getpwnam(host.user)
    os.chown(wrapper, user.pw_uid, user.pw_gid)
    wrapper.chmod(0o700)
    return str(wrapper)


def host_disk_record(run_dir: Path, index: int) -> dict[str, object]:
    hosts = (read_json(run_dir / "cluster.json") or {}).get("hosts") or []
    return next((h.get("disk") or {} for h in hosts if h.get("index") == index), {})


def test_full_and_read_only_host_disks_are_named_and_a_healthy_job_finishes(
    two_hosts: SshCluster,
    ssh_env: dict[str, str],
    tmp_path: Path,
    record_figures: Callable[..., None],
) -> None:
    """Worker 1's runs folder (on a host whose clock is 1 h ahead) fills up while it trains,
    gets room, fills again to the end: the job finishes and says so each time. The chief's
    read-only runs folder is refused before start; the chief's full one ends the job (with
    --max-restarts 1: no restart), the first failure line naming worker 0 and its disk."""
    chief, other = two_hosts.hosts[0], two_hosts.hosts[1]
    ports = free_ports(2)
    lines = [
        chief.hosts_line(tf_port=ports[0]),
        other.hosts_line(tf_port=ports[1], python=skewed_python(other, 3600)),
    ]
    (tmp_path / "hosts.txt").write_text("\n".join(lines) + "\n")
    env = {**ssh_env, "TFCLUSTER_MIN_FREE_MB": "1"}

    # 1. Worker 1's disk fills up while it trains, for longer than --stall-timeout (it cannot
    # write its status: that silence is not a stall), has room again, then fills to the end
    # (its peer then waits for it at the end of fit, in its next collective: not a stall).
    stall = 10
    args = [*FAST, *STEPS, "--epochs", "4", "--steps-per-epoch", "400"]
    args += ["--stall-timeout", str(stall)]
    with host_runs_disk(other, "16m") as disk, fab_train(tmp_path, env, *args) as (proc, out):
        run_dir = wait_for(lambda: run_dir_appeared(tmp_path), 60, "the run directory")
        wait_for(lambda: training(run_dir, 2), TRAIN_WAIT, "every worker training")
        filler = fill_disk(disk)
        t_full = time.monotonic()
        full_line = out.wait(rf"WARNING: \[1 {other.user}@.*\] no space left in ", 30)
        noticed_sec = time.monotonic() - t_full
        recorded = wait_for(
            lambda: (disk_now := host_disk_record(run_dir, 1)).get("full") is True and disk_now,
            10,
            "cluster.json hosts[1].disk full",
        )
        status = run_fab(tmp_path, "status", env=env, timeout=60)
        time.sleep(max(0.0, t_full + stall + 3 - time.monotonic()))
        held_sec = time.monotonic() - t_full
        filler.unlink()
        room_line = out.wait(rf"\[1 {other.user}@.*\] has room again in ", 30)
        wait_for(lambda: host_disk_record(run_dir, 1).get("full") is False, 10, "disk cleared")
        st = read_json(run_dir / "workers" / "1" / "status.json") or {}
        assert st.get("state") == "running", ("still training for the second fill", st)
        filler = fill_disk(disk)
        code = wait_exit(proc, out, 600)
        ended_full = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize < 1 << 20
        exit_path = disk / run_dir.name / "workers" / "1" / "exit_code"
        assert exit_path.exists(), (code, out.text[-4000:])
        exit_file = exit_path.read_text().split()
        filler.unlink()
    text = out.text
    assert code == 0, text[-4000:]
    assert "Traceback" not in text
    assert recorded["path"] == str(disk / run_dir.name) and recorded["free_mb"] == 0.0, recorded
    assert "no space left" in str(recorded["message"])
    assert text.count("no space left in ") >= 2, "the second fill is named too"
    assert ended_full and exit_file == ["0"], "the exit code was written on a full disk"
    cluster = read_json(run_dir / "cluster.json")
    assert cluster["state"] == "finished" and cluster["exit_codes"] == {"0": 0, "1": 0}
    offset = cluster["hosts"][1]["clock_offset"]
    assert 3590 < offset < 3610 and abs(cluster["hosts"][0]["clock_offset"]) < 5, cluster["hosts"]
    assert status.returncode == 0, status.stdout + status.stderr
    ages = [int(a) for a in re.findall(r"(-?\d+) s ago", status.stdout)]
    assert len(ages) == 2 and all(0 <= a < 60 for a in ages), status.stdout
    assert "disk full" in status.stdout, status.stdout
    check_model_loads(run_dir / "model.h5")
    # From the last step to saving, no step moves (fit's ending, then evaluating): the phase
    # says evaluating there, so the stall rule leaves it alone however long it takes.
    said = dict(
        re.findall(
            r"^trainer: worker 0 (evaluating|saving) \(([\d.]+) s after start\)$",
            (run_dir / "workers" / "0" / "worker.log").read_text(errors="replace"),
            flags=re.MULTILINE,
        )
    )
    evaluating_sec = float(said["saving"]) - float(said["evaluating"])
    assert_nothing_left(two_hosts, [chief, other], run_dir)

    # 2. The chief's runs folder is read-only: refused before anything starts, naming it.
    with host_runs_disk(chief, "64m", "ro"):
        refused = run_fab(tmp_path, "train", *FAST, env=env, timeout=120)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr, refused.stderr
    assert re.search(rf"worker 0 \({chief.user}@.*\): cannot write in .*runs", refused.stderr)
    assert len(list((tmp_path / "runs").iterdir())) == 1, "no second run directory"

    # 3. The chief's disk fills while it trains with backups: the job ends, naming it.
    args = [*FAST, *STEPS, "--epochs", "6", "--steps-per-epoch", "60", "--max-restarts", "1"]
    with host_runs_disk(chief, "64m") as disk, fab_train(tmp_path, env, *args) as (proc, out):
        wait_for(lambda: len(list((tmp_path / "runs").iterdir())) == 2, 60, "the run directory")
        run_dir = sorted((tmp_path / "runs").iterdir())[-1]
        wait_for(lambda: training(run_dir, 2), TRAIN_WAIT, "every worker training")
        fill_disk(disk)
        t_full = time.monotonic()
        code = wait_exit(proc, out, 120)
        ended_sec = time.monotonic() - t_full
    text = out.text
    assert code == 1, text[-4000:]
    failed = [line for line in text.splitlines() if line.startswith("FAILED: ")]
    assert failed and re.match(
        rf"FAILED: worker 0 \({chief.user}@.*\) no space left in .*{run_dir.name} \(0 MB free\)",
        failed[0],
    ), text[-4000:]
    assert "RESTART" not in text and "not restarting: worker 0" in text, text[-4000:]
    assert ended_sec < 60, ended_sec
    cluster = read_json(run_dir / "cluster.json")
    assert cluster["state"] == "failed" and "no space left in" in cluster["failure"]["reason"]
    advice = page_advice(run_dir)
    assert "runs folder was full" in advice and "--max-restarts 1` restarts" not in advice, advice
    assert_nothing_left(two_hosts, [chief, other], run_dir)
    record_figures(
        20,
        case="worker 1's runs folder full while training (tmpfs), clock 1 h ahead",
        exit_code=0,
        named_after_sec=round(noticed_sec, 1),
        full_for_sec=round(held_sec, 1),
        stall_timeout_sec=stall,
        chief_last_step_to_saving_sec=round(evaluating_sec, 1),
        warning=full_line.split("] ", 1)[-1][:120],
        cleared=room_line.split("] ", 1)[-1][:80],
        exit_code_written_while_full=True,
        clock_offset_sec=round(offset, 1),
        status_ages_sec=ages,
        processes_left=0,
    )
    record_figures(
        21,
        case="chief's runs folder read-only, then full while training with --max-restarts 1",
        refused_before_start=True,
        ended_sec_after_full=round(ended_sec, 1),
        first_failure_line=failed[0][:160],
        restarted=False,
        processes_left=0,
    )


def test_a_cut_network_between_the_workers_is_named_as_the_cause(
    two_hosts: SshCluster,
    ssh_env: dict[str, str],
    tmp_path: Path,
    firewall: Firewall,
    record_figures: Callable[..., None],
) -> None:
    """Both workers' tf_ports cut off while they train, SSH still fine: TensorFlow's RPCs
    time out on both, and the launcher names the network, pair by pair, not the first
    worker that gave up."""
    chief, other = two_hosts.hosts[0], two_hosts.hosts[1]
    ports = free_ports(2)
    two_hosts.hosts_file(tmp_path / "hosts.txt", 2, tf_ports=ports)
    with fab_train(tmp_path, ssh_env, *UNTIL_STOPPED) as (proc, out):
        run_dir = wait_for(lambda: run_dir_appeared(tmp_path), 60, "the run directory")
        wait_for(lambda: training(run_dir, 2), TRAIN_WAIT, "every worker training")
        for host, port in zip((chief, other), ports, strict=True):
            firewall(host.address, port, replies=True)
        t0 = time.monotonic()
        code = wait_exit(proc, out, 180)
        took = time.monotonic() - t0
    assert code == 1, out.text
    assert "Traceback" not in out.text
    failed = [line for line in out.lines if line.startswith("FAILED: ")]
    assert len(failed) == 1 and "lost contact with its peers: worker " in failed[0], out.text
    for i, (host, port) in enumerate(zip((chief, other), ports, strict=True)):
        assert f"cannot reach worker {i} at {host.address}:{port}: timed out" in out.text
    assert "network check after the failure (as fab check):" in out.text
    failure = read_json(run_dir / "cluster.json")["failure"]
    assert failure["reason"].startswith("lost contact with its peers: worker ")
    assert len(failure["network"]) == 2, failure
    advice = page_advice(run_dir)
    assert "could not reach each other when checked after the failure" in advice, advice
    assert f"at {other.address}:{ports[1]}" in advice.replace("\\", ""), advice
    assert_nothing_left(two_hosts, [chief, other], run_dir)
    record_figures(
        24,
        case="the workers' network cut while they train (SSH still fine)",
        stop_sec=round(took, 1),
        pairs_named=len(failure["network"]),
        processes_left=0,
    )
