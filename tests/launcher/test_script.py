"""`fab train --script`: a user's own tf.keras program (tests/launcher/tiny_script) on two local
workers, on the SSH test hosts and on the test Slurm, watched like the trainer: its epoch_loss
events and the chief's artifact come home, the progress Keras printed fills its status.json
without any callback, a failure is told cause first, `--max-restarts` resumes it from
BackupAndRestore, and an unchanged folder ships 0 bytes the second time.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import socket
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import TENSORS, EventAccumulator

from tests.conftest import Firewall
from tests.dashboard.scriptrun import check_page_of_script_run
from tests.launcher.helpers import (
    fab_env,
    left_behind,
    only_run,
    read_json,
    run_dir_appeared,
    run_fab,
    start_fab,
    stop_process,
    this_machines_address,
    training,
    wait_for,
)
from tests.slurmcluster import SlurmCluster
from tests.sshcluster import SshCluster, free_ports

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parent / "tiny_script" / "tiny_keras.py"
QUICK = ["--interval", "0.5", "--grace", "3"]
STARTUP = 240  # seconds for two TensorFlow workers to start on a busy 2-core machine


def consecutive_ports(n: int) -> int:
    """The first of n free consecutive TCP ports below the ephemeral range (Slurm's tasks on
    one node listen on P, P+1, ...; next to a port bind(0) chose, outgoing connections of
    everything else on the machine would soon take P+1)."""
    for _ in range(200):
        first = random.randrange(20000, 30000)
        with contextlib.ExitStack() as stack:
            try:
                for port in range(first, first + n):
                    sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                    sock.bind(("", port))
            except OSError:
                continue
            return first
    raise RuntimeError(f"no {n} free consecutive ports")


def epoch_losses(folder: Path) -> list[int]:
    """The steps of `epoch_loss` in the event files under folder (tf-keras' TensorBoard)."""
    accumulator = EventAccumulator(str(folder), size_guidance={TENSORS: 0}).Reload()
    return [e.step for e in accumulator.Tensors("epoch_loss")]


def check_script_run(run_dir: Path, workers: int) -> dict:
    """A finished script run: every worker finished, the record names the script, the chief's
    epoch_loss events and artifact came home."""
    cluster = read_json(run_dir / "cluster.json")
    assert cluster["state"] == "finished", cluster
    assert cluster["exit_codes"] == {str(i): 0 for i in range(workers)}
    program = cluster["program"]
    assert (program["kind"], program["script"]) == ("script", "tiny_keras.py")
    assert program["folder"] == str(SCRIPT.parent) and len(program["hash"]) == 16
    for i in range(workers):
        st = read_json(run_dir / "workers" / str(i) / "status.json")
        assert (st["state"], st["phase"], st["exit_code"]) == ("finished", "ended", 0), (i, st)
        assert list((run_dir / "workers" / str(i) / "events").glob("events.out.tfevents.*"))
    assert epoch_losses(run_dir / "workers" / "0" / "tb" / "train") == [0, 1]
    assert read_json(run_dir / "artifacts" / "result.json")["loss"] > 0
    return cluster


def test_a_script_on_two_local_workers(tmp_path: Path) -> None:
    """The script fits with Keras' progress bar (verbose=1) and no ClusterProgress: each
    worker's status.json ends with the epochs, steps and loss Keras printed."""
    a, b = free_ports(2)
    wd = tmp_path / "wd"
    (tmp_path / "hosts.txt").write_text(
        f"localhost tf_port={a} workdir={wd}\nlocalhost tf_port={b} workdir={wd}\n"
    )
    args = "--epochs 2 --steps 4 --verbose 1"
    out = run_fab(
        tmp_path, "train", "--script", str(SCRIPT), "--trainer-args", args, *QUICK,
        timeout=STARTUP,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    run_dir = only_run(tmp_path)
    check_script_run(run_dir, 2)
    assert f"script: tiny_keras.py {args} (from " in out.stdout
    assert "bytes sent" not in out.stdout, "local workers run the folder in place"
    assert "artifacts: " in out.stdout
    history_loss = read_json(run_dir / "artifacts" / "result.json")["loss"]
    for i in range(2):
        st = read_json(run_dir / "workers" / str(i) / "status.json")
        log = (run_dir / "workers" / str(i) / "worker.log").read_bytes()
        # Each epoch's closing line, as Keras drew it: `\r4/4 [====] - 0s 6ms/step - loss: 0.6931`
        closing = re.findall(rb"\r4/4 \[=+\] - \d+m?s [^\r\n]*?loss: ([0-9.]+) *\n", log)
        assert len(closing) == 2, log[-2000:]
        assert (st["epoch"], st["epochs"], st["step"], st["steps_total"]) == (2, 2, 8, 8), st
        assert st["loss"] == float(closing[-1]) == float(f"{history_loss:.4f}")
        assert st["accuracy"] is None and st["examples_per_sec"] is None  # not printed
        # The launcher's last line of each worker (not a terminal: plain lines) says it too.
        said = f"  epoch 2/2  step 8/8  loss {st['loss']:.4f}"
        assert [ln for ln in out.stdout.splitlines() if ln.startswith(f"[{i} ") and said in ln]
    check_page_of_script_run(run_dir, 2)  # and the dashboard shows them


def test_a_scripts_workers_cut_off_from_each_other_name_the_network(
    tmp_path: Path, firewall: Firewall
) -> None:
    """A user's program on two local workers at this machine's address, both tf_ports cut
    while it trains: its own TensorFlow errors (the error's name a few stderr lines above
    its last) lead to the network check, and the failure names both pairs (the trainer's
    run over SSH hosts: test_reliability.py)."""
    here = this_machines_address()
    ports = free_ports(2)
    wd = tmp_path / "wd"
    (tmp_path / "hosts.txt").write_text(
        "".join(f"localhost tf_port={port} addr={here} workdir={wd}\n" for port in ports)
    )
    args = "--epochs 1000 --steps 5 --step-sleep 0.05 --verbose 1"
    proc = start_fab(tmp_path, "train", "--script", str(SCRIPT), "--trainer-args", args, *QUICK)
    try:
        run_dir = wait_for(lambda: run_dir_appeared(tmp_path), 60, "the run directory")
        wait_for(lambda: training(run_dir, 2), STARTUP, "both workers training")
        for port in ports:
            firewall(here, port, replies=True)
        output, _ = proc.communicate(timeout=180)
    finally:
        stop_process(proc)
    assert proc.returncode == 1, output[-3000:]
    failed = [line for line in output.splitlines() if line.startswith("FAILED: ")]
    assert len(failed) == 1 and "lost contact with its peers: worker " in failed[0], output
    for i, port in enumerate(ports):
        assert f"cannot reach worker {i} at {here}:{port}: timed out" in output, output
    failure = read_json(run_dir / "cluster.json")["failure"]
    assert len(failure["network"]) == 2, failure
    assert wait_for(lambda: left_behind(run_dir, 2) == [], 10, "no process left")


def test_a_script_on_ssh_hosts_fails_restarts_and_is_killed(
    ssh_cluster: SshCluster, tmp_path: Path
) -> None:
    """Two SSH hosts. Run 1, --max-restarts 1: worker 1 exits 3 after epoch 2 of every
    attempt; the job restarts, resumes after epoch 2 (BackupAndRestore on
    $TFCLUSTER_BACKUP_DIR), fails again, and the failure is told cause first with the exit
    code and the script's last stderr line. Run 2, the same folder: 0 bytes ship; the script
    of worker 1 is killed with SIGKILL; the job stops, names it, leaves no process."""
    env = fab_env(TFCLUSTER_KNOWN_HOSTS=str(ssh_cluster.known_hosts))
    ssh_cluster.hosts_file(tmp_path / "hosts.txt", 2)
    host = ssh_cluster.hosts[1]
    name = f"{host.user}@{host.address}"
    deployed = run_fab(tmp_path, "deploy", env=env, timeout=120)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    # Hosts kept from an earlier run of this test would have the folder already.
    for h in ssh_cluster.hosts[:2]:
        ssh_cluster.run_as(h, "rm -rf ~/tfjobs/programs")

    fails = "--epochs 4 --steps 3 --fail-worker 1 --fail-epoch 2 --fail-code 3 --verbose 1"
    first = run_fab(
        tmp_path, "train", "--script", str(SCRIPT), "--trainer-args", fails,
        "--max-restarts", "1", *QUICK, env=env, timeout=2 * STARTUP,
    )  # fmt: skip
    output = first.stdout
    assert first.returncode == 1, output[-4000:] + first.stderr[-2000:]
    sent = re.search(r"script folder \w+ .*: (\d+) bytes sent to 2 host", output)
    assert sent and int(sent.group(1)) > 0, output
    assert f"RESTART 1/1: worker 1 ({name}) exited with code 3" in output
    lines = output.splitlines()
    cause = lines.index(f"FAILED: worker 1 ({name}) exited with code 3")
    chief_log = (only_run(tmp_path) / "workers" / "0" / "worker.log").read_text()
    begins = [int(e) for e in re.findall(r"worker 0 begins at epoch (\d+)", chief_log)]
    assert begins[0] == 1 and begins[1] >= 2, chief_log  # the second attempt resumed
    error = f"  error: tiny_keras: worker 1 gives up after epoch {begins[1]}"
    assert lines[cause + 1] == error, output
    assert "Traceback" not in output
    run_dir = only_run(tmp_path)
    cluster = read_json(run_dir / "cluster.json")
    assert cluster["state"] == "failed" and cluster["restarts"] == 1
    assert cluster["failure"]["index"] == 1 and cluster["exit_codes"]["1"] == 3
    st = read_json(run_dir / "workers" / "1" / "status.json")
    assert (st["state"], st["exit_code"]) == ("failed", 3)
    # Keras' progress bar, read by the wrapper on an SSH host: worker 1 stopped after epoch
    # 2 of its resumed attempt, which Keras counts from the backup's epoch on.
    assert (st["epochs"], st["steps_total"]) == (4, 12) and st["epoch"] >= 2, st
    assert wait_for(lambda: left_behind(run_dir, 2) == [], 10, "no process left")

    run_dir.rename(tmp_path / "first-run")
    proc = start_fab(
        tmp_path, "train", "--script", str(SCRIPT), "--trainer-args",
        "--epochs 1000 --steps 5 --step-sleep 0.05", *QUICK, env=env,
    )  # fmt: skip
    try:
        run_dir = wait_for(lambda: run_dir_appeared(tmp_path), 60, "the run directory")
        log = run_dir / "workers" / "1" / "worker.log"
        wait_for(lambda: log.exists() and "begins at epoch" in log.read_text(), STARTUP, "worker 1")
        victim = read_json(run_dir / "workers" / "1" / "status.json")["pid"]
        os.kill(victim, signal.SIGKILL)
        t0 = time.monotonic()
        output, _ = proc.communicate(timeout=60)
        took = time.monotonic() - t0
    finally:
        stop_process(proc)
    assert proc.returncode == 1, output[-4000:]
    assert "): 0 bytes sent to 0 host(s), unchanged on 2" in output, output[:2000]
    assert f"FAILED: worker 1 ({name}) killed by SIGKILL" in output, output[-3000:]
    assert took < 30
    cluster = read_json(run_dir / "cluster.json")
    assert cluster["state"] == "failed" and cluster["failure"]["index"] == 1
    assert cluster["failure"]["reason"] == "killed by SIGKILL"
    assert wait_for(lambda: left_behind(run_dir, 2) == [], 10, "no process left")
    for h in ssh_cluster.hosts[:2]:
        assert ssh_cluster.wait_idle(h, timeout=10) == [], h.name


def test_a_script_on_slurm_through_a_login_node(
    tmp_path: Path, slurm_cluster: SlurmCluster, ssh_cluster: SshCluster
) -> None:
    """The folder ships to the login host and the sbatch script runs the wrapper (slurm_env
    --wrap): the two tasks train the script, its events and artifact come home."""
    from tests.launcher.test_slurm_train import login_node

    env = fab_env(TFCLUSTER_KNOWN_HOSTS=str(ssh_cluster.known_hosts))
    port = consecutive_ports(2)
    with login_node(ssh_cluster, slurm_cluster) as host:
        line = host.hosts_line(tf_port=port) + " scheduler=slurm workers=2 tasks_per_node=2"
        (tmp_path / "hosts.txt").write_text(line + "\n")
        deployed = run_fab(tmp_path, "deploy", env=env)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        out = run_fab(
            tmp_path, "train", "--script", str(SCRIPT), "--trainer-args",
            "--epochs 2 --steps 4 --verbose 1", *QUICK, env=env, timeout=2 * STARTUP,
        )  # fmt: skip
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert re.search(rf"script folder \w+ .*: \d+ bytes sent to {host.user}@", out.stdout)
    run_dir = only_run(tmp_path)
    check_script_run(run_dir, 2)
    for i in range(2):  # Keras' own progress bar, read by the wrapper on a Slurm task too
        st = read_json(run_dir / "workers" / str(i) / "status.json")
        assert (st["epoch"], st["epochs"], st["step"], st["steps_total"]) == (2, 2, 8, 8), st
    sbatch = (run_dir / "job.sbatch").read_text()
    assert "trainer.slurm_env --tf-port" in sbatch and " --wrap " in sbatch
    assert "/programs/" in sbatch and "tiny_keras.py" in sbatch
