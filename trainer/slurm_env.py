"""`python -m trainer.slurm_env [--tf-port P] [--wrap] ARGS`: one Slurm task becomes one worker.

`srun` starts this on every task of the step. It builds the task's TF_CONFIG from the step's
environment (`SLURM_STEP_NODELIST`, `SLURM_STEP_TASKS_PER_NODE`, `SLURM_PROCID`) and then runs
`python -m trainer ARGS` in its place, exactly as an SSH host would; with `--wrap` it runs
`python -m trainer.wrap ARGS` instead (ARGS: `--run-dir DIR SCRIPT [SCRIPT_ARGS...]`), the
wrapper of a user's own program. Its own options (`--tf-port`, `--wrap`) come first.
TensorFlow's own SlurmClusterResolver is not used: it runs `nvidia-smi` and divides by the
GPUs per node, so it fails on CPU nodes. Tasks that share a node listen on `P`, `P+1`, ...
(one port per local task).
The launcher uses `task_addresses` too, to name each worker's node and port in cluster.json.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping, Sequence

DEFAULT_TF_PORT = 23456
TRAINER_MODULE = "trainer"
WRAP_MODULE = "trainer.wrap"
_RANGE = re.compile(r"(\d+)(?:-(\d+))?")
_COUNT = re.compile(r"(\d+)(?:\(x(\d+)\))?")


class SlurmEnvError(ValueError):
    """The task's environment is not a Slurm step's; the message names the variable."""


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside brackets: `a[1-2],b` -> `a[1-2]`, `b`."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in parts if p]


def _expand_one(pattern: str) -> list[str]:
    """`node[01-03,07]-ib` -> node01-ib, node02-ib, node03-ib, node07-ib (zero padding kept)."""
    open_at = pattern.find("[")
    if open_at < 0:
        return [pattern]
    close_at = pattern.find("]", open_at)
    if close_at < 0:
        raise SlurmEnvError(f"host list {pattern!r}: '[' without ']'")
    head, body, tail = pattern[:open_at], pattern[open_at + 1 : close_at], pattern[close_at + 1 :]
    names: list[str] = []
    for item in body.split(","):
        m = _RANGE.fullmatch(item)
        if not m:
            raise SlurmEnvError(f"host list {pattern!r}: {item!r} is not a number or range")
        first, last = m.group(1), m.group(2) or m.group(1)
        width = len(first)
        for n in range(int(first), int(last) + 1):
            names.append(f"{head}{n:0{width}d}")
    return [name + rest for name in names for rest in _expand_one(tail)]


def expand_hostlist(text: str) -> list[str]:
    """Slurm's compact host list (`gpu[01-02],login`) as names, in Slurm's order."""
    return [name for part in _split_top(text.strip()) for name in _expand_one(part)]


def expand_counts(text: str) -> list[int]:
    """Slurm's tasks per node (`2(x3),1`) as one count per node: 2, 2, 2, 1."""
    counts: list[int] = []
    for item in text.strip().split(","):
        m = _COUNT.fullmatch(item.strip())
        if not m:
            raise SlurmEnvError(f"tasks per node {text!r}: {item!r} is not N or N(xM)")
        counts += [int(m.group(1))] * int(m.group(2) or 1)
    return counts


def task_addresses(nodelist: str, tasks_per_node: str, base_port: int) -> list[str]:
    """`node:port` of every task in rank order (block distribution: node by node)."""
    nodes = expand_hostlist(nodelist)
    counts = expand_counts(tasks_per_node)
    if len(counts) != len(nodes):
        raise SlurmEnvError(
            f"{len(nodes)} node(s) in {nodelist!r} but {len(counts)} count(s) in {tasks_per_node!r}"
        )
    return [
        f"{node}:{base_port + k}" for node, n in zip(nodes, counts, strict=True) for k in range(n)
    ]


def _env(environ: Mapping[str, str], name: str) -> str:
    value = environ.get(name)
    if not value:
        raise SlurmEnvError(f"{name} is not set: run this under srun, inside a Slurm job step")
    return value


def tf_config(environ: Mapping[str, str], base_port: int) -> str | None:
    """This task's TF_CONFIG, or None when the step has a single task (one worker)."""
    workers = task_addresses(
        _env(environ, "SLURM_STEP_NODELIST"), _env(environ, "SLURM_STEP_TASKS_PER_NODE"), base_port
    )
    rank = _env(environ, "SLURM_PROCID")
    if not rank.isdigit() or int(rank) >= len(workers):
        raise SlurmEnvError(f"SLURM_PROCID={rank} but the step has {len(workers)} task(s)")
    if len(workers) == 1:
        return None
    return json.dumps(
        {"cluster": {"worker": workers}, "task": {"type": "worker", "index": int(rank)}}
    )


def split_args(argv: Sequence[str]) -> tuple[int, list[str]]:
    """`--tf-port N` (ours, optional) and everything else for the trainer."""
    port, _, args = split_options(argv)
    return port, args


def split_options(argv: Sequence[str]) -> tuple[int, str, list[str]]:
    """Our options (`--tf-port N`, `--wrap`), the module to become, and its arguments.

    With `--wrap` only leading options are ours: the user's program may have a `--tf-port`
    of its own. For the trainer a `--tf-port` anywhere is still taken, as it always was.
    """
    args = list(argv)
    port_text: str | None = None
    module = TRAINER_MODULE
    while args:
        if args[0] == "--wrap":
            module = WRAP_MODULE
            del args[0]
        elif args[0] == "--tf-port" and len(args) > 1:
            port_text = args[1]
            del args[:2]
        elif args[0].startswith("--tf-port="):
            port_text = args[0].split("=", 1)[1]
            del args[0]
        else:
            break
    if port_text is None and module == TRAINER_MODULE:
        for i, arg in enumerate(args):
            if arg == "--tf-port" and i + 1 < len(args):
                port_text = args[i + 1]
                del args[i : i + 2]
                break
            if arg.startswith("--tf-port="):
                port_text = arg.split("=", 1)[1]
                del args[i]
                break
    if port_text is None:
        return DEFAULT_TF_PORT, module, args
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise SlurmEnvError(f"--tf-port {port_text!r}: expected a port from 1 to 65535")
    return int(port_text), module, args


def main(argv: Sequence[str]) -> int:
    """Set TF_CONFIG and become `python -m trainer` (or the wrapper); exit 2 with one line on a
    bad environment."""
    try:
        port, module, args = split_options(argv)
        config = tf_config(os.environ, port)
    except SlurmEnvError as e:
        print(f"trainer.slurm_env: error: {e}", file=sys.stderr, flush=True)
        return 2
    if config is None:
        os.environ.pop("TF_CONFIG", None)
    else:
        os.environ["TF_CONFIG"] = config
    os.execv(sys.executable, [sys.executable, "-m", module, *args])
    return 0  # not reached: execv replaces this process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
