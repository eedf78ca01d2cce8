"""`fab deploy | train | status | stop | fetch` on a real one-node Slurm (tests/slurmcluster.py):
through an SSH test host as the login node, and with a `localhost scheduler=slurm` line. The
job goes through sbatch and srun; its tasks are real TensorFlow workers.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dashboard.cluster import worker_rows
from dashboard.runs import load_run
from tests.launcher.helpers import (
    FAST,
    UNTIL_STOPPED,
    check_complete_run,
    fab_argv,
    fab_env,
    fill_disk,
    left_behind,
    only_run,
    read_json,
    run_dir_appeared,
    run_fab,
    small_disk,
    start_fab,
    stop_process,
    training,
    wait_for,
)
from tests.launcher.test_reliability import (
    STEPS,
    fab_train,
    host_disk_record,
    host_runs_disk,
    wait_exit,
)
from tests.slurmcluster import SlurmCluster
from tests.sshcluster import SshCluster, TestHost, free_ports, ssh_session_pids

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm")]  # one Slurm cluster
STARTUP = 240  # seconds for two TensorFlow workers to take a step on a busy 2-core machine
LONG_EPOCH = 500  # steps: enough to fill the run folder and free it again while they train


def slurm_dir(path: Path, workers: int = 2, **options: str) -> Path:
    (port,) = free_ports(1)
    extra = "".join(f" {k}={v}" for k, v in options.items())
    line = f"localhost scheduler=slurm workers={workers} tasks_per_node={workers} tf_port={port}"
    (path / "hosts.txt").write_text(line + extra + "\n")
    return path


def tf_port(job_dir: Path) -> int:
    return int((job_dir / "hosts.txt").read_text().split("tf_port=")[1].split()[0])


def gone(run_dir: Path, slurm: SlurmCluster, job_id: str) -> bool:
    """No process of the run (by run id, by worker pid) and no job left in Slurm's queue."""
    pids = [
        st["pid"]
        for i in range(2)
        if (st := read_json(run_dir / "workers" / str(i) / "status.json")) and st.get("pid")
    ]
    alive = [p for p in pids if Path(f"/proc/{p}").exists()]
    return not left_behind(run_dir, 0) and not alive and job_id not in slurm.jobs()


@contextmanager
def login_node(ssh: SshCluster, slurm: SlurmCluster) -> Iterator[TestHost]:
    """An SSH test host whose user can submit to the Slurm test cluster, as on a login node:
    SLURM_CONF at the top of its ~/.bashrc (bash reads it for SSH commands too)."""
    host = ssh.hosts[0]
    bashrc = Path(host.home) / ".bashrc"
    saved = bashrc.read_text() if bashrc.exists() else ""
    bashrc.write_text(f"export SLURM_CONF={slurm.conf}\n{saved}")
    try:
        yield host
    finally:
        bashrc.write_text(saved)


def refused_read_only_then_failed_full(
    job_dir: Path, env: dict[str, str], host: TestHost, disk: Path, slurm: SlurmCluster
) -> tuple[str, float]:
    """On the login node's runs folder `disk` (one run there already): read-only, `fab train`
    is refused before anything is submitted; full while the tasks train with backups and
    --max-restarts 1, the job fails naming the space first (srun's report survives in the
    room the script kept for it) and is not submitted again. The first failure line, and
    the seconds from the fill to `fab train`'s end."""
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    try:
        readonly = run_fab(job_dir, "train", *FAST, env=env, timeout=120)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
    assert readonly.returncode == 1 and "Traceback" not in readonly.stderr, readonly.stderr
    assert f"cannot write in {disk} (a read-only file system" in readonly.stderr
    assert len(list((job_dir / "runs").iterdir())) == 1, "no second run directory"

    args = [*FAST, *STEPS, "--epochs", "6", "--steps-per-epoch", "60", "--max-restarts", "1"]
    with fab_train(job_dir, env, *args) as (proc, out):
        wait_for(lambda: len(list((job_dir / "runs").iterdir())) == 2, 60, "the run directory")
        run_dir = sorted((job_dir / "runs").iterdir())[-1]
        wait_for(lambda: training(run_dir, 2), STARTUP, "both tasks training")
        filler = fill_disk(disk)
        t_full = time.monotonic()
        code = wait_exit(proc, out, 120)
        ended_sec = time.monotonic() - t_full
    text = out.text
    assert code == 1, text[-4000:]
    failed = [ln for ln in text.splitlines() if ln.startswith("FAILED: ")]
    where = re.escape(f"{host.home}/tfjobs/runs/{run_dir.name}")
    assert failed and re.match(
        rf"FAILED: worker (\d) \(task \1 on {slurm.node}\) no space left in {where} "
        rf"\(0 MB free\); exited with code \d+; Slurm job \d+ failed",
        failed[0],
    ), text[-4000:]
    assert "RESTART" not in text and "not restarting: worker" in text, text[-4000:]
    ended = read_json(run_dir / "cluster.json")
    assert ended["state"] == "failed" and ended["restarts"] == 0
    assert ended["failure"]["reason"].startswith("no space left in ")
    assert len(ended["slurm"]["job_ids"]) == 1
    job_id = ended["slurm"]["job_id"]
    # The job's own line about the folder (for a record closed later) is not shown as output.
    assert "\ndisk 0 w\n" in (run_dir / f"slurm-{job_id}.out").read_text()
    assert "[slurm] disk " not in text
    assert wait_for(lambda: gone(run_dir, slurm, job_id), 30, "nothing left")
    filler.unlink()
    return failed[0], ended_sec


def test_two_workers_train_through_a_login_node(
    tmp_path: Path,
    slurm_cluster: SlurmCluster,
    ssh_cluster: SshCluster,
    record_figures: Callable[..., None],
) -> None:
    """deploy, train, status, fetch through an SSH login node: the run directory lives in its
    home (the shared file system, here a tmpfs of its own) and is mirrored here; secrets never
    enter the script; a dropped SSH session to the login node is reconnected. The run folder
    fills up while the tasks train and has room again: said, recorded, shown by `fab status`,
    and the job finishes. Then, on the same folder: read-only is refused before anything is
    submitted, and full while training with --max-restarts 1 fails the job naming the space
    first, not submitted again."""
    secret = "slurm-Secret-93e1"
    env = fab_env(
        TFCLUSTER_KNOWN_HOSTS=str(ssh_cluster.known_hosts),
        MY_TOKEN=secret,
        TFCLUSTER_MIN_FREE_MB="1",
    )
    (port,) = free_ports(1)
    node = slurm_cluster.node
    with login_node(ssh_cluster, slurm_cluster) as host:
        line = host.hosts_line(tf_port=port) + " scheduler=slurm workers=2 tasks_per_node=2"
        (tmp_path / "hosts.txt").write_text(line + "\n")
        deployed = run_fab(tmp_path, "deploy", env=env)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        with host_runs_disk(host, "64m") as disk:
            t0 = time.monotonic()
            args = [*FAST, *STEPS, "--epochs", "1", "--steps-per-epoch", str(LONG_EPOCH)]
            args += ["--env", "MY_TOKEN"]
            with fab_train(tmp_path, env, *args) as (proc, out):
                run_dir = wait_for(lambda: run_dir_appeared(tmp_path), 60, "the run directory")
                status = wait_for(
                    lambda: read_json(run_dir / "workers" / "1" / "status.json"),
                    STARTUP,
                    "task 1's status",
                )
                environ = Path(f"/proc/{status['pid']}/environ").read_bytes().split(b"\0")
                assert f"MY_TOKEN={secret}".encode() in environ
                assert f"USER={host.user}".encode() in environ  # the login user's job
                assert any(e.startswith(b"SLURM_JOB_ID=") for e in environ)
                # A network blip: the sshd processes serving the launcher's session to the
                # login node die; the job runs on, and the launcher reconnects and watches it
                # to the end.
                sessions = ssh_session_pids(host)
                assert sessions, "the launcher holds an SSH session to the login node"
                for pid in sessions:
                    os.kill(pid, signal.SIGKILL)
                # The shared run folder fills up while both tasks train, then has room again.
                wait_for(lambda: training(run_dir, 2), STARTUP, "both tasks training")
                filler = fill_disk(disk)
                t_full = time.monotonic()
                full_line = out.wait(r"WARNING: \[slurm\] no space left in ", 30)
                noticed_sec = time.monotonic() - t_full
                recorded = wait_for(
                    lambda: (
                        [host_disk_record(run_dir, i) for i in (0, 1)]
                        if all(host_disk_record(run_dir, i).get("full") is True for i in (0, 1))
                        else None
                    ),
                    10,
                    "cluster.json hosts[i].disk full",
                )
                shown_full = run_fab(tmp_path, "status", env=env, timeout=60)
                filler.unlink()
                room_line = out.wait(r"WARNING: \[slurm\] has room again in ", 30)
                t_room = time.monotonic()
                wait_for(lambda: host_disk_record(run_dir, 1).get("full") is False, 10, "cleared")
                st = read_json(run_dir / "workers" / "1" / "status.json") or {}
                assert st.get("state") == "running", ("still training once freed", st)
                code = wait_exit(proc, out, STARTUP + 120)
            output = out.text
            wall, after_room = time.monotonic() - t0, time.monotonic() - t_room
            assert code == 0, output[-3000:]

            remote = f"{host.home}/tfjobs/runs/{run_dir.name}"
            full = f"no space left in {remote} (0 MB free)"
            assert full_line.endswith(
                f"{full}; every worker trains on, its monitoring waits for room"
            ), full_line
            assert [r["message"] for r in recorded] == [full, full], recorded
            assert shown_full.returncode == 0, shown_full.stdout + shown_full.stderr
            assert f"the run folder: {full}" in shown_full.stdout, shown_full.stdout
            full_rows = [r for r in shown_full.stdout.splitlines() if "disk full" in r]
            assert len(full_rows) == 2, shown_full.stdout
            assert "Traceback" not in output
            check_complete_run(run_dir, [], [f"{node}:{port}", f"{node}:{port + 1}"])
            cluster = read_json(run_dir / "cluster.json")
            job_id = cluster["slurm"]["job_id"]
            assert cluster["scheduler"] == "slurm" and cluster["slurm"]["state"] == "COMPLETED"
            assert cluster["slurm"]["run_dir"] == remote
            assert [h["name"] for h in cluster["hosts"]] == [node, node]
            assert [h["role"] for h in cluster["hosts"]] == ["chief", "worker"]
            assert [h["disk"]["full"] for h in cluster["hosts"]] == [False, False]
            script = (run_dir / "job.sbatch").read_text()
            assert script == (Path(remote) / "job.sbatch").read_text()
            assert "#SBATCH --ntasks=2" in script and "srun --kill-on-bad-exit=1" in script
            assert f"cd {host.home}/tfjobs/code/" in script
            assert f"submitted Slurm job {job_id}" in output
            assert f"[slurm] job {job_id} running on {node}" in output
            assert "finished: every worker exited 0" in output
            told = [ln for ln in output.splitlines() if "had dropped; reconnected" in ln]
            assert told and f"{host.user}@" in told[0], output
            log = (run_dir / "launcher.log").read_text()
            assert f"[1 {node}] trainer: worker 1" in log  # worker output, prefixed as for SSH
            for text in (output, script, log):
                assert secret not in text
            assert not Path(remote + ".env").exists(), "the env file is gone"

            # The dashboard reads the run like any other: both workers, their node and port.
            run = load_run(run_dir)
            assert run.warnings == [] and run.state == "finished" and run.indices == [0, 1]
            rows = worker_rows(run, {}, time.time())
            assert [(r.host, r.address, r.state) for r in rows] == [
                (node, f"{node}:{port}", "finished"),
                (node, f"{node}:{port + 1}", "finished"),
            ]

            shown = run_fab(tmp_path, "status", env=env)
            assert shown.returncode == 0, shown.stderr
            assert f"Slurm job {job_id} on {host.user}@{host.address}: completed" in shown.stdout
            rows = [r for r in shown.stdout.splitlines() if " finished " in r and " 1/1 " in r]
            assert len(rows) == 2 and "disk full" not in shown.stdout, shown.stdout
            # fab fetch into an empty copy of the run on a full local disk: one line, no
            # traceback; once there is room, everything arrives.
            record = (run_dir / "cluster.json").read_bytes()
            with small_disk(run_dir, "32m") as empty:  # mounted over the run's folder, hiding it
                (empty / "cluster.json").write_bytes(record)
                filler = fill_disk(empty)
                refused = run_fab(tmp_path, "fetch", env=env)
                assert refused.returncode == 1, refused.stdout + refused.stderr
                assert "error: fetch incomplete: cannot write" in refused.stderr, refused.stderr
                assert "No space left on device" in refused.stderr
                assert "Traceback" not in refused.stderr
                filler.unlink()
                fetched = run_fab(tmp_path, "fetch", env=env)
                assert fetched.returncode == 0, fetched.stderr
                for name in ("model.h5", "allocation"):
                    assert (empty / name).read_bytes() == (Path(remote) / name).read_bytes()
            assert gone(run_dir, slurm_cluster, job_id)

            failed, ended_sec = refused_read_only_then_failed_full(
                tmp_path, env, host, disk, slurm_cluster
            )
    print(f"slurm: 2 workers, {LONG_EPOCH} steps: {wall:.1f} s from fab train to its end")
    record_figures(
        22,
        case="Slurm: the tasks' run folder (tmpfs on the login node) full while training",
        exit_code=0,
        named_after_sec=round(noticed_sec, 1),
        warning=full_line.split("] ", 1)[-1][:120],
        cleared=room_line.split("] ", 1)[-1][:80],
        job_ended_sec_after_room=round(after_room, 1),
        status_disk_full_rows=len(full_rows),
        readonly_refused_before_submit=True,
        ended_sec_after_full=round(ended_sec, 1),
        first_failure_line=failed[:200],
        restarted=False,
        processes_left=0,
    )


def test_check_and_refusals(tmp_path: Path, slurm_cluster: SlurmCluster) -> None:
    env = fab_env(**slurm_cluster.env)
    job_dir = slurm_dir(tmp_path)
    ready = run_fab(job_dir, "check", env=env)
    assert ready.returncode == 0, ready.stdout + ready.stderr
    assert "[localhost] Slurm login: python 3." in ready.stdout
    assert "code local, partitions debug (up)" in ready.stdout
    assert "localhost is ready to submit 2 task(s)" in ready.stdout
    slurm_dir(tmp_path, partition="gpu")
    for task in ("check", "train"):
        refused = run_fab(job_dir, task, *(FAST if task == "train" else []), env=env)
        assert refused.returncode == 1, refused.stdout
        assert "partition 'gpu' does not exist; Slurm has: debug" in refused.stderr
    assert not (job_dir / "runs").exists()
    # What only sbatch can judge (here: a GPU the node does not have) fails the run at once.
    slurm_dir(tmp_path, gres="gpu:1")
    refused = run_fab(job_dir, "train", *FAST, env=env)
    assert refused.returncode == 1, refused.stdout
    assert "FAILED: localhost sbatch refused the job: sbatch: error: " in refused.stdout
    cluster = read_json(only_run(job_dir) / "cluster.json")
    assert cluster["state"] == "failed" and cluster["slurm"]["job_ids"] == []


def test_a_task_late_to_train_cancels_the_job(tmp_path: Path, slurm_cluster: SlurmCluster) -> None:
    """--start-timeout counts from the job's start; TensorFlow alone takes longer than 2 s."""
    job_dir = slurm_dir(tmp_path)
    env = fab_env(**slurm_cluster.env)
    late = run_fab(job_dir, "train", *UNTIL_STOPPED, "--start-timeout", "2", env=env, timeout=240)
    assert late.returncode == 1, late.stdout[-3000:]
    run_dir = only_run(job_dir)
    cluster = read_json(run_dir / "cluster.json")
    job_id = cluster["slurm"]["job_id"]
    node = slurm_cluster.node
    assert f"cancelling Slurm job {job_id}: worker 0 did not start within 2 s" in late.stdout
    assert f"FAILED: worker 0 (task 0 on {node}) did not start within 2 s" in late.stdout
    assert cluster["state"] == "failed" and cluster["slurm"]["state"] == "CANCELLED"
    assert cluster["failure"]["index"] == 0 and cluster["failure"]["host"] == node
    assert wait_for(lambda: gone(run_dir, slurm_cluster, job_id), 30, "nothing left")


def test_a_node_that_does_not_see_the_run_folder_is_named(
    tmp_path: Path, slurm_cluster: SlurmCluster, record_figures: Callable[..., None]
) -> None:
    """The login host's runs folder is a mount the node does not have: `fab train` runs in a
    mount namespace of its own, with a tmpfs over `runs/` that only it sees (as a login
    node's local /tmp or scratch would be). Slurm cannot start the job there; `fab train`
    names the node and the folder at once and does not submit again (--max-restarts 1)."""
    job_dir = slurm_dir(tmp_path)
    (job_dir / "runs").mkdir()  # what the node sees: an empty folder
    env = fab_env(**slurm_cluster.env)
    seen = tmp_path / "login-view.json"
    login_view = (
        'mount -t tmpfs -o size=1g tmpfs runs || exit 99; "$@"; rc=$?; '
        f'cp runs/*/cluster.json {seen}; exit "$rc"'
    )
    argv = fab_argv("train", *UNTIL_STOPPED, "--max-restarts", "1")
    t0 = time.monotonic()
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", login_view, "sh", *argv],
        cwd=job_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=STARTUP,
        check=False,
    )
    took = time.monotonic() - t0
    out = proc.stdout
    assert proc.returncode == 1, out[-3000:] + proc.stderr
    cluster = read_json(seen)
    job_id, run = cluster["slurm"]["job_id"], cluster["slurm"]["run_dir"]
    assert run == str(job_dir / "runs" / cluster["run_id"])
    node = slurm_cluster.node
    line = (
        f"Slurm job {job_id} could not start on {node}: it wrote nothing into {run}, the run "
        f"folder localhost sees, so {node} does not see that folder (a node-local folder or "
        "another mount? workdir must be on a file system that the login node and every node "
        "share); Slurm says failed (ExitCode 0:53), JobLaunchFailure"
    )
    assert f"FAILED: {line}\n" in out, out[-3000:]
    assert "not submitting again: a new job would not see the run folder either\n" in out
    assert "RESTART" not in out and "Traceback" not in out + proc.stderr
    assert cluster["state"] == "failed" and cluster["slurm"]["job_ids"] == [job_id]
    assert cluster["failure"]["reason"] in line
    assert not list((job_dir / "runs").iterdir()), "the node saw nothing of the run"
    assert job_id not in slurm_cluster.jobs()
    print(f"slurm: a node without the run folder named {took:.1f} s after fab train began")
    record_figures(
        23,
        case="Slurm: the login node's runs folder is a mount the node does not have",
        exit_code=proc.returncode,
        named_sec_after_fab_train=round(took, 1),
        first_failure_line=f"FAILED: {line}"[:200],
        jobs_submitted=len(cluster["slurm"]["job_ids"]),
    )


def test_queue_ctrl_c_and_fab_stop(tmp_path: Path, slurm_cluster: SlurmCluster) -> None:
    """A running job holds 2 of the node's 4 CPUs, so a 3-task job waits in the queue: Ctrl-C
    on that one cancels it there; then `fab stop` cancels the running one."""
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
    first = slurm_dir(tmp_path / "a")
    env = fab_env(**slurm_cluster.env)
    proc = start_fab(first, "train", *UNTIL_STOPPED, env=env)
    try:
        run_dir = wait_for(lambda: run_dir_appeared(first), 60, "the run directory")
        wait_for(lambda: training(run_dir, 2), STARTUP, "both tasks training")

        second = slurm_dir(tmp_path / "b", 3)
        waiting = start_fab(second, "train", *UNTIL_STOPPED, env=env)
        try:
            queued = wait_for(lambda: run_dir_appeared(second), 60, "the second run directory")
            wait_for(
                lambda: (read_json(queued / "cluster.json") or {}).get("slurm", {}).get("reason"),
                60,
                "the queue's reason",
            )
            waiting.send_signal(signal.SIGINT)
            said, _ = waiting.communicate(timeout=60)
        finally:
            stop_process(waiting)
        assert waiting.returncode == 130, said[-2000:]
        queued_job = read_json(queued / "cluster.json")
        assert "pending (Resources)" in said
        assert queued_job["state"] == "stopped"
        assert queued_job["hosts"] == [] and queued_job["slurm"]["state"] == "CANCELLED"
        assert queued_job["slurm"]["job_id"] not in slurm_cluster.jobs()

        job_id = read_json(run_dir / "cluster.json")["slurm"]["job_id"]
        t0 = time.monotonic()
        stopped = run_fab(first, "stop", env=env, timeout=180)
        took = time.monotonic() - t0
        assert stopped.returncode == 0, stopped.stderr
        assert f"[slurm] job {job_id} cancelled (was running on {slurm_cluster.node}" in (
            stopped.stdout
        )
        output, _ = proc.communicate(timeout=120)
    finally:
        stop_process(proc)
    assert proc.returncode == 1, output[-3000:]
    assert "stopped by `fab stop`" in output
    assert read_json(run_dir / "cluster.json")["state"] == "stopped"
    assert wait_for(lambda: gone(run_dir, slurm_cluster, job_id), 30, "nothing left")
    print(f"slurm: fab stop took {took:.1f} s")


def test_killed_task_restarts_then_a_full_folder_fails_the_job_of_a_killed_launcher(
    tmp_path: Path, slurm_cluster: SlurmCluster, record_figures: Callable[..., None]
) -> None:
    """A task killed in the first attempt: the job is submitted again. Then the launcher is
    killed: `fab status` leaves the record open while the job runs; the run folder (a 64 MB
    tmpfs) fills up and fails the job, and is emptied again before anyone looks; `fab fetch`
    writes the ending the launcher would have written, once, naming the full folder first in
    the live watch's words (from the line the job's script wrote after its tasks failed);
    `fab stop` does not relabel it."""
    job_dir = slurm_dir(tmp_path)
    env = fab_env(**slurm_cluster.env)
    node = slurm_cluster.node
    with small_disk(job_dir / "runs", "64m") as runs:
        proc = start_fab(job_dir, "train", *UNTIL_STOPPED, "--max-restarts", "1", env=env)
        try:
            run_dir = wait_for(lambda: run_dir_appeared(job_dir), 60, "the run directory")
            for attempt in (1, 2):
                wait_for(
                    lambda a=attempt: (
                        len(read_json(run_dir / "cluster.json")["attempts"]) == a
                        and training(run_dir, 2)
                    ),
                    STARTUP,
                    f"both tasks training in attempt {attempt}",
                )
                if attempt == 1:
                    status = read_json(run_dir / "workers" / "1" / "status.json")
                    os.kill(status["pid"], signal.SIGKILL)
            proc.kill()  # the launcher itself: nobody watches the job any more
            output, _ = proc.communicate(timeout=30)
            record = (run_dir / "cluster.json").read_bytes()
            running = run_fab(job_dir, "status", env=env)
            assert running.returncode == 0, running.stdout + running.stderr
            assert running.stdout.startswith(f"run {run_dir.name}: running "), running.stdout
            assert (run_dir / "cluster.json").read_bytes() == record, "no ending while it runs"
            second = read_json(run_dir / "cluster.json")["slurm"]["job_id"]
            filler = fill_disk(runs)
            t_full = time.monotonic()
            wait_for(lambda: second not in slurm_cluster.jobs(), 120, "the job to end")
            ended_sec = time.monotonic() - t_full
            filler.unlink()  # emptied before anyone looks
        finally:
            stop_process(proc)
        fetched = run_fab(job_dir, "fetch", env=env)
        assert fetched.returncode == 0, fetched.stdout + fetched.stderr
        assert f"Slurm job {second} has ended and its launcher is gone: the run is failed now" in (
            fetched.stdout
        )
        cluster = read_json(run_dir / "cluster.json")
        first = cluster["slurm"]["job_ids"][0]
        assert cluster["slurm"]["job_ids"] == [first, second]
        assert (
            f"RESTART 1/1: worker 1 (task 1 on {node}) killed by SIGKILL; Slurm job {first} "
            in (output)
        )
        assert cluster["state"] == "failed" and cluster["restarts"] == 1
        assert cluster["slurm"]["state"] == "FAILED" and cluster["finished"] is not None
        full = f"no space left in {run_dir} (0 MB free)"
        failure = cluster["failure"]
        assert failure["host"] == node and failure["index"] in (0, 1), failure
        # The words of the live watch's line (test_two_workers_train_through_a_login_node).
        ending = rf"exited with code \d+; Slurm job {second} failed \(ExitCode \d+:0\)"
        assert re.fullmatch(rf"{re.escape(full)}; {ending}", failure["reason"]), failure
        assert failure["exit_code"] > 0 and failure["log_tail"], failure
        assert [h["disk"]["message"] for h in cluster["hosts"]] == [full, full]
        assert cluster["attempts"][0]["failure"]["index"] == 1
        assert cluster["attempts"][1]["job_id"] == second
        assert cluster["attempts"][1]["failure"]["reason"] == failure["reason"]
        said = (run_dir / f"slurm-{second}.out").read_text()
        assert "\ndisk 0 w\n" in said, said  # the job's own word, in the room it kept
        shown = run_fab(job_dir, "status", env=env)
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert shown.stdout.startswith(f"run {run_dir.name}: failed "), shown.stdout
        index = failure["index"]
        assert f"failure: worker {index} ({node}) {failure['reason']}" in shown.stdout
        assert "launcher is gone" not in shown.stdout and "RESTART" not in shown.stdout
        stopped = run_fab(job_dir, "stop", env=env)
        assert stopped.returncode == 0 and f"job {second} not running" in stopped.stdout
        assert read_json(run_dir / "cluster.json") == cluster, "written once, never relabelled"
        log = (run_dir / "workers" / "1" / "worker.log").read_text()
        assert "--- restart 1: attempt 2 ---" in log
        assert "--backup" in cluster["trainer_args"]
        assert wait_for(lambda: gone(run_dir, slurm_cluster, second), 30, "nothing left")
    print(f"slurm: the job failed {ended_sec:.1f} s after its run folder filled")
    record_figures(
        23,
        case="Slurm: the run folder fills and fails the job of a killed launcher, then is emptied",
        job_ended_sec_after_full=round(ended_sec, 1),
        closed_by="fab fetch",
        failure=failure["reason"][:200],
        hosts_disk_full=[h["disk"]["full"] for h in cluster["hosts"]],
    )
