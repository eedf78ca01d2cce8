"""Slurm, as the launcher sees it: the hosts-file options, the sbatch script, and what Slurm's
commands (sbatch, scontrol, sacct, srun's own report, scancel) say back.

Everything here is pure (text in, text or values out), so every rule is tested from tables;
launcher/slurm_queue.py runs these commands on the login host (or this machine) and
launcher/slurm_job.py watches the job. The script hands each task to
`python -m trainer.slurm_env`, which builds its TF_CONFIG from the step's environment and
becomes `python -m trainer`.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from launcher import registry
from launcher.commands import disk_command
from runformat.paths import SLURM_ALLOCATION, SLURM_OUTPUT_PATTERN, SLURM_SCRIPT, slurm_output

SLURM_KEYS = ("scheduler", "workers", "tasks_per_node", "partition", "gres", "time")
PENDING, RUNNING = "PENDING", "RUNNING"
# The launcher's word for a job that neither scontrol nor sacct knows any more, once other
# signs say it is over: the controller forgets ended jobs (MinJobAge) and keeps no others.
FORGOTTEN = "UNKNOWN"
# Job states after which nothing of the job runs any more (squeue/scontrol/sacct spell them so).
ENDED = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "SPECIAL_EXIT",
        "REVOKED",
    }
)
# Ended by Slurm, not by a task: the job, not a task, is named as the cause.
JOB_CAUSES = frozenset(
    {"CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL", "DEADLINE"}
)
# Room kept in the job's output file (fallocate --keep-size) for srun's report of the tasks
# that failed: a run folder that fills up must not take the one record of who failed, and how.
REPORT_RESERVE = "64K"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_GRES = re.compile(r"[A-Za-z][A-Za-z0-9_-]*(:[A-Za-z0-9_.-]+)?(:[0-9]+)?")
_TIME = re.compile(
    r"(?:(\d+)-(\d{1,2})(?::(\d{1,2})(?::(\d{1,2}))?)?|(\d+)(?::(\d{1,2})(?::(\d{1,2}))?)?)"
)
_SRUN_TASKS = re.compile(r"srun: error: (\S+): tasks? ([0-9,-]+): (.+)")
# A task srun could not start (Slurm 22.05 names no node here): `Slurmd could not connect IO`
# when the node cannot open the task's output file, i.e. does not see the run folder.
_SRUN_LAUNCH = re.compile(r"srun: error: tasks? ([0-9,-]+) launch failed: (.+)")
LAUNCH_FAILED = "launch failed"
_STEP_ENDING = re.compile(r"srun: .*(_step_signal: Terminating|Force Terminated) StepId")


class SlurmOptionError(ValueError):
    """A Slurm option of a hosts-file line that cannot be used; `pair` is the `key=value`."""

    def __init__(self, pair: str, message: str) -> None:
        super().__init__(message)
        self.pair = pair
        self.message = message


@dataclass(frozen=True)
class SlurmSpec:
    """What a `scheduler=slurm` line asks Slurm for: tasks (one worker each) and resources."""

    workers: int
    tasks_per_node: int = 1
    partition: str | None = None
    gres: str | None = None
    time: str | None = None

    @property
    def nodes(self) -> int:
        return -(-self.workers // self.tasks_per_node)


def _count(options: Mapping[str, str], key: str, default: int | None) -> int:
    value = options.get(key)
    if value is None:
        if default is None:
            raise SlurmOptionError(
                "scheduler=slurm", f"needs {key}=N, how many workers (Slurm tasks) to run"
            )
        return default
    if not value.isdigit() or not 1 <= int(value) <= 100000:
        raise SlurmOptionError(f"{key}={value}", f"{key} must be a whole number from 1 to 100000")
    return int(value)


def valid_time(text: str) -> bool:
    """Slurm's --time forms: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S."""
    m = _TIME.fullmatch(text)
    if not m:
        return False
    small = [g for g in (m.group(3), m.group(4), m.group(6), m.group(7)) if g]
    hours = m.group(2)
    return all(int(g) < 60 for g in small) and (hours is None or int(hours) < 24)


def parse_slurm_options(options: Mapping[str, str]) -> SlurmSpec | None:
    """The SlurmSpec of a hosts-file line, None for an SSH or local line; errors name the pair."""
    scheduler = options.get("scheduler", registry.DEFAULT)
    if scheduler not in registry.names():
        raise SlurmOptionError(
            f"scheduler={scheduler}", f"unknown scheduler; allowed: {', '.join(registry.names())}"
        )
    if scheduler != "slurm":
        for key in SLURM_KEYS[1:]:
            if key in options:
                raise SlurmOptionError(
                    f"{key}={options[key]}", f"{key} only applies to a scheduler=slurm line"
                )
        return None
    if "addr" in options:
        raise SlurmOptionError(
            f"addr={options['addr']}",
            "addr does not apply to scheduler=slurm: Slurm picks the nodes, and each task's "
            "address is its node's name",
        )
    spec = SlurmSpec(
        workers=_count(options, "workers", None),
        tasks_per_node=_count(options, "tasks_per_node", 1),
        partition=options.get("partition"),
        gres=options.get("gres"),
        time=options.get("time"),
    )
    if spec.partition is not None and not _NAME.fullmatch(spec.partition):
        raise SlurmOptionError(
            f"partition={spec.partition}", "partition must be a Slurm partition name"
        )
    if spec.gres is not None and not all(_GRES.fullmatch(g) for g in spec.gres.split(",")):
        raise SlurmOptionError(
            f"gres={spec.gres}", "gres must be NAME[:TYPE][:COUNT][,...], e.g. gpu:4 or gpu:a100:2"
        )
    if spec.time is not None and not valid_time(spec.time):
        raise SlurmOptionError(
            f"time={spec.time}",
            "time must be a Slurm time limit: MINUTES, HH:MM:SS or DAYS-HH[:MM[:SS]]",
        )
    return spec


def render_sbatch(
    spec: SlurmSpec,
    run_id: str,
    code_dir: str,
    python: str,
    tf_port: int,
    trainer_args: Sequence[str],
    env_names: Sequence[str] = (),
    program: str | None = None,
) -> str:
    """The batch script: submitted from the run directory, which becomes every task's run dir.
    With `program` (a user's script) the tasks run the wrapper (`--wrap`), whose arguments
    `trainer_args` are then.

    `code_dir` is a shell word already (an absolute quoted path, or "$HOME"/'...'). Secrets
    never enter the script: they come from a 0600 file beside the run directory, read and
    deleted by the job.
    """
    directives = [
        f"--job-name=tfcluster-{run_id}",
        f"--nodes={spec.nodes}",
        f"--ntasks={spec.workers}",
        f"--ntasks-per-node={spec.tasks_per_node}",
    ]
    directives += [f"--partition={spec.partition}"] if spec.partition else []
    directives += [f"--gres={spec.gres}"] if spec.gres else []
    directives += [f"--time={spec.time}"] if spec.time else []
    directives += [f"--output={SLURM_OUTPUT_PATTERN}"]
    argv = [python, "-m", "trainer.slurm_env", "--tf-port", str(tf_port)]
    argv += ["--wrap"] if program is not None else []
    runs = f"your program {program} through trainer.wrap" if program else "python -m trainer"
    trainer = " ".join(shlex.quote(a) for a in trainer_args)
    workers = " ".join(str(i) for i in range(spec.workers))
    env_line = (
        f"# environment passed with --env (values in the file, not here): {', '.join(env_names)}\n"
        if env_names
        else ""
    )
    return (
        "#!/bin/sh\n" + "".join(f"#SBATCH {d}\n" for d in directives) + "#\n"
        f"# tfcluster run {run_id}: {spec.workers} TensorFlow worker(s), "
        f"{spec.tasks_per_node} per node, task i = worker i (task 0 is the chief).\n"
        "# Submit from the run directory: cd RUN_DIR && sbatch --parsable job.sbatch\n"
        "# Each task builds its TF_CONFIG from the step (trainer.slurm_env) and runs\n"
        f"# {runs}; tasks on one node listen on ports {tf_port}, {tf_port + 1}, ...\n"
        f"{env_line}"
        'run_dir="$SLURM_SUBMIT_DIR"\n'
        'env_file="$run_dir.env"\n'
        'if [ -f "$env_file" ]; then . "$env_file"; rm -f "$env_file"; fi\n'
        "# room for srun's report of failed tasks, even once the run folder is full\n"
        f'fallocate -n -l {REPORT_RESERVE} "$run_dir/{slurm_output("$SLURM_JOB_ID")}" 2>/dev/null\n'
        f'for i in {workers}; do mkdir -p "$run_dir/workers/$i"; done\n'
        'printf \'%s\\n\' "$SLURM_JOB_ID" "$SLURM_JOB_NODELIST" "$SLURM_TASKS_PER_NODE" '
        f'> "$run_dir/{SLURM_ALLOCATION}.tmp" && '
        f'mv "$run_dir/{SLURM_ALLOCATION}.tmp" "$run_dir/{SLURM_ALLOCATION}"\n'
        "export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2\n"
        f"cd {code_dir} || exit 1\n"
        "srun --kill-on-bad-exit=1 --distribution=block --open-mode=append \\\n"
        '  --output="$run_dir/workers/%t/worker.log" \\\n'
        f'  {" ".join(shlex.quote(a) for a in argv)} --run-dir "$run_dir"'
        + (f" {trainer}" if trainer else "")
        + "\nrc=$?\n"
        "# the run folder as failed tasks left it (free KB, writable), in the room kept above:\n"
        "# a full one is named as the cause, even by a `fab status` long after it was emptied\n"
        f'[ "$rc" -eq 0 ] || {{ cd "$run_dir" && {disk_command(".")}; }}\n'
        'exit "$rc"\n'
    )


def env_file_path(run_dir: str) -> str:
    """Beside the run directory (never mirrored), where the script looks for --env values."""
    return f"{run_dir}.env"


def submit_command(run_dir: str) -> str:
    return f"cd {shlex.quote(run_dir)} && sbatch --parsable {SLURM_SCRIPT}"


def parse_job_id(stdout: str) -> str:
    """`sbatch --parsable` prints `ID` or `ID;CLUSTER`; ValueError if it printed no job id."""
    first = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    job_id = first.split(";")[0].strip()
    if not job_id.isdigit():
        raise ValueError(f"sbatch printed no job id: {stdout.strip()[:200]!r}")
    return job_id


def job_command(job_id: str) -> str:
    """The job's state: scontrol while the controller remembers it, then sacct, if any."""
    j = shlex.quote(job_id)
    return (
        f"scontrol -o show job {j} 2>/dev/null || "
        f"sacct -n -P -j {j} -o JobID,State,ExitCode,NodeList,Reason 2>/dev/null || true"
    )


def cancel_command(job_id: str) -> str:
    return f"scancel {shlex.quote(job_id)}"


@dataclass(frozen=True)
class JobInfo:
    """One job as Slurm reports it. `state` is Slurm's word (PENDING, RUNNING, COMPLETED...)."""

    job_id: str
    state: str
    reason: str = ""
    nodelist: str = ""
    exit_code: str = ""
    batch_host: str = ""  # the node that runs the batch script (scontrol only)
    # From sacct only: (step id, state, exit code, node list) of each step.
    steps: tuple[tuple[str, str, str, str], ...] = ()

    @property
    def ended(self) -> bool:
        return self.state in ENDED or self.state == FORGOTTEN

    @property
    def node(self) -> str:
        """Where the batch script ran (or was to run): its first node."""
        return self.batch_host or self.nodelist

    def describe(self) -> str:
        """`PENDING (Resources)`, `RUNNING on node[1-2]`, `FAILED (exit 1:0)`."""
        if self.state == PENDING:
            return f"pending ({self.reason})" if self.reason else "pending"
        if self.state == RUNNING:
            return f"running on {self.nodelist}" if self.nodelist else "running"
        text = self.state.lower()
        return f"{text} (ExitCode {self.exit_code})" if self.exit_code else text


def parse_scontrol(text: str) -> JobInfo | None:
    """`scontrol -o show job` (one line of Key=Value); None if it is not such a line."""
    fields = dict(re.findall(r"(?:^|\s)([A-Za-z][A-Za-z/:]*)=(\S*)", text))
    if "JobId" not in fields or "JobState" not in fields:
        return None
    nodes = fields.get("NodeList", "")
    return JobInfo(
        job_id=fields["JobId"],
        state=fields["JobState"],
        reason="" if fields.get("Reason") in (None, "None", "(null)") else fields["Reason"],
        nodelist="" if nodes in ("(null)", "None") else nodes,
        exit_code=fields.get("ExitCode", ""),
        batch_host="" if fields.get("BatchHost") in (None, "(null)") else fields["BatchHost"],
    )


def parse_sacct(text: str, job_id: str) -> JobInfo | None:
    """`sacct -n -P -o JobID,State,ExitCode,NodeList,Reason`: the job line and its steps."""
    job: JobInfo | None = None
    steps: list[tuple[str, str, str, str]] = []
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < 4:
            continue
        jid, state, code, nodes = parts[:4]
        # `CANCELLED by 0`: the word is the state.
        word = state.split()[0] if state.strip() else ""
        if jid == job_id:
            reason = parts[4] if len(parts) > 4 and parts[4] != "None" else ""
            job = JobInfo(job_id, word, reason, nodes if nodes != "None assigned" else "", code)
        elif jid.startswith(job_id + "."):
            steps.append((jid.split(".", 1)[1], word, code, nodes))
    if job is None:
        return None
    return JobInfo(
        job.job_id, job.state, job.reason, job.nodelist, job.exit_code, steps=tuple(steps)
    )


def parse_job(text: str, job_id: str) -> JobInfo | None:
    """What `job_command` printed, from either scontrol or sacct; None if neither knew it."""
    return parse_scontrol(text) or parse_sacct(text, job_id)


@dataclass(frozen=True)
class TaskFailure:
    """A task that srun reported as ended badly: its rank, node and what happened."""

    task: int
    node: str
    what: str  # srun's words: `Killed`, `Exited with exit code 3`, `Terminated`
    # Reported after srun began ending the step for an earlier failure (`_step_signal:
    # Terminating StepId=...`): a peer that srun itself killed, whatever the signal.
    after_step_end: bool = field(default=False, compare=False)

    @property
    def exit_code(self) -> int | None:
        """The exit code (negative for a signal), as the launcher records worker exit codes."""
        m = re.fullmatch(r"Exited with exit code (\d+)", self.what)
        if m:
            return int(m.group(1))
        signals = {"Killed": -9, "Terminated": -15, "Segmentation fault": -11, "Aborted": -6}
        return signals.get(self.what)

    @property
    def launch_failed(self) -> bool:
        """srun could not start it at all (its node could not open its output, say)."""
        return self.what.startswith(LAUNCH_FAILED)

    @property
    def collateral(self) -> bool:
        """Ended because srun ended the step after another task failed (--kill-on-bad-exit)."""
        return self.what == "Terminated" or self.after_step_end


def _ranks(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        if first.isdigit():
            out += list(range(int(first), int(last or first) + 1))
    return out


def parse_srun_failures(text: str) -> list[TaskFailure]:
    """srun's own lines in the job's output (`srun: error: node1: task 1: Killed`, `srun:
    error: task 1 launch failed: ...`, whose node is not named: ""), in order."""
    found: list[TaskFailure] = []
    ending = False
    for line in text.splitlines():
        m = _SRUN_TASKS.search(line)
        launch = None if m else _SRUN_LAUNCH.search(line)
        if m:
            what = m.group(3).strip()
            found += [TaskFailure(t, m.group(1), what, ending) for t in _ranks(m.group(2))]
        elif launch:
            what = f"{LAUNCH_FAILED}: {launch.group(2).strip()}"
            found += [TaskFailure(t, "", what, ending) for t in _ranks(launch.group(1))]
        elif _STEP_ENDING.search(line):
            ending = True
    return found


def first_cause(failures: Sequence[TaskFailure]) -> TaskFailure | None:
    """The task that ended the step: one srun did not end itself, a killed one before one that
    exited (its peers abort a moment after it dies), else the first reported."""

    def rank(f: TaskFailure) -> tuple[bool, bool]:
        killed = f.exit_code is not None and f.exit_code < 0
        return f.collateral, not killed

    return min(failures, key=rank) if failures else None


def parse_allocation(text: str) -> tuple[str, str, str] | None:
    """The `allocation` file the job writes: job id, node list, tasks per node."""
    lines = [line.strip() for line in text.splitlines()]
    if len(lines) < 3 or not all(lines[:3]):
        return None
    return lines[0], lines[1], lines[2]
