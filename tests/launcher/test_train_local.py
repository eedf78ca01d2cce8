"""`fab train` on two local workers (the embedded default): success, secrets, and the ways a
job ends early (a worker that never starts, a stopped worker, `fab stop`). A killed worker,
Ctrl-C and a restart are in test_ssh.py, on one local worker and one SSH host.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from runformat.noise import is_keras_progress, is_tf_log
from tests.conftest import processes_under
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
    training,
    training_job,
    wait_for,
)
from tests.sshcluster import free_ports
from tests.test_runformat import check_the_page_reads_it_whole

pytestmark = pytest.mark.slow


@pytest.fixture
def local_job_dir(tmp_path: Path) -> Path:
    """A folder with a hosts.txt of two local workers on free tf_ports; their tf_port locks
    live in its own workdir `wd/`."""
    a, b = free_ports(2)
    wd = tmp_path / "wd"
    (tmp_path / "hosts.txt").write_text(
        f"localhost tf_port={a} workdir={wd}\nlocalhost tf_port={b} workdir={wd}\n"
    )
    return tmp_path


def addrs(job_dir: Path) -> list[str]:
    lines = (job_dir / "hosts.txt").read_text().split("\n")
    return [f"localhost:{line.split()[1].split('=')[1]}" for line in lines if line]


def test_two_local_workers_train_and_secrets_stay_hidden(
    local_job_dir: Path, record_figures: Callable[..., None]
) -> None:
    """Also the run format's contract with a real run: the page reads it whole."""
    secret, inline = "s3cr3t-Value-7f9a", "inline-Secret-41c2"
    env = fab_env(MY_TOKEN=secret)
    proc = start_fab(
        local_job_dir,
        "train",
        *FAST,
        "--epochs",
        "3",
        "--steps-per-epoch",
        "6",
        "--trainer-args",
        "--seed 7 --system-every 0.5",
        "--env",
        "MY_TOKEN",
        "--env",
        f"OTHER_KEY={inline}",
        env=env,
    )
    # While it runs, the worker really has the variables (read from its /proc environ).
    run_dir = wait_for(lambda: run_dir_appeared(local_job_dir), 60, "the run directory")
    status = wait_for(
        lambda: read_json(run_dir / "workers" / "1" / "status.json"), 60, "worker 1's status"
    )
    environ = Path(f"/proc/{status['pid']}/environ").read_bytes().split(b"\0")
    assert f"MY_TOKEN={secret}".encode() in environ
    assert f"OTHER_KEY={inline}".encode() in environ
    assert any(e.startswith(b"TF_CONFIG=") for e in environ)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output[-3000:]
    assert "finished: every worker exited 0" in output
    assert "[0 localhost]" in output and "[1 localhost]" in output
    # Output to a pipe: short, no TensorFlow or Keras chatter, and it names the run's page.
    assert len(output.splitlines()) <= 25, output
    assert not [ln for ln in output.splitlines() if is_tf_log(ln) or is_keras_progress(ln)]
    assert f"http://127.0.0.1:8501/?run={run_dir.name}" in output
    check_complete_run(run_dir, [], addrs(local_job_dir))
    cluster = read_json(run_dir / "cluster.json")
    assert cluster["env"] == ["MY_TOKEN", "OTHER_KEY"]
    assert cluster["trainer_args"][-4:] == ["--seed", "7", "--system-every", "0.5"]
    assert cluster["hosts"][0]["local"] is True
    log = (run_dir / "launcher.log").read_text()
    assert "[1 localhost]" in log and "MY_TOKEN" in output
    for text in (output, log, (run_dir / "cluster.json").read_text()):
        assert secret not in text and inline not in text
    assert not list(run_dir.parent.glob("*.env-*")), "env files are removed after start"
    assert left_behind(run_dir, 2) == []
    assert list((local_job_dir / "wd" / "locks").iterdir()) == [], "a finished run holds no lock"
    record_figures(10, transport="local", secret_values_shown=0, env_files_left=0)
    run = check_the_page_reads_it_whole(run_dir, workers=2, validation=True)
    assert run.cluster is not None and all(h.local for h in run.cluster.hosts)


HANG = """#!/bin/sh
# Answers the preflight like a real interpreter, then never starts the trainer.
case "$1" in -c) exec "{python}" "$@" ;; esac
exec sleep 600
"""


def test_worker_that_never_starts_stops_at_the_deadline(
    tmp_path: Path, record_figures: Callable[..., None]
) -> None:
    hang = tmp_path / "hang-python"
    hang.write_text(HANG.format(python=sys.executable))
    hang.chmod(hang.stat().st_mode | stat.S_IXUSR)
    a, b = free_ports(2)
    (tmp_path / "hosts.txt").write_text(
        f"localhost tf_port={a}\nlocalhost tf_port={b} python={hang}\n"
    )
    t0 = time.monotonic()
    out = run_fab(tmp_path, "train", *FAST, "--start-timeout", "6", "--grace", "2", timeout=120)
    took = time.monotonic() - t0
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-2000:]
    assert took < 45
    text = out.stdout + out.stderr
    assert "worker 1 (localhost) did not start within 6 s" in text
    run_dir = only_run(tmp_path)
    cluster = json.loads((run_dir / "cluster.json").read_text())
    assert cluster["state"] == "failed" and cluster["failure"]["index"] == 1
    assert wait_for(lambda: left_behind(run_dir, 2) == [], 10, "no process left")
    record_figures(
        3, case="never starts", start_timeout_sec=6, stop_sec=round(took, 1), processes_left=0
    )


def test_broken_python_path_is_refused_before_start(
    tmp_path: Path, record_figures: Callable[..., None]
) -> None:
    a, b = free_ports(2)
    (tmp_path / "hosts.txt").write_text(
        f"localhost tf_port={a}\nlocalhost tf_port={b} python=/no/such/python3\n"
    )
    t0 = time.monotonic()
    out = run_fab(tmp_path, "train", *FAST, timeout=60)
    took = time.monotonic() - t0
    left = processes_under(tmp_path)  # a worker 0 started would still be importing TensorFlow
    assert out.returncode == 1
    assert "worker 1 (localhost): python '/no/such/python3' not found" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()
    assert left == {}, "nothing was started"
    record_figures(
        3, case="python path missing", refused_sec=round(took, 1), processes_left=len(left)
    )


def test_bad_hosts_file_is_one_clean_line(tmp_path: Path) -> None:
    (tmp_path / "hosts.txt").write_text("localhost\nlocalhost colour=red\n")
    out = run_fab(tmp_path, "train", timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: hosts.txt:2: 'colour=red' unknown key 'colour'; allowed keys: user, port, key, "
        "addr, tf_port, python, workdir, scheduler, workers, tasks_per_node, partition, gres, time"
    ]


def test_second_train_is_refused_and_fab_stop_ends_the_first(
    local_job_dir: Path, record_figures: Callable[..., None]
) -> None:
    first = start_fab(local_job_dir, "train", *UNTIL_STOPPED)
    try:
        run_dir = wait_for(lambda: run_dir_appeared(local_job_dir), 60, "the run directory")
        wait_for(lambda: training(run_dir, 2), 90, "both workers training")
        t0 = time.monotonic()
        second = run_fab(local_job_dir, "train", *FAST, timeout=60)
        refused_sec = time.monotonic() - t0
        assert second.returncode == 1
        assert f"is locked by run {run_dir.name}, which is still running" in second.stderr
        assert len(list((local_job_dir / "runs").iterdir())) == 1, "no second run was made"
        assert first.poll() is None and training(run_dir, 2), "the first run is unharmed"
        status = run_fab(local_job_dir, "status", timeout=60)
        assert status.returncode == 0 and status.stdout.count(" alive ") == 2, status.stdout
        stopped = run_fab(local_job_dir, "stop", "--grace", "3", timeout=60)
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout.count("stopped (was alive)") == 2, stopped.stdout
        output, _ = first.communicate(timeout=60)
    finally:
        stop_process(first)
    assert first.returncode == 1, output[-2000:]
    assert "stopped by `fab stop`" in output
    assert read_json(run_dir / "cluster.json")["state"] == "stopped"
    assert wait_for(lambda: left_behind(run_dir, 2) == [], 10, "no process left")
    record_figures(7, refused_sec=round(refused_sec, 1), first_run_harmed=False, processes_left=0)


def test_stopped_worker_is_named(local_job_dir: Path, record_figures: Callable[..., None]) -> None:
    """SIGSTOP: the others abort after missing its heartbeats; the stopped one is the cause."""
    with training_job(local_job_dir, *FAST, "--epochs", "200", "--grace", "2") as (proc, run_dir):
        victim = read_json(run_dir / "workers" / "1" / "status.json")["pid"]
        os.kill(victim, signal.SIGSTOP)
        t0 = time.monotonic()
        output, _ = proc.communicate(timeout=120)
        took = time.monotonic() - t0
    assert proc.returncode == 1, output[-3000:]
    assert "worker 1 (localhost) was stopped (SIGSTOP?)" in output, output[-3000:]
    assert took < 60
    assert read_json(run_dir / "cluster.json")["failure"]["index"] == 1
    assert wait_for(lambda: left_behind(run_dir, 2) == [], 10, "no process left")
    record_figures(2, stop_sec=round(took, 1), processes_left=0)
