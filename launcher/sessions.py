"""One connection per host for everything one command does with an existing run.

`fab stop` looks at a run, stops its workers and releases its locks: three passes over every
host. With a new SSH connection for each pass, 64 hosts meant 192 handshakes on hosts busy
running the job, and the handshakes, not the commands, took most of its time. `Sessions`
keeps the shell a host opened for a run and hands it to the next pass over that run; all of
them are closed as soon as the run object is dropped (the end of the command), so no command
leaves a connection behind.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar


class Closable(Protocol):
    def close(self) -> None: ...


S = TypeVar("S", bound=Closable)


class Sessions(Generic[S]):
    """Open shells (HostShell) by owner (a command's run object) and key (a worker's index)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._shells: dict[int, dict[int, S]] = {}

    def shell(self, owner: object, key: int, open_shell: Callable[[], S]) -> S:
        """The shell opened for `owner` and `key`, opened now (`open_shell`) on first use.

        A shell whose connection broke reconnects by itself on its next call (SshShell), so
        a kept shell is never stale; one that could not be opened is not kept.
        """
        with self._lock:
            shells = self._shells.get(id(owner))
            if shells is None:
                shells = self._shells[id(owner)] = {}
                weakref.finalize(owner, self._close, id(owner))
            kept = shells.get(key)
        if kept is not None:
            return kept
        shell = open_shell()  # outside the lock: every host connects at once
        with self._lock:
            shells[key] = shell
        return shell

    def open_count(self) -> int:
        """Shells open now, for every owner."""
        with self._lock:
            return sum(len(shells) for shells in self._shells.values())

    def _close(self, owner_id: int) -> None:
        with self._lock:
            shells = self._shells.pop(owner_id, {})
        for shell in shells.values():
            shell.close()
