"""The real `fab` against real SSH test hosts (tests/sshcluster.py): check, deploy, train,
status, fetch; and the ways a job ends early or restarts (a killed worker, Ctrl-C, a restart
from the chief's backup) on a hosts file that mixes a local worker with an SSH host, so that
one run checks both ways of reaching a worker.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import TENSORS, EventAccumulator

from runformat.noise import is_tf_log
from tests.launcher.helpers import (
    FAST,
    UNTIL_STOPPED,
    check_complete_run,
    fab_env,
    left_behind,
    only_run,
    read_json,
    run_dir_appeared,
    run_fab,
    start_fab,
    stop_process,
    training_job,
    wait_for,
)
from tests.sshcluster import SshCluster, TestHost, free_ports
from tests.trainer.workers import SYSTEM_TAGS, event_files, read_scalars

pytestmark = pytest.mark.slow


@pytest.fixture
def ssh_env(ssh_cluster: SshCluster) -> dict[str, str]:
    """The environment `fab` runs in: the test cluster's known_hosts, strict checking."""
    return fab_env(TFCLUSTER_KNOWN_HOSTS=str(ssh_cluster.known_hosts))


def hosts_addrs(hosts_file: Path) -> list[str]:
    addrs = []
    for line in hosts_file.read_text().splitlines():
        if line and not line.startswith("#"):
            words = line.split()
            port = next(w.split("=")[1] for w in words if w.startswith("tf_port="))
            addrs.append(f"{words[0].split('@')[1]}:{port}")
    return addrs


def assert_hosts_idle(cluster: SshCluster, n: int) -> None:
    for host in cluster.hosts[:n]:
        assert cluster.wait_idle(host, timeout=10) == [], host.name


def mixed_hosts_file(job_dir: Path, host: TestHost, ssh_index: int) -> list[str]:
    """A hosts.txt of two workers: `localhost` (a local process, no SSH, its tf_port lock in
    job_dir/wd) and the SSH test host as worker ssh_index; returns the TF addresses in order."""
    ports = free_ports(2)
    local = f"localhost tf_port={ports[1 - ssh_index]} workdir={job_dir / 'wd'}"
    lines = [local, local]
    lines[ssh_index] = host.hosts_line(tf_port=ports[ssh_index])
    (job_dir / "hosts.txt").write_text("\n".join(lines) + "\n")
    addrs = [f"localhost:{port}" for port in ports]
    addrs[ssh_index] = f"{host.address}:{ports[ssh_index]}"
    return addrs


def test_check_all_hosts(ssh_cluster: SshCluster, ssh_env: dict[str, str], tmp_path: Path) -> None:
    ssh_cluster.hosts_file(tmp_path / "hosts.txt", 3)
    out = run_fab(tmp_path, "check", env=ssh_env, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [line for line in out.stdout.splitlines() if "@127.0." in line]
    assert len(rows) == 3 and all(" ok " in r and "free" in r for r in rows), out.stdout
    assert "all 3 host(s) ready" in out.stdout


def test_check_names_the_bad_host(
    ssh_cluster: SshCluster, ssh_env: dict[str, str], tmp_path: Path
) -> None:
    path = ssh_cluster.hosts_file(tmp_path / "hosts.txt", 3)
    lines = path.read_text().splitlines()
    # Host 2 on a wrong SSH port (nothing listens there).
    lines[2] = lines[2].replace(f"port={ssh_cluster.hosts[1].port}", "port=1")
    path.write_text("\n".join(lines) + "\n")
    out = run_fab(tmp_path, "check", env=ssh_env, timeout=120)
    assert out.returncode == 1
    bad = ssh_cluster.hosts[1]
    assert f"check failed on worker 1 ({bad.user}@{bad.address})" in out.stderr
    assert "connection refused" in out.stderr
    assert "worker 0" not in out.stderr and "worker 2" not in out.stderr
    assert "Traceback" not in out.stderr


def test_unknown_host_key_is_refused(ssh_cluster: SshCluster, tmp_path: Path) -> None:
    ssh_cluster.hosts_file(tmp_path / "hosts.txt", 1)
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    out = run_fab(tmp_path, "check", env=fab_env(TFCLUSTER_KNOWN_HOSTS=str(empty)), timeout=60)
    assert out.returncode == 1
    assert "unknown host key" in out.stderr and "--accept-new-host-keys" in out.stderr
    # Opting in trusts it and records the key; the next check needs no opt-in.
    out = run_fab(
        tmp_path, "check", "--accept-new-host-keys", env=fab_env(TFCLUSTER_KNOWN_HOSTS=str(empty))
    )
    assert out.returncode == 0, out.stderr
    assert f"[{ssh_cluster.hosts[0].address}]:{ssh_cluster.hosts[0].port}" in empty.read_text()


def test_deploy_train(
    ssh_cluster: SshCluster,
    ssh_env: dict[str, str],
    tmp_path: Path,
    record_figures: Callable[..., None],
) -> None:
    n = 3
    hosts_file = ssh_cluster.hosts_file(tmp_path / "hosts.txt", n)
    secret = "ssh-Secret-93be"
    out = run_fab(
        tmp_path,
        "deploy",
        "train",
        *FAST,
        "--epochs",
        "2",
        "--steps-per-epoch",
        "5",
        "--env",
        "API_TOKEN",
        "--trainer-args=--system-every 0.05",
        env={**ssh_env, "API_TOKEN": secret},
        timeout=400,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    run_dir = only_run(tmp_path)
    check_complete_run(run_dir, [], hosts_addrs(hosts_file))
    for i in range(n):  # every host's system metrics, mirrored home
        events = run_dir / "workers" / str(i) / "events"
        accumulator = EventAccumulator(str(events), size_guidance={TENSORS: 0}).Reload()
        for tag in SYSTEM_TAGS:
            steps = [point.step for point in accumulator.Tensors(tag)]
            assert len(steps) >= 2 and steps == sorted(set(steps)), (i, tag, steps)
        assert read_json(run_dir / "workers" / str(i) / "status.json")["phase"] == "ended"
    assert "API_TOKEN" in out.stdout
    for text in (out.stdout, out.stderr, (run_dir / "launcher.log").read_text()):
        assert secret not in text
    for host in ssh_cluster.hosts[:n]:  # the 0600 env files are gone once read
        left = ssh_cluster.run_as(host, "ls ~/tfjobs/runs")
        assert ".env-" not in left.stdout, left.stdout
    for i in range(n):
        assert f"[{i} {ssh_cluster.hosts[i].user}@" in out.stdout
    record_figures(10, transport="ssh", hosts=n, secret_values_shown=0, env_files_left=0)
    cluster = read_json(run_dir / "cluster.json")
    assert [h["ssh"] for h in cluster["hosts"]] == [
        f"{h.user}@{h.address}:{h.port}" for h in ssh_cluster.hosts[:n]
    ]
    assert_hosts_idle(ssh_cluster, n)
    # The run can be looked at and fetched again afterwards.
    status = run_fab(tmp_path, "status", env=ssh_env, timeout=60)
    assert status.returncode == 0, status.stderr
    rows = [r for r in status.stdout.splitlines() if " finished " in r and " 2/2 " in r]
    assert len(rows) == n, status.stdout
    (run_dir / "model.h5").unlink()
    fetch = run_fab(tmp_path, "fetch", env=ssh_env, timeout=60)
    assert fetch.returncode == 0, fetch.stderr
    assert (run_dir / "model.h5").stat().st_size > 0
    # A second deploy of the same tree sends nothing.
    again = run_fab(tmp_path, "deploy", env=ssh_env, timeout=60)
    assert again.stdout.count("unchanged (0 bytes)") == n, again.stdout


def test_killed_worker_stops_the_job(
    ssh_cluster: SshCluster,
    ssh_env: dict[str, str],
    tmp_path: Path,
    record_figures: Callable[..., None],
) -> None:
    """An SSH chief and a local worker 1, killed: the job stops, the local worker is named as
    the cause and the SSH chief as only aborted, and the chief's log comes home."""
    host = ssh_cluster.hosts[0]
    mixed_hosts_file(tmp_path, host, ssh_index=0)
    assert run_fab(tmp_path, "deploy", env=ssh_env, timeout=120).returncode == 0
    with training_job(tmp_path, *UNTIL_STOPPED, env=ssh_env) as (proc, run_dir):
        victim = read_json(run_dir / "workers" / "1" / "status.json")["pid"]
        os.kill(victim, signal.SIGKILL)
        t0 = time.monotonic()
        output, _ = proc.communicate(timeout=60)
        took = time.monotonic() - t0
    assert proc.returncode == 1, output[-3000:]
    assert took < 30
    # The cause first: the killed worker, its error, its log without TensorFlow's noise; then
    # one line for the worker that was only aborted, and no traceback anywhere.
    lines = output.splitlines()
    first = lines.index("FAILED: worker 1 (localhost) killed by SIGKILL")
    assert lines[first + 1].startswith("  error: ")
    assert "workers/1/worker.log" in lines[first + 2]
    peer = [
        i
        for i, ln in enumerate(lines)
        if ln.startswith(f"  worker 0 ({host.user}@{host.address}) ")
    ]
    assert len(peer) == 1 and peer[0] > first + 2, output
    assert "Traceback" not in output
    assert not [ln for ln in lines if is_tf_log(ln.strip())], output
    cluster = read_json(run_dir / "cluster.json")
    assert cluster["state"] == "failed"
    assert cluster["failure"]["index"] == 1
    assert cluster["failure"]["reason"] == "killed by SIGKILL"
    assert cluster["exit_codes"]["1"] == -9
    assert cluster["failure"]["log_tail"], "the last log lines are recorded"
    assert (run_dir / "workers" / "0" / "worker.log").stat().st_size > 0, "logs were fetched"
    assert (run_dir / "workers" / "1" / "worker.log").stat().st_size > 0
    assert wait_for(lambda: left_behind(run_dir, 2) == [], 10, "no process left")
    assert_hosts_idle(ssh_cluster, 1)
    record_figures(1, transport="local+ssh", stop_sec=round(took, 1), processes_left=0)


def test_ctrl_c_stops_every_worker(
    ssh_cluster: SshCluster,
    ssh_env: dict[str, str],
    tmp_path: Path,
    record_figures: Callable[..., None],
) -> None:
    mixed_hosts_file(tmp_path, ssh_cluster.hosts[0], ssh_index=1)
    assert run_fab(tmp_path, "deploy", env=ssh_env, timeout=120).returncode == 0
    with training_job(tmp_path, *UNTIL_STOPPED, env=ssh_env) as (proc, run_dir):
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        output, _ = proc.communicate(timeout=60)
        took = time.monotonic() - t0
    assert proc.returncode == 130, output[-3000:]
    assert "interrupted (SIGINT)" in output
    assert read_json(run_dir / "cluster.json")["state"] == "stopped"
    assert wait_for(lambda: left_behind(run_dir, 2) == [], 10, "no process left")
    assert_hosts_idle(ssh_cluster, 1)
    record_figures(5, transport="local+ssh", stop_sec=round(took, 1), processes_left=0)


def test_host_that_does_not_answer(
    ssh_cluster: SshCluster,
    ssh_env: dict[str, str],
    tmp_path: Path,
    record_figures: Callable[..., None],
) -> None:
    ssh_cluster.hosts_file(tmp_path / "hosts.txt", 2)
    ssh_cluster.pause_host(ssh_cluster.hosts[1])  # TCP connects, no SSH banner ever comes
    try:
        t0 = time.monotonic()
        out = run_fab(tmp_path, "check", env=ssh_env, timeout=120)
        took = time.monotonic() - t0
    finally:
        ssh_cluster.resume_host(ssh_cluster.hosts[1])
    assert out.returncode == 1
    assert "worker 1" in out.stderr and "no answer from" in out.stderr, out.stderr
    assert took < 30
    record_figures(6, case="host never greets (sshd frozen)", refused_sec=round(took, 1))


def test_killed_worker_restarts_the_job_from_the_chiefs_backup(
    ssh_cluster: SshCluster,
    ssh_env: dict[str, str],
    tmp_path: Path,
    record_figures: Callable[..., None],
) -> None:
    """--max-restarts 1, a local chief and an SSH worker 1 killed in epoch 3 of 4: the whole
    job restarts and resumes after epoch 2 (the trainer's backup), not from zero, and finishes
    with model.h5. Every worker restores from its own run directory, but only the chief's
    keeps a backup: the launcher gives the SSH host a copy, so all resume after one epoch."""
    host = ssh_cluster.hosts[0]
    name = f"{host.user}@{host.address}"
    addrs = mixed_hosts_file(tmp_path, host, ssh_index=1)
    assert run_fab(tmp_path, "deploy", env=ssh_env, timeout=120).returncode == 0
    t0 = time.monotonic()
    slow = ["--batch-size", "8", "--steps-per-epoch", "20", "--trainer-args", "--no-validation"]
    proc = start_fab(
        tmp_path,
        "train",
        *FAST,
        *slow,
        *("--epochs", "4", "--max-restarts", "1", "--grace", "3", "--verbose"),
        env=ssh_env,
    )
    try:
        run_dir = wait_for(lambda: run_dir_appeared(tmp_path), 60, "the run directory")
        remote_run = host.home / "tfjobs" / "runs" / run_dir.name
        status_1 = remote_run / "workers" / "1" / "status.json"
        done = wait_for(
            lambda: (read_json(status_1) or {}).get("epoch", 0) >= 2 and read_json(status_1),
            120,
            "worker 1 past epoch 2",
            every=0.05,
        )
        os.kill(done["pid"], signal.SIGKILL)
        killed_at = time.time()
        output, _ = proc.communicate(timeout=240)
    finally:
        stop_process(proc)
    assert proc.returncode == 0, output[-4000:]
    assert f"RESTART 1/1: worker 1 ({name}) killed by SIGKILL" in output
    # --verbose streams every worker's output; Keras' epoch lines only from the chief.
    assert f"[1 {name}] trainer: worker 1 of 2" in output
    assert "[0 localhost] Epoch 1/4" in output and f"[1 {name}] Epoch 1/4" not in output
    check_complete_run(run_dir, [], addrs)
    cluster = read_json(run_dir / "cluster.json")
    assert cluster["restarts"] == 1 and len(cluster["attempts"]) == 2
    first, second = cluster["attempts"]
    assert first["failure"]["index"] == 1 and first["failure"]["reason"] == "killed by SIGKILL"
    assert first["failure"]["host"] == name and first["ended"] <= second["started"]
    assert second["failure"] is None and second["ended"] >= second["started"]
    assert "--backup" in cluster["trainer_args"]
    # The second attempt's epochs, from the chief's newest event file that has them (the
    # chief also writes its mistakes pictures through a writer, and so a file, of their own).
    events = run_dir / "workers" / "0" / "events"
    newest = next(
        scalars
        for path in reversed(event_files(events))
        if "epoch/loss" in (scalars := read_scalars(events, [path]))
    )
    epochs = [int(step) for step, _ in newest["epoch/loss"]]
    resumed_after = epochs[0] - 1
    redone = done["epoch"] - resumed_after
    assert epochs[-1] == 4 and resumed_after >= 2, f"the restart trained epochs {epochs}"
    assert 0 <= redone <= 1
    assert "--- restart 1: attempt 2 ---" in (run_dir / "workers" / "1" / "worker.log").read_text()
    assert not (run_dir / "backup").exists(), "the chief's backup is dropped once finished"
    assert not (remote_run / "backup").exists(), "so is the SSH host's copy"
    assert wait_for(lambda: left_behind(run_dir, 2) == [], 10, "no process left")
    assert_hosts_idle(ssh_cluster, 1)
    status = run_fab(tmp_path, "status", env=ssh_env, timeout=60)
    assert f"restarted after attempt 1: worker 1 ({name}) killed by SIGKILL" in status.stdout
    record_figures(
        4,
        transport="local+ssh",
        killed_in_epoch=done["epoch"] + 1,
        resumed_after_epoch=resumed_after,
        epochs_redone=redone,
        restart_after_kill_sec=round(second["started"] - killed_at, 1),
        processes_left=0,
        total_sec=round(time.monotonic() - t0, 1),
    )
