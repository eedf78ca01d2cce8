"""Shell commands the launcher runs on a host, built from quoted parts only.

Every value that comes from a user (paths, interpreter, trainer options) goes through
`shlex.quote`; environment values travel in a 0600 env file, never on a command line, so they
neither break the shell nor show in `ps` or the launcher's log.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence

from runformat import (
    EXIT_CODE_FILE,
    EXIT_DISK_FILE,
    PGID_FILE,
    STATUS_JSON,
    WORKER_LOG,
    WORKERS_DIR,
    worker_rel,
)

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def q(value: str) -> str:
    return shlex.quote(value)


def expand_home(path: str, home: str) -> str:
    """Resolve a leading `~` against a host's home directory (SFTP and quoting need it gone)."""
    if path == "~":
        return home
    if path.startswith("~/"):
        return home.rstrip("/") + path[1:]
    return path


def worker_dir(run_dir: str, index: int) -> str:
    return f"{run_dir}/{worker_rel(index)}"


def env_file_path(run_dir: str, index: int) -> str:
    """Beside the run directory, not in it, so that mirroring never picks it up."""
    return f"{run_dir}.env-{index}"


def check_env_name(name: str) -> str:
    if not _ENV_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a valid environment variable name")
    return name


def env_file_content(env: Mapping[str, str]) -> str:
    """`export NAME='value'` lines, every value quoted, sourced by the worker's shell."""
    return "".join(f"export {check_env_name(k)}={q(v)}\n" for k, v in env.items())


RESERVED_BYTES = {EXIT_CODE_FILE: 16, EXIT_DISK_FILE: 40}
"""The room each file a worker's shell writes after its program kept from the start (a
disk line, `disk FREE_KB ro`, takes at most 29 bytes)."""


def reserve_path(run_dir: str, index: int, name: str) -> str:
    """Where the bytes of a worker's file `name` wait, hidden (the mirror skips it)."""
    return f"{worker_dir(run_dir, index)}/.{name}.reserve"


def exit_fallback_path(run_dir: str, index: int, name: str = EXIT_CODE_FILE) -> str:
    """Where a worker's exit code (or other file `name`) goes when its run folder takes
    nothing at all (read-only, gone): outside it, named after the run and worker."""
    run_id = run_dir.rstrip("/").rsplit("/", 1)[-1]
    return f"/tmp/tfcluster-{run_id}-{index}.{name}"


def write_reserved(run_dir: str, index: int, name: str, word: str) -> str:
    """Shell words that write `word` (a shell word) and a newline as the worker's file `name`,
    even on a full disk.

    The worker's shell reserved the file's bytes when it started (worker_script), so writing
    over them in place (`1<>`, no truncation) and renaming the file need no new space; a
    folder that takes nothing (read-only) leaves the file in exit_fallback_path.
    """
    wdir = worker_dir(run_dir, index)
    target, tmp = q(f"{wdir}/{name}"), q(f"{wdir}/{name}.tmp")
    reserve, put = q(reserve_path(run_dir, index, name)), f"printf '%s\\n' {word}"
    return (
        f"{{ {put} 1<>{reserve} && mv -f {reserve} {target}; }} 2>/dev/null || "
        f"{{ {put} > {tmp} && mv -f {tmp} {target}; }} 2>/dev/null || "
        f"{{ umask 077; {put} > {q(exit_fallback_path(run_dir, index, name))}; }}"
    )


def record_exit(run_dir: str, index: int) -> str:
    """Shell words that record `$rc` as the worker's exit code, even on a full disk."""
    return write_reserved(run_dir, index, EXIT_CODE_FILE, '"$rc"')


def record_exit_disk(run_dir: str, index: int) -> str:
    """Shell words that, once a worker failed (`$rc` not 0), record its run folder's disk at
    that moment (disk_command's line) as its EXIT_DISK_FILE, even on a full disk: a full
    folder is then named as the cause by whoever closes the record later, even once it was
    emptied. A worker that finished gives its room back."""
    line = write_reserved(run_dir, index, EXIT_DISK_FILE, '"$disk"')
    return (
        f'if [ "$rc" -eq 0 ]; then rm -f {q(reserve_path(run_dir, index, EXIT_DISK_FILE))}; '
        f"else disk=$({disk_command(run_dir)}); {line}; fi"
    )


def worker_script(
    python: str, module: str, run_dir: str, index: int, trainer_args: Sequence[str]
) -> str:
    """The script the detached shell runs: record the process group, load env, run, record
    how it ended.

    `$$` of a shell started by setsid is its session and process group id, which is what stop
    kills; the exit code (and, after a failure, the disk line) go to files because a detached
    process has no one to report to. Their bytes are reserved here, before the program can
    fill the disk (write_reserved); the exit code comes last: once it is there, all is.
    """
    wdir = worker_dir(run_dir, index)
    env = env_file_path(run_dir, index)
    argv = [python, "-m", module, "--run-dir", run_dir, *trainer_args]
    reserve = "".join(
        f"printf '%s\\n' {q(' ' * size)} > {q(reserve_path(run_dir, index, name))}; "
        for name, size in RESERVED_BYTES.items()
    )
    return (
        f"echo $$ > {q(f'{wdir}/{PGID_FILE}')}; "
        f"{reserve}"
        f". {q(env)}; rm -f {q(env)}; "
        f"{' '.join(q(a) for a in argv)}; rc=$?; "
        f"{record_exit_disk(run_dir, index)}; "
        f"{record_exit(run_dir, index)}"
    )


def start_command(
    code_dir: str,
    python: str,
    module: str,
    run_dir: str,
    index: int,
    trainer_args: Sequence[str],
) -> str:
    """Start one worker detached in its own session; returns at once (braces close the channel).

    umask 077: on a shared host no other user may read the run (logs, events, the model).
    """
    wdir = worker_dir(run_dir, index)
    script = worker_script(python, module, run_dir, index, trainer_args)
    return (
        f"umask 077 && mkdir -p {q(wdir)} && cd {q(code_dir)} && "
        f"{{ setsid nohup sh -c {q(script)} >>{q(f'{wdir}/{WORKER_LOG}')} 2>&1 </dev/null & }}"
    )


def group_alive(pgid: str) -> str:
    """A shell test: does process group `pgid` (a shell word) still have a live process?

    `kill -0` also succeeds for a group whose only member is a zombie, and where nothing
    reaps orphans (PID 1 of many containers) an ended worker stays one forever: its lock
    would never be released and every stop would wait out its grace period.
    """
    return (
        f"ps -eo pgid=,stat= | awk -v g={pgid} "
        "'$1 == g && $2 !~ /^Z/ { found = 1 } END { exit !found }'"
    )


ATTEMPT_FILES = (PGID_FILE, EXIT_CODE_FILE, EXIT_DISK_FILE, STATUS_JSON)
ENDED_FILES = (EXIT_CODE_FILE, EXIT_DISK_FILE)  # may be outside the folder: exit_fallback_path


def reset_command(run_dir: str, index: int, note: str) -> str:
    """Before a restart: remove what the last attempt of a worker left that would make the
    launcher think it already runs or ended; its log goes on, after a note (which a full
    disk may refuse: that is no reason not to restart)."""
    wdir = worker_dir(run_dir, index)
    files = " ".join(q(f"{wdir}/{name}") for name in ATTEMPT_FILES)
    outside = " ".join(q(exit_fallback_path(run_dir, index, name)) for name in ENDED_FILES)
    log = q(f"{wdir}/{WORKER_LOG}")
    return (
        f"umask 077 && mkdir -p {q(wdir)} && rm -f {files} {outside}"
        f" && {{ {{ printf '%s\\n' {q(note)} >> {log}; }} 2>/dev/null; true; }}"
    )


def poll_command(run_dir: str, index: int) -> str:
    """One line: `exit N`, `alive`, `frozen` (a process of it is stopped, e.g. SIGSTOP),
    `gone` (group dead, no exit code) or `pending` (no pgid yet).

    The worker's shell is a session leader (setsid), so its session id is its pgid. The exit
    code is read again once the group is seen gone: the shell may have written it and ended
    between the first look and the group test. It is in the worker's folder, or outside it
    when that folder took nothing (record_exit).
    """
    wdir = worker_dir(run_dir, index)
    ec, pg = q(f"{wdir}/{EXIT_CODE_FILE}"), q(f"{wdir}/{PGID_FILE}")
    fb = q(exit_fallback_path(run_dir, index))
    exited = (
        f"[ -f {ec} ]; then echo exit $(cat {ec}); elif [ -f {fb} ]; then echo exit $(cat {fb}); "
    )
    alive = group_alive(f'"$(cat {pg})"')
    return (
        f"if {exited}"
        f"elif [ -s {pg} ] && {alive}; then "
        f'if ps -o stat= -s "$(cat {pg})" | grep -q "^T"; then echo frozen; else echo alive; fi; '
        f"elif {exited}"
        f"elif [ -s {pg} ]; then echo gone; else echo pending; fi"
    )


DISK_MARK = "disk"


def disk_command(run_dir: str) -> str:
    """One line about the file system of the run folder: `disk FREE_KB w|ro` (free KB empty
    when the folder is not there yet). Cheap enough for every poll."""
    d = q(run_dir)
    return (
        f"printf '{DISK_MARK} %s %s\\n' "
        f"\"$(df -Pk {d} 2>/dev/null | awk 'NR==2 {{print $4}}')\" "
        f'"$([ -w {d} ] && echo w || echo ro)"'
    )


def exit_disk_command(run_dir: str, index: int) -> str:
    """The disk line the worker's shell recorded when the worker failed, from its folder or
    from outside it (record_exit_disk); nothing when there is none."""
    files = (
        f"{worker_dir(run_dir, index)}/{EXIT_DISK_FILE}",
        exit_fallback_path(run_dir, index, EXIT_DISK_FILE),
    )
    return " || ".join(f"cat {q(path)} 2>/dev/null" for path in files) + " || true"


EXIT_DISK_MARK = "--exit-disk--"


def look_command(run_dir: str, index: int) -> str:
    """What `fab status` and `fab fetch` ask of a worker in one round trip: the poll line and
    its run folder's disk now, then the disk as the worker's shell found it when the worker
    failed (split_look)."""
    now = f"{poll_command(run_dir, index)}; {disk_command(run_dir)}"
    return f"{now}; echo {EXIT_DISK_MARK}; {exit_disk_command(run_dir, index)}"


def split_look(stdout: str) -> tuple[str, str]:
    """look_command's output as (the poll and the disk now, the disk when it failed)."""
    now, _, ended = stdout.partition(EXIT_DISK_MARK + "\n")
    return now, ended


def listing_command(run_dir: str) -> str:
    """Every file and link under the run directory: type, size, inode, modification time and
    relative path, each record ending in NUL (no file name can hold one)."""
    return (
        f"cd {q(run_dir)} 2>/dev/null && "
        "find . \\( -type f -o -type l \\) -printf '%y\\t%s\\t%i\\t%T@\\t%P\\0'"
    )


LISTING_MARK = "--listing--"


def and_listing(command: str, run_dir: str) -> str:
    """`command`, then the run directory's listing, in one round trip (split_listing)."""
    return f"{command}; echo {LISTING_MARK}; {listing_command(run_dir)}"


def split_listing(stdout: str) -> tuple[str, str]:
    """The first command's output and the listing, from and_listing's output."""
    text, _, listing = stdout.partition(LISTING_MARK + "\n")
    return text, listing


def stop_command(run_dir: str, index: int, grace: float) -> str:
    """TERM the worker's process group, CONT it, wait up to `grace` seconds, then KILL.

    TensorFlow catches SIGTERM and may keep running, hence the KILL; a frozen (SIGSTOPped)
    process only acts on TERM once continued, hence the CONT. A worker that is just starting
    may not have written its pgid yet: wait a moment for it. A group of zombies only is not
    running (`kill` would still succeed on it). Returns once the group is gone
    (up to 5 s after KILL), so that its lock can go. Prints `stopped` or `not running`.
    """
    pg = q(f"{worker_dir(run_dir, index)}/{PGID_FILE}")
    ticks = max(1, int(grace / 0.2))
    alive = group_alive('"$g"')
    return (
        f"i=0; while [ ! -s {pg} ] && [ $i -lt 10 ]; do sleep 0.1; i=$((i+1)); done; "
        f"[ -s {pg} ] || {{ echo not running; exit 0; }}; g=$(cat {pg}); "
        f"{alive} || {{ echo not running; exit 0; }}; "
        f'kill -TERM -"$g" 2>/dev/null || {{ echo not running; exit 0; }}; '
        f'kill -CONT -"$g" 2>/dev/null; i=0; '
        f"while {alive} && [ $i -lt {ticks} ]; do sleep 0.2; i=$((i+1)); done; "
        f'kill -KILL -"$g" 2>/dev/null; i=0; '
        f"while {alive} && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; "
        "echo stopped"
    )


def home_path(path: str) -> str:
    """Quote a path for the shell but let a leading `~/` expand to the login user's home."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + q(path[2:])
    return q(path)


def lock_path(workdir: str, tf_port: int) -> str:
    return f"{workdir}/locks/tf_port-{tf_port}.lock"


def lock_command(workdir: str, tf_port: int, run_id: str, run_dir: str, index: int) -> str:
    """Take the lock of one tf_port on a host, or say who holds it.

    Prints `acquired`, `taken-over <old run>` (its workers are gone) or `held <run id>`.
    A lock whose run has not written a pgid yet counts as held for 10 minutes (starting up).
    """
    lock = home_path(lock_path(workdir, tf_port))
    locks = home_path(f"{workdir}/locks")
    alive = group_alive('"$(cat "$pg")"')
    content = f"printf '%s\\n' {q(run_id)} {q(run_dir)} {index}"
    return (
        f"umask 077 && mkdir -p {locks} && "
        f"if ( set -C; {content} > {lock} ) 2>/dev/null; then echo acquired; "
        f"else old=$(sed -n 1p {lock}); dir=$(sed -n 2p {lock}); idx=$(sed -n 3p {lock}); "
        f'pg="$dir/{WORKERS_DIR}/$idx/{PGID_FILE}"; '
        f'if [ -s "$pg" ] && {alive}; then echo "held $old"; '
        f'elif [ ! -s "$pg" ] && [ -n "$(find {lock} -mmin -10)" ]; then echo "held $old"; '
        f'else {content} > {lock} && echo "taken-over $old"; fi; fi'
    )


def unlock_command(workdir: str, tf_port: int, run_id: str) -> str:
    """Release a run's lock, but never while the worker it names still has a live process.

    Prints `released`, `kept` (its worker lives) or nothing (not this run's lock). A worker
    that just wrote its exit code may take a moment to end: wait up to 5 s for its group.
    A workdir may start with `~/` (as a hosts file gives it).
    """
    lock = home_path(lock_path(workdir, tf_port))
    alive = '[ -s "$pg" ] && ' + group_alive('"$(cat "$pg")"')
    return (
        f'[ "$(sed -n 1p {lock} 2>/dev/null)" = {q(run_id)} ] || exit 0; '
        f'pg="$(sed -n 2p {lock})/workers/$(sed -n 3p {lock})/pgid"; '
        f"i=0; while {alive} && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; "
        f"if {alive}; then echo kept; else rm -f {lock} && echo released; fi"
    )


def trainer_args(options: Mapping[str, object]) -> list[str]:
    """`--name value` for every option that was given (None means: the trainer's default)."""
    args: list[str] = []
    for name, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        args.append(flag) if value is True else args.extend([flag, str(value)])
    return args


def check_trainer_args(args: Sequence[str]) -> None:
    """Check the trainer's options here, before any host is touched: a mistake must not leave
    a run directory on every host. Raises ValueError with the trainer's one-line message.

    The run directory is the launcher's to choose (each host has its own); an option that
    would override it, in any spelling argparse accepts, is refused.
    """
    from trainer.config import parse_args
    from trainer.errors import InputError

    sentinel = "\0launcher-run-dir"
    try:
        config = parse_args(["--run-dir", sentinel, *args])
    except InputError as exc:
        raise ValueError(str(exc)) from None
    if str(config.run_dir) != sentinel:
        raise ValueError(
            "--run-dir is set by the launcher (each host's run directory); "
            "leave it out of --trainer-args"
        )
