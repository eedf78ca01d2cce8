"""What each worker of a job runs: the built-in trainer, or a user's own script.

`fab train` options become a `Program` here, with every mistake refused as one line before any
host is touched: a missing script, a file that is not a `.py`, a syntax error anywhere in what
ships (`file:line: message`), trainer-only options given with `--script`, a folder too big.
Backends then ask `worker_command` for what to start on a host, and the record's `program`
field comes from `program_record`. Nothing here touches a host.

The one `Program` type every backend passes through unread: it asks `entry` for the module and
arguments a worker runs, and ships `bundle` where it is not None. A script runs through the
wrapper, started in the shipped code's folder (so that nothing of the user's folder can shadow
the wrapper's own packages), which runs the script from inside its folder:
`cd CODE && python -m trainer.wrap --run-dir DIR --cwd FOLDER SCRIPT ARGS`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher import commands
from launcher.bundle import (
    IGNORE_FILE,
    MAX_FOLDER_BYTES,
    MAX_FOLDER_FILES,
    Bundle,
    BundleError,
    host_folder,
    load_bundle,
)

TRAINER_MODULE = "trainer"
WRAPPER_MODULE = "trainer.wrap"
CWD_FLAG = "--cwd"  # the wrapper's: the folder the script runs in
BACKUP_FLAG = "--backup"  # the trainer's: resume from the last completed epoch

# cluster.json: "program": {"kind": "trainer"} or {"kind": "script", "script": ..., ...}
PROGRAM_KEY = "program"
KIND_TRAINER = "trainer"
KIND_SCRIPT = "script"


class ProgramError(ValueError):
    """Bad input for what the workers run: one line, naming the file, line or option."""


@dataclass(frozen=True)
class Trainer:
    """The built-in trainer: `python -m trainer --run-dir DIR ARGS`."""

    args: tuple[str, ...] = ()
    bundle: None = None  # nothing ships but the code itself


@dataclass(frozen=True)
class Script:
    """A user's script: `folder` (absolute, on this machine) ships to every host and the script
    (`script`, a POSIX path inside it) runs from inside it with `args`."""

    folder: Path
    script: str
    args: tuple[str, ...]
    bundle: Bundle  # the files that ship and their hash


Program = Trainer | Script


def flag(name: str) -> str:
    """An option's name as a user types it: `batch_size` is `--batch-size`."""
    return "--" + name.replace("_", "-")


def given_options(options: Mapping[str, object]) -> list[str]:
    """The flags of the options that were given (None and False mean: not given)."""
    return [
        flag(name) for name, value in options.items() if value is not None and value is not False
    ]


def trainer_program(
    options: Mapping[str, object], extra_args: Sequence[str] = (), max_restarts: int = 0
) -> Trainer:
    """The trainer with `fab train`'s trainer options and --trainer-args, checked by the
    trainer's own parser; with restarts it keeps a backup to resume from."""
    args = commands.trainer_args(options) + list(extra_args)
    if max_restarts and BACKUP_FLAG not in args:
        args.append(BACKUP_FLAG)
    try:
        commands.check_trainer_args(args)
    except ValueError as exc:
        raise ProgramError(f"trainer options: {exc}") from None
    return Trainer(tuple(args))


def script_program(
    script: str,
    options: Mapping[str, object],
    extra_args: Sequence[str] = (),
    folder: str | None = None,
    *,
    runs_dir: Path | None = None,
    max_bytes: int = MAX_FOLDER_BYTES,
    max_files: int = MAX_FOLDER_FILES,
) -> Script:
    """A user's script with its arguments (--trainer-args), and its folder listed for shipping.

    `options` are the trainer's own options as `fab train` received them; any of them given is
    a mistake here. `folder` is what ships (default: the script's folder), less `runs_dir`
    (this machine's runs folder, when it lies inside). Every `.py` file that ships is
    compiled: an import of a broken module would fail on every host only after the whole job
    has started, so it is refused here instead.
    """
    given = given_options(options)
    if given:
        verb = "is an option" if len(given) == 1 else "are options"
        raise ProgramError(
            f"--script runs your own program: {', '.join(given)} {verb} of the built-in "
            "trainer; give your script its own options with --trainer-args"
        )
    path = script_file(script)
    root = Path(os.path.abspath(Path(folder).expanduser())) if folder else path.parent
    if folder is not None and not root.is_dir():
        raise ProgramError(f"--folder {folder}: no such folder")
    if not path.is_relative_to(root):
        raise ProgramError(f"--script {script}: not inside the folder {root} that ships")
    if root in (Path(root.anchor), Path.home()):
        raise ProgramError(
            f"--script {script}: its folder is {root}, which would ship whole; "
            "put the script in a folder of its own"
        )
    rel = path.relative_to(root).as_posix()
    try:
        skip = [runs_dir] if runs_dir is not None else []
        bundle = load_bundle(root, max_bytes=max_bytes, max_files=max_files, skip=skip)
    except BundleError as exc:
        raise ProgramError(f"--script {script}: {exc}") from None
    if rel not in {f.rel for f in bundle.files}:
        raise ProgramError(
            f"--script {script}: left out of what ships (a cache or environment folder, or "
            f"{IGNORE_FILE})"
        )
    shown_root = folder if folder is not None else os.path.dirname(script)
    problem = syntax_problem(path, script) or shipped_syntax_problem(bundle, rel, shown_root)
    if problem is not None:
        raise ProgramError(problem)
    return Script(root, rel, tuple(extra_args), bundle)


def script_file(script: str) -> Path:
    """The absolute path of a script given on the command line (links not resolved: the
    script's folder is the one the user sees)."""
    path = Path(os.path.abspath(Path(script).expanduser()))
    if path.is_dir():
        raise ProgramError(f"--script {script}: is a folder; expected a .py file")
    if not path.exists():
        raise ProgramError(f"--script {script}: no such file")
    if path.suffix != ".py":
        raise ProgramError(f"--script {script}: expected a .py file")
    if not path.is_file():
        raise ProgramError(f"--script {script}: not a regular file; expected a .py file")
    return path


def syntax_problem(path: Path, shown: str) -> str | None:
    """`shown:line: message` if Python cannot compile the file (this machine's Python: a
    host with an older one may still refuse newer syntax), else None."""
    try:
        source = path.read_bytes()
    except OSError as exc:
        return f"{shown}: cannot read: {exc.strerror or exc}"
    try:
        compile(source, shown, "exec", dont_inherit=True)
    except SyntaxError as exc:
        where = f"{shown}:{exc.lineno}" if exc.lineno else shown
        return f"{where}: {exc.msg}"
    except ValueError as exc:  # null bytes (Python 3.11)
        return f"{shown}: {exc}"
    return None


def shipped_syntax_problem(bundle: Bundle, script_rel: str, shown_root: str) -> str | None:
    """The first `.py` file shipping beside the script that does not compile, as one line."""
    for f in bundle.files:
        if f.rel.endswith(".py") and f.rel != script_rel:
            problem = syntax_problem(f.path, os.path.join(shown_root, f.rel))
            if problem is not None:
                return f"{problem} (it ships with the script: fix it or list it in {IGNORE_FILE})"
    return None


def build_program(
    script: str | None,
    options: Mapping[str, object],
    extra_args: Sequence[str] = (),
    max_restarts: int = 0,
    folder: str | None = None,
    runs_dir: Path | None = None,
) -> Program:
    """What `fab train` runs: the user's script with --script, else the built-in trainer."""
    if script is None:
        if folder is not None:
            raise ProgramError("--folder is the folder of a --script; give the script too")
        return trainer_program(options, extra_args, max_restarts)
    return script_program(script, options, extra_args, folder, runs_dir=runs_dir)


def program_record(program: Program) -> dict[str, Any]:
    """The record's `program` field (its arguments stay in `trainer_args`)."""
    if isinstance(program, Trainer):
        return {"kind": KIND_TRAINER}
    return {
        "kind": KIND_SCRIPT,
        "script": program.script,
        "folder": str(program.folder),
        "hash": program.bundle.digest,
    }


def describe(program: Program) -> str:
    """One line for the launcher's header: what the workers run."""
    if isinstance(program, Trainer):
        return f"trainer options: {' '.join(commands.q(a) for a in program.args) or '(defaults)'}"
    args = " ".join(commands.q(a) for a in program.args)
    shipped = f"{len(program.bundle.files)} file(s), {program.bundle.digest}"
    return f"script: {program.script} {args}".rstrip() + f" (from {program.folder}, {shipped})"


def entry(program: Program, folder_dir: str | None = None) -> tuple[str, tuple[str, ...]]:
    """The module each worker runs and its arguments after `--run-dir DIR`; a script's
    `folder_dir` is where its folder is on that host (see folder_on_host)."""
    if isinstance(program, Trainer):
        return TRAINER_MODULE, program.args
    if folder_dir is None:
        raise ValueError("a script's worker command needs the folder it runs in")
    return WRAPPER_MODULE, (CWD_FLAG, folder_dir, program.script, *program.args)


def folder_on_host(program: Script, workdir: str, local: bool) -> str:
    """Where a script's folder is on a host: the user's own folder for a local worker (as the
    trainer runs from this checkout), else the shipped copy named by its hash."""
    return str(program.folder) if local else host_folder(workdir, program.bundle.digest)


@dataclass(frozen=True)
class WorkerCommand:
    """What a backend starts for one worker: in `cwd` (the code's folder), `argv`."""

    cwd: str
    argv: tuple[str, ...]

    def shell(self) -> str:
        """The command, every value quoted (a leading `~/` still expands)."""
        line = " ".join(commands.q(a) for a in self.argv)
        return f"cd {commands.home_path(self.cwd)} && {line}"


def worker_command(
    program: Program, python: str, run_dir: str, code_dir: str, folder_dir: str | None = None
) -> WorkerCommand:
    """`cd CODE && python -m MODULE --run-dir DIR ARGS` (see entry)."""
    module, args = entry(program, folder_dir)
    return WorkerCommand(code_dir, (python, "-m", module, "--run-dir", run_dir, *args))
