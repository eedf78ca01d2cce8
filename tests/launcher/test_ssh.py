"""The real `fab` against real SSH test hosts (tests/sshcluster.py): check, deploy, train,
status, fetch, and a worker killed mid-training.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import TENSORS, EventAccumulator

from tests.launcher.helpers import (
    FAST,
    UNTIL_STOPPED,
    check_complete_run,
    check_model_loads,
    fab_env,
    only_run,
    read_json,
    run_dir_appeared,
    run_fab,
    start_fab,
    stop_process,
    training_job,
    wait_for,
)
from tests.sshcluster import SshCluster
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


@pytest.mark.parametrize("n", [2, 3])
def test_deploy_train(
    n: int,
    ssh_cluster: SshCluster,
    ssh_env: dict[str, str],
    tmp_path: Path,
    record_figures: Callable[..., None],
) -> None:
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


def test_killed_worker_over_ssh(
    ssh_cluster: SshCluster,
    ssh_env: dict[str, str],
    tmp_path: Path,
    record_figures: Callable[..., None],
) -> None:
    ssh_cluster.hosts_file(tmp_path / "hosts.txt", 2)
    assert run_fab(tmp_path, "deploy", env=ssh_env, timeout=120).returncode == 0
    with training_job(tmp_path, *UNTIL_STOPPED, env=ssh_env) as (proc, run_dir):
        victim = read_json(run_dir / "workers" / "1" / "status.json")["pid"]
        os.kill(victim, signal.SIGKILL)
        t0 = time.monotonic()
        output, _ = proc.communicate(timeout=60)
        took = time.monotonic() - t0
    host = ssh_cluster.hosts[1]
    assert proc.returncode == 1, output[-3000:]
    assert took < 30
    assert f"worker 1 ({host.user}@{host.address}) killed by SIGKILL" in output
    cluster = read_json(run_dir / "cluster.json")
    assert cluster["state"] == "failed" and cluster["failure"]["reason"] == "killed by SIGKILL"
    assert (run_dir / "workers" / "1" / "worker.log").stat().st_size > 0, "logs were fetched"
    assert (run_dir / "workers" / "0" / "worker.log").stat().st_size > 0
    assert_hosts_idle(ssh_cluster, 2)
    record_figures(1, transport="ssh", stop_sec=round(took, 1), processes_left=0)


def test_ctrl_c_over_ssh(
    ssh_cluster: SshCluster,
    ssh_env: dict[str, str],
    tmp_path: Path,
    record_figures: Callable[..., None],
) -> None:
    ssh_cluster.hosts_file(tmp_path / "hosts.txt", 2)
    assert run_fab(tmp_path, "deploy", env=ssh_env, timeout=120).returncode == 0
    with training_job(tmp_path, *UNTIL_STOPPED, env=ssh_env) as (proc, run_dir):
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        output, _ = proc.communicate(timeout=60)
        took = time.monotonic() - t0
    assert proc.returncode == 130, output[-3000:]
    assert read_json(run_dir / "cluster.json")["state"] == "stopped"
    assert_hosts_idle(ssh_cluster, 2)
    record_figures(5, transport="ssh", stop_sec=round(took, 1), processes_left=0)


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


def test_launcher_lost_then_status_fetch_and_stop(
    ssh_cluster: SshCluster, ssh_env: dict[str, str], tmp_path: Path
) -> None:
    """The machine running `fab train` goes away; the run is found, followed and stopped."""
    ssh_cluster.hosts_file(tmp_path / "hosts.txt", 2)
    assert run_fab(tmp_path, "deploy", env=ssh_env, timeout=120).returncode == 0
    with training_job(tmp_path, *FAST, "--epochs", "200", env=ssh_env) as (proc, run_dir):
        proc.kill()  # the launcher dies without cleaning up: the workers go on
        proc.communicate(timeout=30)
    status = run_fab(tmp_path, "status", env=ssh_env, timeout=60)
    assert status.returncode == 0 and status.stdout.count(" alive ") == 2, status.stdout
    log = run_dir / "workers" / "1" / "worker.log"
    remote_log = (
        ssh_cluster.hosts[1].home / "tfjobs" / "runs" / run_dir.name / log.relative_to(run_dir)
    )
    written = remote_log.stat().st_size
    fetch = run_fab(tmp_path, "fetch", env=ssh_env, timeout=60)
    assert fetch.returncode == 0, fetch.stderr
    assert log.stat().st_size >= written, "every byte the worker had written came back"
    follower = start_fab(tmp_path, "fetch", "--follow", "--interval", "0.5", env=ssh_env)
    try:
        stop = run_fab(tmp_path, "stop", "--grace", "3", env=ssh_env, timeout=60)
        assert stop.returncode == 0, stop.stderr
        assert stop.stdout.count("stopped (was alive)") == 2, stop.stdout
        out, _ = follower.communicate(timeout=60)
    finally:
        stop_process(follower)
    assert follower.returncode == 0 and "fetched" in out, out
    assert read_json(run_dir / "cluster.json")["state"] == "stopped"
    assert_hosts_idle(ssh_cluster, 2)


def test_killed_worker_over_ssh_restarts_from_the_chiefs_backup(
    ssh_cluster: SshCluster,
    ssh_env: dict[str, str],
    tmp_path: Path,
    record_figures: Callable[..., None],
) -> None:
    """Every worker restores from its own run directory, but only the chief's host keeps a
    backup: the launcher gives the others a copy, so all resume after the same epoch."""
    ssh_cluster.hosts_file(tmp_path / "hosts.txt", 2)
    assert run_fab(tmp_path, "deploy", env=ssh_env, timeout=120).returncode == 0
    slow = ["--batch-size", "8", "--steps-per-epoch", "50", "--trainer-args", "--no-validation"]
    proc = start_fab(
        tmp_path, "train", *FAST, *slow, "--epochs", "4", "--max-restarts", "1", env=ssh_env
    )
    try:
        run_dir = wait_for(lambda: run_dir_appeared(tmp_path), 60, "the run directory")
        host = ssh_cluster.hosts[1]
        status = host.home / "tfjobs" / "runs" / run_dir.name / "workers" / "1" / "status.json"
        done = wait_for(
            lambda: (read_json(status) or {}).get("epoch", 0) >= 2 and read_json(status),
            120,
            "worker 1 past epoch 2",
            every=0.05,
        )
        os.kill(done["pid"], signal.SIGKILL)
        output, _ = proc.communicate(timeout=240)
    finally:
        stop_process(proc)
    assert proc.returncode == 0, output[-4000:]
    assert f"RESTART 1/1: worker 1 ({host.user}@{host.address}) killed by SIGKILL" in output
    cluster = read_json(run_dir / "cluster.json")
    assert cluster["state"] == "finished" and cluster["restarts"] == 1
    assert cluster["attempts"][0]["failure"]["reason"] == "killed by SIGKILL"
    events = run_dir / "workers" / "0" / "events"
    epochs = [int(step) for step, _ in read_scalars(events, event_files(events)[-1:])["epoch/loss"]]
    assert epochs[-1] == 4 and epochs[0] - 1 >= 2, f"the restart trained epochs {epochs}"
    check_model_loads(run_dir / "model.h5")
    assert not (run_dir / "backup").exists(), "the mirrored backup is dropped once finished"
    for h in ssh_cluster.hosts[:2]:
        assert not (h.home / "tfjobs" / "runs" / run_dir.name / "backup").exists(), h.name
    assert_hosts_idle(ssh_cluster, 2)
    record_figures(
        4,
        transport="ssh",
        killed_in_epoch=done["epoch"] + 1,
        resumed_after_epoch=epochs[0] - 1,
        epochs_redone=done["epoch"] - (epochs[0] - 1),
        processes_left=0,
    )
