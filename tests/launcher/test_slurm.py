"""The Slurm target's pure parts: hosts-file lines, the sbatch script, and what Slurm's commands
print (scontrol, sacct, sbatch, srun's report), from tables of real output; plus
`fab export --slurm` with the real `fab`, and the Slurm job on a full local disk and with a
full run folder on the login host (real tmpfs). Jobs on a real Slurm are in
test_slurm_train.py.
"""

from __future__ import annotations

import io
import json
import subprocess
import threading
from pathlib import Path

import pytest

from launcher.backends.slurm import job_ending
from launcher.display import Output
from launcher.hostdisk import REMEMBER_SEC
from launcher.hosts import Host, HostsFileError, parse_hosts
from launcher.options import WatchOptions
from launcher.remote import CommandResult, LocalShell
from launcher.slurm import (
    FORGOTTEN,
    REPORT_RESERVE,
    JobInfo,
    SlurmSpec,
    TaskFailure,
    env_file_path,
    first_cause,
    parse_allocation,
    parse_job,
    parse_job_id,
    parse_srun_failures,
    render_sbatch,
    valid_time,
)
from launcher.slurm_job import SlurmJob
from launcher.slurm_queue import JobTrace, job_outcome, query_with_disk
from runformat import cluster_from_dict
from tests.launcher.helpers import fill_disk, run_fab, small_disk

LINE = (
    "login.cluster scheduler=slurm workers=8 tasks_per_node=2 partition=gpu gres=gpu:4 "
    "time=02:00:00 workdir=/shared/tfjobs"
)


def test_slurm_line_is_parsed() -> None:
    (host,) = parse_hosts(LINE + "\n", "h.txt")
    assert host.slurm == SlurmSpec(8, 2, "gpu", "gpu:4", "02:00:00")
    assert host.slurm.nodes == 4
    assert not host.local and host.workdir == "/shared/tfjobs"
    (local,) = parse_hosts("localhost scheduler=slurm workers=2 python=/v/bin/python\n")
    assert local.local and local.slurm == SlurmSpec(2) and local.python == "/v/bin/python"
    (ssh,) = parse_hosts("alice@login port=2222 scheduler=slurm workers=3 tasks_per_node=2\n")
    assert ssh.ssh_target == "alice@login:2222" and ssh.slurm is not None
    assert ssh.slurm.nodes == 2


BAD = [
    ("login scheduler=pbs workers=2", "'scheduler=pbs' unknown scheduler; allowed: slurm"),
    ("login scheduler=slurm", "'scheduler=slurm' needs workers=N"),
    ("login scheduler=slurm workers=0", "'workers=0' workers must be a whole number"),
    ("login scheduler=slurm workers=2 tasks_per_node=x", "tasks_per_node must be a whole"),
    ("login scheduler=slurm workers=2 partition=-x", "partition must be a Slurm partition"),
    ("login scheduler=slurm workers=2 gres=4:gpu", "'gres=4:gpu' gres must be NAME[:TYPE]"),
    ("login scheduler=slurm workers=2 time=25:61:00", "'time=25:61:00' time must be a Slurm"),
    ("login scheduler=slurm workers=2 addr=10.0.0.1", "addr does not apply to scheduler=slurm"),
    ("gpu-a workers=2", "'workers=2' workers only applies to a scheduler=slurm line"),
    ("gpu-a partition=gpu", "partition only applies to a scheduler=slurm line"),
]


@pytest.mark.parametrize(("line", "message"), BAD, ids=[b[0][6:40] for b in BAD])
def test_bad_slurm_line_names_file_line_and_value(line: str, message: str) -> None:
    with pytest.raises(HostsFileError) as err:
        parse_hosts(f"# cluster\n{line}\n", "hosts.txt")
    text = str(err.value)
    assert text.startswith("hosts.txt:2: '") and message in text, text
    assert "\n" not in text


def test_slurm_line_cannot_be_mixed_with_other_lines() -> None:
    with pytest.raises(HostsFileError) as err:
        parse_hosts("login scheduler=slurm workers=2\ngpu-b tf_port=23457\n", "hosts.txt")
    assert str(err.value) == (
        "hosts.txt:2: 'gpu-b' a scheduler=slurm line (line 1) must be the only line: Slurm "
        "runs every worker; set workers= on that line, or use SSH lines without it"
    )
    with pytest.raises(HostsFileError, match=r"hosts.txt:1: 'gpu-a' a scheduler=slurm line"):
        parse_hosts("gpu-a\nlogin scheduler=slurm workers=2\n", "hosts.txt")


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("30", True),
        ("30:00", True),
        ("02:00:00", True),
        ("1-0", True),
        ("1-12:30", True),
        ("2-23:59:59", True),
        ("1:60", False),
        ("1-24", False),
        ("2h", False),
        ("", False),
        ("1:2:3:4", False),
    ],
)
def test_time_limits(text: str, ok: bool) -> None:
    assert valid_time(text) is ok


def test_script_asks_for_the_line_and_keeps_secrets_and_quoting_out(tmp_path: Path) -> None:
    spec = SlurmSpec(8, 2, "gpu", "gpu:4", "02:00:00")
    script = render_sbatch(
        spec,
        "20261130-010203-abcd",
        "\"$HOME\"/'tfjobs/code/0123'",
        "/opt/venv/bin/python",
        23456,
        ["--dataset", "digits", "--trainer-note", "it's $(x)"],
        ["WANDB_API_KEY"],
    )
    for directive in (
        "--job-name=tfcluster-20261130-010203-abcd",
        "--nodes=4",
        "--ntasks=8",
        "--ntasks-per-node=2",
        "--partition=gpu",
        "--gres=gpu:4",
        "--time=02:00:00",
        "--output=slurm-%j.out",
    ):
        assert f"#SBATCH {directive}\n" in script
    assert "srun --kill-on-bad-exit=1 --distribution=block" in script
    assert "/opt/venv/bin/python -m trainer.slurm_env --tf-port 23456" in script
    assert "'it'\"'\"'s $(x)'" in script  # quoted, never run
    assert "WANDB_API_KEY" in script  # the name only: values travel in a 0600 file
    checked = subprocess.run(["sh", "-n"], input=script, text=True, capture_output=True)
    assert checked.returncode == 0, checked.stderr
    # srun's report of failed tasks has room kept before any task can fill the run folder.
    reserve = f'fallocate -n -l {REPORT_RESERVE} "$run_dir/slurm-$SLURM_JOB_ID.out" 2>/dev/null'
    assert script.index(reserve) < script.index("mkdir -p") < script.index("srun --kill")
    # After failed tasks, the run folder's free space and a write test, in that kept room.
    tail = script[script.index("srun --kill") :].splitlines()[3:]
    assert tail[0] == "rc=$?" and tail[-1] == 'exit "$rc"', tail
    assert '[ "$rc" -eq 0 ] || { cd "$run_dir" && printf \'disk %s %s\\n\' ' in tail[-2]
    bare = render_sbatch(SlurmSpec(1), "r", "/c", "python3", 1, [])
    assert "--partition" not in bare and "--gres" not in bare and "--time" not in bare


def test_sbatch_job_id() -> None:
    assert parse_job_id("42\n") == "42"
    assert parse_job_id("42;cluster-a\n") == "42"
    with pytest.raises(ValueError, match="sbatch printed no job id"):
        parse_job_id("sbatch: error: invalid partition specified: gpu\n")


# Real output of Slurm 22.05 on the test cluster (shortened where marked).
SCONTROL_RUNNING = (
    "JobId=2 JobName=job.sh UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901758 "
    "Nice=0 Account=(null) QOS=(null) JobState=RUNNING Reason=None Dependency=(null) Requeue=1 "
    "Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 RunTime=00:00:00 TimeLimit=UNLIMITED "
    "NodeList=vm BatchHost=vm NumNodes=1 NumCPUs=2 NumTasks=2 CPUs/Task=1 Power= "
)
SCONTROL_PENDING = (
    "JobId=7 JobName=tfcluster-x UserId=root(0) JobState=PENDING Reason=Resources "
    "Dependency=(null) ExitCode=0:0 NodeList=(null) NumNodes=2-2"
)
SCONTROL_FAILED = "JobId=2 JobState=FAILED Reason=NonZeroExitCode ExitCode=143:0 NodeList=vm"
SACCT = (
    "5|FAILED|1:0|node[1-2]|None\n5.batch|FAILED|1:0|node1|\n5.0|CANCELLED by 0|0:9|node[1-2]|\n"
)


def test_job_state_from_scontrol_or_sacct() -> None:
    running = parse_job(SCONTROL_RUNNING, "2")
    assert running is not None
    assert (running.state, running.reason, running.nodelist) == ("RUNNING", "", "vm")
    assert running.describe() == "running on vm" and not running.ended
    pending = parse_job(SCONTROL_PENDING, "7")
    assert pending is not None and pending.describe() == "pending (Resources)"
    assert pending.nodelist == ""
    failed = parse_job(SCONTROL_FAILED, "2")
    assert failed is not None and failed.ended
    assert failed.describe() == "failed (ExitCode 143:0)"
    acct = parse_job(SACCT, "5")
    assert acct is not None and acct.state == "FAILED" and acct.nodelist == "node[1-2]"
    assert acct.steps == (
        ("batch", "FAILED", "1:0", "node1"),
        ("0", "CANCELLED", "0:9", "node[1-2]"),
    )
    assert parse_job("Slurm accounting storage is disabled\n", "5") is None
    assert parse_job("", "5") is None


def test_srun_names_the_task_that_failed() -> None:
    exited = (
        "srun: error: vm: task 1: Exited with exit code 3\n"
        "srun: launch/slurm: _step_signal: Terminating StepId=2.0\n"
        "srun: error: vm: task 0: Terminated\n"
        "srun: Force Terminated StepId=2.0\n"
    )
    report = parse_srun_failures(exited)
    assert report == [
        TaskFailure(1, "vm", "Exited with exit code 3"),
        TaskFailure(0, "vm", "Terminated"),
    ]
    assert first_cause(report) == report[0] and report[0].exit_code == 3
    assert report[1].exit_code == -15 and report[1].collateral
    # Killed after a peer was terminated: the kill is the cause, whatever the order.
    killed = parse_srun_failures(
        "srun: error: n2: task 0: Terminated\nsrun: error: n1: tasks 1-2,4: Killed\n"
    )
    assert [(f.task, f.node, f.exit_code) for f in killed] == [
        (0, "n2", -15),
        (1, "n1", -9),
        (2, "n1", -9),
        (4, "n1", -9),
    ]
    cause = first_cause(killed)
    assert cause is not None and cause.task == 1
    assert first_cause([]) is None
    # A task that exited 1, and a peer srun then ended with SIGKILL (as Slurm 22.05 reports
    # it on this machine): the exit is the cause, the kill came after srun began ending.
    ended = parse_srun_failures(
        "srun: error: vm: task 1: Exited with exit code 1\n"
        "srun: launch/slurm: _step_signal: Terminating StepId=1.0\n"
        "srun: error: vm: task 0: Killed\n"
        "srun: Force Terminated StepId=1.0\n"
    )
    assert [f.collateral for f in ended] == [False, True]
    assert first_cause(ended) == ended[0]


def trace(statuses: list[dict[str, str] | None], output: str | None = "") -> JobTrace:
    return JobTrace("/shared/runs/r", "login.cluster", statuses, output)


def node(i: int) -> str:
    return f"n{i}"


def test_what_an_ended_job_means_for_each_task() -> None:
    """The launcher's reading of an ended job, which `fab status` and `fab fetch` also write
    for a run whose launcher died (the real runs: test_slurm_train.py)."""
    done: dict[str, str] = {"state": "finished"}
    failed = {"state": "failed", "error": "ValueError: bad batch"}
    assert job_outcome(JobInfo("5", "COMPLETED"), trace([None, None]), node) == (
        {0: 0, 1: 0},
        None,
    )
    assert job_outcome(JobInfo("5", FORGOTTEN), trace([done, done]), node) == ({0: 0, 1: 0}, None)
    assert JobInfo("5", FORGOTTEN).ended and not JobInfo("5", "RUNNING").ended
    killed = "srun: error: n1: task 1: Killed\nsrun: error: n0: task 0: Terminated\n"
    ended = JobInfo("5", "FAILED", exit_code="0:9")
    codes, why = job_outcome(ended, trace([None, None], killed), node)
    assert codes == {0: -15, 1: -9} and why is not None and why.retry
    assert (
        why.line() == "worker 1 (task 1 on n1) killed by SIGKILL; Slurm job 5 failed (ExitCode 0:9)"
    )
    codes, why = job_outcome(JobInfo("5", "FAILED"), trace([done, failed]), node)
    assert codes == {0: 0, 1: None} and why is not None
    assert (why.task, why.where) == (1, "n1")
    assert why.reason == "ValueError: bad batch; Slurm job 5 failed"
    codes, why = job_outcome(JobInfo("5", "TIMEOUT"), trace([None, failed]), node)
    assert codes == {0: None, 1: None} and why is not None and why.task is None
    assert why.line() == "Slurm job 5 ended timeout; see slurm-5.out in the run directory"


FULL = "no space left in /shared/runs/r (0 MB free)"


def test_a_full_run_folder_comes_first_as_the_watch_or_the_job_saw_it() -> None:
    """One composition for the live watch (its own sight of the folder) and for a record
    closed after the launcher died (`fab status` now, else the line the job's script wrote
    after its tasks failed: `disk FREE_KB w|ro` in slurm-<id>.out)."""
    exited = "srun: error: n0: task 0: Exited with exit code 1\n"
    info = JobInfo("5", "FAILED", exit_code="1:0")
    expected = (
        f"worker 0 (task 0 on n0) {FULL}; exited with code 1; Slurm job 5 failed (ExitCode 1:0)"
    )
    _, seen = job_outcome(info, trace([None, None], exited), node, FULL)
    _, told = job_outcome(info, trace([None, None], exited + "disk 0 w\n"), node)
    for why in (seen, told):
        assert why is not None and why.line() == expected and not why.retry
    _, roomy = job_outcome(info, trace([None, None], exited + "disk 5120 w\n"), node)
    assert roomy is not None and roomy.retry and roomy.reason.startswith("exited with code 1")
    _, readonly = job_outcome(info, trace([None, None], exited + "disk 5120 ro\n"), node)
    assert readonly is not None and not readonly.retry
    assert readonly.reason.startswith("/shared/runs/r is not writable (a read-only")
    assert trace([], exited).end_disk() is None and trace([], None).end_disk() is None


# srun's report on this machine's Slurm 22.05 when slurmd cannot open the tasks' --output
# (slurmd.log: "Could not open stdout file ...: No such file or directory"): srun exits 0.
LAUNCH_FAILED = (
    "srun: error: task 0 launch failed: Slurmd could not connect IO\n"
    "srun: error: task 1 launch failed: Slurmd could not connect IO\n"
)


def test_a_node_that_does_not_see_the_run_folder_is_named_with_the_path() -> None:
    """The batch node (real: test_slurm_train.py) or a task's node without the run folder the
    login host sees: named with the folder, not submitted again; srun's launch failures are
    never a finished job, though Slurm says COMPLETED."""
    report = parse_srun_failures(LAUNCH_FAILED)
    assert [(f.task, f.node, f.launch_failed, f.exit_code) for f in report] == [
        (0, "", True, None),
        (1, "", True, None),
    ]
    codes, why = job_outcome(JobInfo("5", "COMPLETED"), trace([None, None], LAUNCH_FAILED), node)
    assert codes == {0: None, 1: None} and why is not None and why.unseen
    assert why.line() == (
        "worker 0 (task 0 on n0) could not be started (launch failed: Slurmd could not connect "
        "IO): n0 cannot open /shared/runs/r/workers/0/worker.log, so it does not see the run "
        "folder login.cluster sees (a node-local folder or another mount? workdir must be on a "
        "file system that the login node and every node share); Slurm job 5 completed"
    )
    other = "srun: error: task 1 launch failed: Invalid job credential\n"
    _, why = job_outcome(JobInfo("5", "FAILED"), trace([None, None], other), node)
    assert why is not None and not why.unseen
    assert why.line() == (
        "worker 1 (task 1 on n1) could not be started (launch failed: Invalid job credential); "
        "Slurm job 5 failed"
    )
    # Nothing in the run folder, not even the job's output, which Slurm opens first.
    gone = parse_job(
        "JobId=9 JobState=FAILED Reason=JobLaunchFailure ExitCode=0:53 NodeList=vm BatchHost=vm",
        "9",
    )
    assert gone is not None and gone.node == "vm"
    codes, why = job_outcome(gone, trace([None, None], None), node)
    assert codes == {0: None, 1: None} and why is not None and why.unseen and why.task is None
    assert why.line() == (
        "Slurm job 9 could not start on vm: it wrote nothing into /shared/runs/r, the run folder "
        "login.cluster sees, so vm does not see that folder (a node-local folder or another "
        "mount? workdir must be on a file system that the login node and every node share); "
        "Slurm says failed (ExitCode 0:53), JobLaunchFailure"
    )
    # An output there, or no node yet (cancelled while pending): not that.
    _, why = job_outcome(gone, trace([None, None], ""), node)
    assert why is not None and not why.unseen
    _, why = job_outcome(JobInfo("9", "FAILED"), trace([None, None], None), node)
    assert why is not None and not why.unseen


def test_allocation_file() -> None:
    assert parse_allocation("12\nnode[1-2]\n2(x2)\n") == ("12", "node[1-2]", "2(x2)")
    assert parse_allocation("12\n") is None


def test_fab_export_prints_the_script_fab_train_submits(tmp_path: Path) -> None:
    (tmp_path / "hosts.txt").write_text(LINE + " python=/shared/venv/bin/python\n")
    out = run_fab(tmp_path, "export", "--slurm", "--dataset", "digits", "--epochs", "3")
    assert out.returncode == 0, out.stderr
    script = out.stdout
    assert script.startswith("#!/bin/sh\n#SBATCH --job-name=tfcluster-")
    assert "#SBATCH --gres=gpu:4\n" in script
    assert 'cd "$HOME"/\'' not in script and "cd /shared/tfjobs/code/" in script
    assert "/shared/venv/bin/python -m trainer.slurm_env --tf-port 23456" in script
    assert '--run-dir "$run_dir" --epochs 3 --dataset digits\nrc=$?\n' in script
    assert not (tmp_path / "runs").exists()
    (tmp_path / "hosts.txt").write_text("gpu-a\n")
    refused = run_fab(tmp_path, "export", "--slurm")
    assert refused.returncode == 1
    assert "needs a scheduler=slurm line in the hosts file" in refused.stderr
    bare = run_fab(tmp_path, "export")
    assert bare.returncode == 2 and "--slurm" in bare.stderr


class CommandsSeen(LocalShell):
    """This machine as the login host, keeping every command the launcher ran there."""

    def __init__(self, host: Host) -> None:
        super().__init__(host)
        self.commands: list[str] = []

    def run(self, command: str, timeout: float | None = None) -> CommandResult:
        self.commands.append(command)
        return super().run(command, timeout)


def test_a_full_local_disk_keeps_the_slurm_job_and_brings_it_home(tmp_path: Path) -> None:
    """As for SSH hosts (test_reliability.py): cluster.json and the mirror each warn once and
    the job goes on; once the job has ended the launcher waits for room, then finishes,
    removing the --env file once however often it retries the record. The login host is
    this machine through LocalShell, its run directory a folder here."""
    host = parse_hosts("login.cluster scheduler=slurm workers=2\n")[0]
    assert host.slurm is not None
    remote = tmp_path / "login-run"
    sent = {
        "workers/0/worker.log": b"trained\n" * 100,
        "workers/1/status.json": b'{"state": "finished"}',
        "model.h5": b"model" * 2000,
        "slurm-7.out": b"srun: job 7 done\n",
    }
    for rel, data in sent.items():
        (remote / rel).parent.mkdir(parents=True, exist_ok=True)
        (remote / rel).write_bytes(data)
    env_file = Path(env_file_path(str(remote)))
    env_file.write_text("export MY_TOKEN=x\n")
    shell = CommandsSeen(host)
    with small_disk(tmp_path / "small", "1m") as disk:
        local = disk / "run"
        local.mkdir()
        stream = io.StringIO()
        cluster = {"run_id": "run", "state": "running", "slurm": {"job_id": "7", "job_ids": ["7"]}}
        watch = WatchOptions(interval=0.5, contact_timeout=60)
        job = SlurmJob(
            shell, host.slurm, str(remote), local, cluster, Output(stream, live=False),
            {"MY_TOKEN": "x"}, {}, watch,
        )  # fmt: skip
        job.job_id = "7"
        filler = fill_disk(disk)
        assert not job.save(state="running")
        assert not job.save(state="running")  # the same refusal: no second warning
        job._sync_final()  # the job ended: its last pass cannot write here either
        job._sync_final()
        text = stream.getvalue()
        assert text.count(f"WARNING: cannot write {local / 'cluster.json'}: No space left") == 1
        assert text.count("the job goes on, mirroring is retried") == 1, text
        assert job._save_end_problems(state="finished")  # a first try of the final record
        assert not env_file.exists()
        threading.Timer(1.5, filler.unlink).start()  # the user makes room
        assert job._end_finished() == 0
        text = stream.getvalue()
        assert "WARNING: waiting for disk space" in text
        assert "brought the run home" in text
        assert "mirroring works again" in text
        assert json.loads((local / "cluster.json").read_text())["state"] == "finished"
        for rel, data in sent.items():
            assert (local / rel).read_bytes() == data, rel
        assert not [p for p in local.rglob("*") if p.name.startswith(".")]  # no partial files
        assert [c for c in shell.commands if c.startswith("rm -f")] == [f"rm -f {env_file}"]


def test_a_full_run_folder_is_told_recorded_and_names_the_failure(tmp_path: Path) -> None:
    """The tasks' shared run folder on the login host (a real tmpfs here, through LocalShell)
    fills up: the tick's one command brings its free space, one warning, `disk full` on
    every row and every task's `hosts[i].disk`; a task that then fails is named with the
    space first and the job is not submitted again; room again is said and recorded. The
    real job: test_slurm_train.py."""
    host = parse_hosts("login.cluster scheduler=slurm workers=2\n")[0]
    assert host.slurm is not None
    shell = CommandsSeen(host)
    with small_disk(tmp_path / "login-run", "4m") as remote:
        (remote / "slurm-7.out").write_text(
            "srun: error: n0: task 0: Exited with exit code 1\n"
            "srun: launch/slurm: _step_signal: Terminating StepId=7.0\n"
            "srun: error: n0: task 1: Terminated\n"
        )
        (remote / "allocation").write_text("7\nn0\n2\n")
        local = tmp_path / "run"
        local.mkdir()
        stream = io.StringIO()
        cluster = {"run_id": "run", "state": "running", "slurm": {"job_id": "7", "job_ids": ["7"]}}
        watch = WatchOptions(interval=0.5, max_restarts=1)
        job = SlurmJob(
            shell, host.slurm, str(remote), local, cluster, Output(stream, live=False),
            {}, {}, watch,
        )  # fmt: skip
        job.job_id = "7"
        job._tick()  # also mirrors the allocation home
        job._seen(JobInfo("7", "RUNNING", nodelist="n0"))
        assert [h["name"] for h in cluster["hosts"]] == ["n0", "n0"]
        assert all("disk" not in h for h in cluster["hosts"]), "room: nothing recorded"
        filler = fill_disk(remote)
        asked = len(shell.commands)
        job._tick()
        job._tick()
        assert len(shell.commands) == asked + 2, "one round trip per tick"
        assert "scontrol" in shell.commands[-1] and "df -Pk" in shell.commands[-1]
        text = stream.getvalue()
        full = f"no space left in {remote} (0 MB free)"
        said = f"WARNING: [slurm] {full}; every worker trains on, its monitoring waits for room"
        assert text.count(said) == 1, text
        saved = json.loads((local / "cluster.json").read_text())
        assert [h["disk"] for h in saved["hosts"]] == [
            {"full": True, "path": str(remote), "free_mb": 0.0, "message": full}
        ] * 2
        info, disk = query_with_disk(shell, "7", str(remote))
        assert info is None and disk is not None and disk.full  # what `fab status` asks
        job.out.plain_gap = 0.0
        (local / "workers" / "0").mkdir(parents=True, exist_ok=True)
        (local / "workers" / "0" / "status.json").write_text(
            '{"state": "running", "step": 3, "steps_total": 10}'
        )
        job._progress()
        assert "[0 n0] disk full  running" in stream.getvalue(), stream.getvalue()

        failure = job._ended(JobInfo("7", "FAILED", exit_code="1:0"))
        assert failure is not None and not failure.retry
        assert failure.line() == (
            f"worker 0 (task 0 on n0) {full}; exited with code 1; Slurm job 7 failed (ExitCode 1:0)"
        )
        assert not job._can_restart(failure)
        assert f"not restarting: {failure.line()}; make room there first" in stream.getvalue()
        # `fab status` for a launcher that is gone: the same words, from the same code.
        saved = json.loads((local / "cluster.json").read_text())
        saved["slurm"]["run_dir"] = str(remote)
        record = cluster_from_dict(saved, [])
        _, disk = query_with_disk(shell, "7", str(remote))
        ended = JobInfo("7", "FAILED", exit_code="1:0")
        closed = job_ending(shell, local, record, ended, [None, None], disk)
        assert closed is not None and closed["state"] == "failed"
        assert closed["failure"]["reason"] == failure.reason
        assert [h["disk"]["message"] for h in closed["hosts"]] == [full, full]

        filler.unlink()
        job._tick()
        assert f"WARNING: [slurm] has room again in {remote} (" in stream.getvalue()
        saved = json.loads((local / "cluster.json").read_text())
        assert [h["disk"]["full"] for h in saved["hosts"]] == [False, False]
        # A failure soon after is still the disk's; in a new attempt, or long after, not.
        assert job.run_disk.trouble(job.clock()) == full
        assert job.run_disk.trouble(job.clock() + REMEMBER_SEC + 1) is None
        job.run_disk.clear()  # as a new attempt (_reset) does
        again = job._ended(JobInfo("7", "FAILED", exit_code="1:0"))
        assert again is not None and again.retry and again.reason.startswith("exited with code 1")
