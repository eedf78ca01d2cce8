"""fab check | deploy | train | status | stop | fetch: thin tasks over the launcher package.

Every task reads the hosts file itself (default ./hosts.txt; --hosts-file, $TFCLUSTER_HOSTS or
`tfcluster: {hosts_file: ...}` in fabric.yaml) and acts on all hosts at once. Do not use
`fab -H`: Fabric would run the task host after host and a blocking worker would hang the job.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fabric import task
from invoke.exceptions import Exit

from launcher import tasks
from launcher.contact import DEFAULT_CONTACT_TIMEOUT, QUICK_CONTACT_TIMEOUT
from launcher.display import Output
from launcher.errors import UserError
from launcher.hosts import HostsFileError
from launcher.options import TrainOptions, Verbosity, WatchOptions
from launcher.remote import DEFAULT_KNOWN_HOSTS, SshSettings
from launcher.settings import Settings
from runformat import RUNS_DIR

CONTACT_HELP = (
    "seconds a host may go without answering (reconnecting with back-off) before it counts "
    "as lost; default"
)
HOSTS_HELP = "hosts file, one worker per line (default: ./hosts.txt or $TFCLUSTER_HOSTS)"
SSH_HELP = {
    "hosts_file": HOSTS_HELP,
    "known_hosts": "known_hosts file to verify host keys (default ~/.ssh/known_hosts or "
    "$TFCLUSTER_KNOWN_HOSTS)",
    "accept_new_host_keys": "trust hosts not yet in known_hosts and record their keys "
    "(a changed key is still refused)",
}
TRAINER_HELP = {
    "epochs": "trainer: passes over the data",
    "batch_size": "trainer: per-worker batch size (global batch = this x workers)",
    "steps_per_epoch": "trainer: global steps per epoch",
    "learning_rate": "trainer: Adam step size",
    "seed": "trainer: one seed for all workers",
    "dataset": "trainer: mnist, digits (bundled, offline) or a path to an mnist.npz",
    "data": "trainer: a staged mnist.npz path on the hosts",
    "shard": "trainer: data or index",
    "log_every": "trainer: write progress every N steps",
    "threads": "trainer: TensorFlow CPU threads per worker",
    "trainer_args": "more trainer options as one string, e.g. '--no-validation'; with "
    "--script, the script's own arguments",
}
SCRIPT_HELP = {
    "script": "run your own program (a .py file) on every worker instead of the built-in "
    "trainer; its folder ships to every host (see README: Your own program)",
    "folder": "with --script: the folder that ships (default: the script's own folder)",
}


def _trainer_options(given: dict[str, Any]) -> dict[str, Any]:
    """The trainer's own options among a task's arguments (the keys of TRAINER_HELP)."""
    return {name: given[name] for name in TRAINER_HELP if name != "trainer_args"}


def _script(script: Any, folder: Any) -> tuple[str | None, str | None]:
    """--script and --folder as given (a bare `--script` with no value is a mistake)."""
    for name, value in (("script", script), ("folder", folder)):
        if value is True or value == "":
            raise Exit(f"error: --{name}: expected a path", 2)
    return script, folder


def _split(trainer_args: str) -> list[str]:
    try:
        return shlex.split(trainer_args)
    except ValueError as exc:
        raise Exit(f"error: --trainer-args: {exc}", 2) from None


def _config(c: Any, key: str) -> Any:
    section = c.config.get("tfcluster", None) if hasattr(c, "config") else None
    return section.get(key) if section else None


def _settings(
    c: Any, hosts_file: str | None, known_hosts: str | None, accept_new: bool
) -> Settings:
    path = (
        hosts_file or os.environ.get("TFCLUSTER_HOSTS") or _config(c, "hosts_file") or "hosts.txt"
    )
    known = (
        known_hosts
        or os.environ.get("TFCLUSTER_KNOWN_HOSTS")
        or _config(c, "known_hosts")
        or DEFAULT_KNOWN_HOSTS
    )
    runs = os.environ.get("TFCLUSTER_RUNS") or _config(c, "runs_dir") or str(RUNS_DIR)
    return Settings(Path(path), SshSettings(known, accept_new), Path(runs))


def _run(action: Callable[[], int]) -> None:
    """Report user errors as one clean message and exit code, never a traceback."""
    try:
        code = action()
    except HostsFileError as exc:
        raise Exit(f"error: {exc}", 2) from None
    except UserError as exc:
        raise Exit(f"error: {exc}", exc.code) from None
    if code:
        raise Exit(code=code)


@task(auto_shortflags=False, help=SSH_HELP)
def check(c, hosts_file=None, known_hosts=None, accept_new_host_keys=False):
    """Check every host, changing nothing.

    Reaches every host at once and prints one row each: SSH, python, TensorFlow, tf_port,
    free disk, deployed code, clock and network; a Slurm line checks its login host.
    """
    s = _settings(c, hosts_file, known_hosts, accept_new_host_keys)
    _run(lambda: tasks.check(s, Output()))


@task(
    auto_shortflags=False,
    help={
        **SSH_HELP,
        "venv": "also create/update <workdir>/venv on each host from trainer/requirements.txt",
        "mnist": "a local mnist.npz to stage on every host as <workdir>/data/mnist.npz",
        "requirements": "with --venv: also pip install this requirements file (your own "
        "program's packages) into every host's venv; redone only when the file changes",
    },
)
def deploy(
    c,
    hosts_file=None,
    known_hosts=None,
    accept_new_host_keys=False,
    venv=False,
    mnist=None,
    requirements=None,
):
    """Ship the code to every SSH host.

    Sends trainer/ and runformat/ to every SSH host in parallel, skipped where that version
    is there already; optionally a venv with the trainer's requirements and an mnist.npz.
    """
    s = _settings(c, hosts_file, known_hosts, accept_new_host_keys)
    _run(lambda: tasks.deploy(s, Output(), venv=venv, mnist=mnist, requirements=requirements))


@task(
    auto_shortflags=False,
    iterable=["env"],
    help={
        **SSH_HELP,
        **TRAINER_HELP,
        **SCRIPT_HELP,
        "env": "pass NAME (value from here) or NAME=VALUE to every worker; values are never "
        "printed or logged (repeatable)",
        "start_timeout": "seconds a worker may take to start training before the job stops",
        "stall_timeout": "seconds a running worker may go without progress before the job stops",
        "grace": "seconds between TERM and KILL when stopping workers",
        "interval": "seconds between polls and log mirroring",
        "max_restarts": "restart the whole job up to N times after a worker fails, resuming "
        "from the last completed epoch (turns on the trainer's --backup; a script resumes "
        "with BackupAndRestore on $TFCLUSTER_BACKUP_DIR)",
        "verbose": "also stream every worker's whole output, prefixed (TensorFlow's logs "
        "included); Keras' per-epoch lines from the chief only",
        "quiet": "print only events (started, restarted, failed, stopped) and the summary",
        "contact_timeout": f"{CONTACT_HELP} {DEFAULT_CONTACT_TIMEOUT:g} (the workers train on "
        "while the launcher reconnects)",
    },
)
def train(
    c,
    hosts_file=None,
    known_hosts=None,
    accept_new_host_keys=False,
    epochs=None,
    batch_size=None,
    steps_per_epoch=None,
    learning_rate=None,
    seed=None,
    dataset=None,
    data=None,
    shard=None,
    log_every=None,
    threads=None,
    trainer_args="",
    script=None,
    folder=None,
    env=None,
    start_timeout=120.0,
    stall_timeout=300.0,
    grace=5.0,
    interval=2.0,
    max_restarts=0,
    verbose=False,
    quiet=False,
    contact_timeout=DEFAULT_CONTACT_TIMEOUT,
):
    """Train on every host at once, watching the job to its end.

    Starts the trainer (or --script, your own program) on every host (or as one Slurm job),
    shows a live table, mirrors the
    run into runs/<run-id>, and stops every worker when one fails; --max-restarts starts
    the job again from its last completed epoch.
    """
    s = _settings(c, hosts_file, known_hosts, accept_new_host_keys)
    options = _trainer_options(locals())
    watch = WatchOptions(
        start_timeout=float(start_timeout),
        stall_timeout=float(stall_timeout),
        grace=float(grace),
        interval=float(interval),
        max_restarts=int(max_restarts),
        contact_timeout=float(contact_timeout),
    )
    if verbose and quiet:
        raise Exit("error: --verbose and --quiet: choose one", 2)
    verbosity = Verbosity.VERBOSE if verbose else Verbosity.QUIET if quiet else Verbosity.NORMAL
    extra, names = tuple(_split(trainer_args)), tuple(env or ())
    program, ships = _script(script, folder)
    train_options = TrainOptions(options, extra, names, watch, verbosity, program, ships)
    _run(lambda: tasks.train(s, Output(verbosity=verbosity), train_options))


@task(
    auto_shortflags=False,
    help={
        "hosts_file": HOSTS_HELP,
        "slurm": "print the sbatch script `fab train` submits for the hosts file's "
        "scheduler=slurm line",
        **TRAINER_HELP,
        **SCRIPT_HELP,
    },
)
def export(
    c,
    slurm=False,
    hosts_file=None,
    epochs=None,
    batch_size=None,
    steps_per_epoch=None,
    learning_rate=None,
    seed=None,
    dataset=None,
    data=None,
    shard=None,
    log_every=None,
    threads=None,
    trainer_args="",
    script=None,
    folder=None,
):
    """Print what `fab train` would submit, to submit it yourself.

    --slurm: the sbatch script for the hosts file's scheduler=slurm line.
    """
    if not slurm:
        raise Exit("error: say what to export: --slurm (the sbatch script)", 2)
    s = _settings(c, hosts_file, None, False)
    program, ships = _script(script, folder)
    options = TrainOptions(
        _trainer_options(locals()), tuple(_split(trainer_args)), script=program, folder=ships
    )
    _run(lambda: tasks.export_slurm(s, Output(live=False), options))


@task(
    auto_shortflags=False,
    help={
        **SSH_HELP,
        "run": "run id or directory (default: the latest in runs/)",
        "contact_timeout": f"{CONTACT_HELP} {QUICK_CONTACT_TIMEOUT:g}",
    },
)
def status(
    c,
    run=None,
    hosts_file=None,
    known_hosts=None,
    accept_new_host_keys=False,
    contact_timeout=QUICK_CONTACT_TIMEOUT,
):
    """Show each worker of a run.

    State, epoch, step, loss, last update and whether its process lives; a run whose
    launcher died is recorded as ended once every worker has ended.
    """
    s = _settings(c, hosts_file, known_hosts, accept_new_host_keys)
    _run(lambda: tasks.status(s, Output(), run, float(contact_timeout)))


@task(
    auto_shortflags=False,
    help={
        **SSH_HELP,
        "run": "run id or directory (default: the latest in runs/)",
        "grace": "seconds between TERM and KILL",
        "contact_timeout": f"{CONTACT_HELP} {QUICK_CONTACT_TIMEOUT:g}",
    },
)
def stop(
    c,
    run=None,
    grace=5.0,
    hosts_file=None,
    known_hosts=None,
    accept_new_host_keys=False,
    contact_timeout=QUICK_CONTACT_TIMEOUT,
):
    """Stop every worker of a run.

    TERM, CONT, grace, KILL of each worker's process group (scancel for a Slurm job), then
    the run's tf_port locks are released.
    """
    s = _settings(c, hosts_file, known_hosts, accept_new_host_keys)
    _run(lambda: tasks.stop(s, Output(live=False), run, float(grace), float(contact_timeout)))


@task(
    auto_shortflags=False,
    help={
        **SSH_HELP,
        "run": "run id or directory (default: the latest in runs/)",
        "follow": "keep mirroring until every worker has exited",
        "interval": "seconds between passes with --follow",
        "contact_timeout": f"{CONTACT_HELP} {QUICK_CONTACT_TIMEOUT:g}, "
        f"{DEFAULT_CONTACT_TIMEOUT:g} with --follow",
    },
)
def fetch(
    c,
    run=None,
    follow=False,
    interval=2.0,
    hosts_file=None,
    known_hosts=None,
    accept_new_host_keys=False,
    contact_timeout=None,
):
    """Bring a run's files home from its hosts.

    Mirrors every host's copy of the run into runs/<run-id>, only new bytes travelling;
    --follow keeps mirroring until every worker has ended.
    """
    s = _settings(c, hosts_file, known_hosts, accept_new_host_keys)
    timeout = float(contact_timeout) if contact_timeout is not None else None
    _run(lambda: tasks.fetch(s, Output(live=False), run, follow, float(interval), timeout))
