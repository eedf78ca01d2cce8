"""What every backend does for every command, and the values that cross between them.

A backend runs the workers of a run somewhere: over SSH or as local processes
(launcher/backends/ssh.py), as one Slurm job (launcher/backends/slurm.py), or anywhere a
module registered in launcher/registry.py reaches. The commands (launcher/tasks.py) check
options, build the run's record, print the status table and loop over fetches; they talk to
a backend only through this interface:

    check    look at the hosts, change nothing, print what was found
    reserve  take the hosts for a new run (preflight, locks), held until the block ends;
             the `Reserved` it yields says what the record holds and runs the job
    look     each worker of an existing run, and how the run ended if its launcher is gone
    stop     stop every worker of a run
    mirror   bring the hosts' copies of a run home, pass after pass
    release  let go of what the run holds on its hosts (tf_port locks)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from launcher.display import Output, WorkerRow
from launcher.hosts import Host
from launcher.options import TrainOptions
from launcher.program import Program
from launcher.settings import Settings
from runformat import ClusterRecord, HostEntry


@dataclass(frozen=True)
class Launch:
    """A run about to start: its id and local directory, the program (launcher/program.py:
    the built-in trainer or a user's script; backends ship its `bundle` and start its
    `entry`, reading nothing else of it), the variables every worker gets (values never
    recorded), the shipped code's version, and the user's options."""

    run_id: str
    local_dir: Path
    program: Program
    env: Mapping[str, str]
    code: str
    options: TrainOptions


@dataclass(frozen=True)
class Run:
    """An existing run as status, stop and fetch see it (its record is the truth, not
    today's hosts file), with how long a host may take to answer."""

    settings: Settings
    out: Output
    local_dir: Path
    record: ClusterRecord
    contact_timeout: float


@dataclass
class Look:
    """What a look at a run found: a row per worker (status and process), whether a worker
    may still run, lines to show, and the record's ending when its launcher is gone."""

    rows: list[WorkerRow]
    running: bool
    notes: list[str] = field(default_factory=list)  # above the table
    problems: list[str] = field(default_factory=list)  # below it: unreachable hosts
    ending: dict[str, Any] | None = None  # the changes that close the record
    ended_because: str = ""  # "every worker has ended", "Slurm job 7 has ended"


class Reserved(Protocol):
    """A new run's hosts, ready and held: what cluster.json records, and the job itself."""

    hosts: Sequence[HostEntry]
    tf_config_cluster: dict[str, Any]
    details: dict[str, Any]  # the backend's own section of the record

    @property
    def summary(self) -> str:
        """`2 worker(s)`, `4 worker(s) as one Slurm job`"""

    def describe(self) -> list[str]:
        """The lines that say where each worker runs."""

    def run(self, record: dict[str, Any], out: Output) -> int:
        """Start the job, watch it to its end, write its record; the exit code."""


class Mirroring(Protocol):
    """An open connection to every host holding a copy of a run."""

    def sync(self) -> None:
        """One pass; a host that cannot be reached raises a UserError naming it."""

    def disk_errors(self) -> list[str]:
        """What this machine's disk refused in the last pass."""

    def summary(self) -> str:
        """`fetched N bytes from ... into ...`"""


class Backend(Protocol):
    name: str

    def check(self, settings: Settings, out: Output, hosts: Sequence[Host]) -> int: ...

    def reserve(
        self, settings: Settings, out: Output, hosts: Sequence[Host], launch: Launch
    ) -> AbstractContextManager[Reserved]: ...

    def look(self, run: Run) -> Look: ...

    def stop(self, run: Run, look: Look, grace: float) -> list[str]: ...

    def mirror(self, run: Run) -> AbstractContextManager[Mirroring]: ...

    def release(self, run: Run) -> None: ...
