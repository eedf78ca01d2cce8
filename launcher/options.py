"""What a user asked `fab train` for, as frozen option objects handed from fabfile.py down to
the job (instead of long chains of positional parameters), and the few trainer options the
launcher reads back from the trainer's argument list."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from launcher.contact import DEFAULT_CONTACT_TIMEOUT


class Verbosity(enum.Enum):
    """How much the terminal shows (launcher.log always gets everything)."""

    QUIET = "quiet"  # events and the summary
    NORMAL = "normal"  # also the header and the workers' table
    VERBOSE = "verbose"  # also every worker's output, and TensorFlow's logs are not turned down


@dataclass(frozen=True)
class WatchOptions:
    """How the launcher watches and ends a job: its deadlines, stop grace and restarts."""

    start_timeout: float = 120.0  # seconds every worker has to begin training
    stall_timeout: float = 300.0  # seconds a training worker may go without progress
    grace: float = 5.0  # seconds between TERM and KILL
    interval: float = 2.0  # seconds between polls and log mirroring passes
    max_restarts: int = 0  # times a failed job is started again as a whole
    contact_timeout: float = DEFAULT_CONTACT_TIMEOUT  # seconds a host may not answer


@dataclass(frozen=True)
class TrainOptions:
    """One `fab train`: the trainer's options, extra trainer arguments, the names of the
    variables passed to every worker (values never stored here), and the watch options."""

    trainer: Mapping[str, object] = field(default_factory=dict)  # None values: trainer default
    extra_args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()  # NAME (value from this environment) or NAME=VALUE
    watch: WatchOptions = field(default_factory=WatchOptions)
    verbosity: Verbosity = Verbosity.NORMAL
    script: str | None = None  # a user's own program (--script) instead of the trainer
    folder: str | None = None  # what ships with it (--folder; default: the script's folder)


def arg_value(args: Sequence[str], flag: str) -> str | None:
    """The value after `flag` in a trainer argument list (`--epochs 3`), or None."""
    for i, a in enumerate(args[:-1]):
        if a == flag:
            return args[i + 1]
    return None


def int_or_none(text: str | None) -> int | None:
    """An option's value as a number for cluster.json; None when absent or not a number."""
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None
