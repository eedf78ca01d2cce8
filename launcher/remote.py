"""Running commands and moving bytes on a host: one interface, a local and an SSH implementation.

The job logic above this module does not know whether a worker is a local process or a
process on another machine: both run the same POSIX shell commands (built in `commands`) and
read files by byte range. Local hosts need no SSH at all; SSH hosts verify host keys strictly.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import subprocess
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import paramiko
from fabric import Connection

from launcher.hosts import Host

T = TypeVar("T")
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
SFTP_TIMEOUT = 60.0
# SFTP's answers about a file (as opposed to a broken connection): no reconnect needed.
_FILE_ERRORS = frozenset(
    {errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR, errno.ELOOP}
)


class HostError(Exception):
    """Something went wrong on one host; the message is one line a user can act on.

    `transient`: the connection broke or timed out, so trying again later may work (a network
    blip, a laptop that slept); a refused login or a changed host key will not mend itself.
    """

    def __init__(self, host: Host, message: str, transient: bool = False) -> None:
        self.host = host
        self.message = message
        self.transient = transient
        super().__init__(f"worker {host.index} ({host.label}): {message}")


def _quiet_prefetch_threads(args: threading.ExceptHookArgs) -> None:
    """Paramiko reads ahead in a thread of its own; when the connection drops that thread dies
    with a traceback, while the read that waits for it fails too and is handled there."""
    name = args.thread.name if args.thread is not None else ""
    if name.endswith("(_prefetch_thread)") and isinstance(
        args.exc_value, (paramiko.SSHException, OSError, EOFError)
    ):
        return
    _default_excepthook(args)


_default_excepthook = threading.excepthook
threading.excepthook = _quiet_prefetch_threads


@dataclass(frozen=True)
class CommandResult:
    code: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class SshSettings:
    """How to open SSH connections: which known_hosts file, and whether to trust new hosts."""

    known_hosts: str = DEFAULT_KNOWN_HOSTS
    accept_new_host_keys: bool = False
    connect_timeout: float = 10.0


class HostShell(Protocol):
    """What the launcher needs from a host: run a shell command, read and write files."""

    host: Host

    def run(self, command: str, timeout: float | None = None) -> CommandResult: ...

    def read_range(self, path: str, offset: int, length: int) -> bytes: ...

    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None: ...

    def close(self) -> None: ...


class LocalShell:
    """This machine: `sh -c` subprocesses and plain file I/O."""

    def __init__(self, host: Host) -> None:
        self.host = host

    def run(self, command: str, timeout: float | None = None) -> CommandResult:
        try:
            proc = subprocess.run(
                ["sh", "-c", command],
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise HostError(self.host, f"command timed out after {timeout} s") from exc
        return CommandResult(proc.returncode, proc.stdout, proc.stderr)

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(length)

    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.fchmod(fd, mode)
            os.write(fd, data)
        finally:
            os.close(fd)

    def close(self) -> None:
        return None


def _ssh_error(host: Host, exc: BaseException, settings: SshSettings) -> HostError:
    """Turn Paramiko's and the socket layer's exceptions into one actionable line."""
    target = f"{host.hostname}:{host.port or 22}"
    known = os.path.expanduser(settings.known_hosts)
    if isinstance(exc, HostError):
        return exc
    if isinstance(exc, paramiko.BadHostKeyException):
        return HostError(
            host,
            f"host key of {target} CHANGED since it was recorded in {known}: this may be an "
            f"attack; if the host was reinstalled, remove the old key with "
            f"`ssh-keygen -f {known} -R '[{host.hostname}]:{host.port or 22}'` and check again",
        )
    if isinstance(exc, paramiko.AuthenticationException):
        return HostError(
            host, f"SSH login refused for {host.ssh_target}: check user=, key= or your ssh-agent"
        )
    if isinstance(exc, paramiko.SSHException) and "known_hosts" in str(exc):
        return HostError(
            host,
            f"unknown host key for {target} (not in {known}); verify it and add it with "
            f"`ssh-keyscan -p {host.port or 22} {host.hostname} >> {known}`, "
            "or pass --accept-new-host-keys to trust it on first use",
        )
    if isinstance(exc, socket.gaierror):
        return HostError(host, f"cannot resolve host name {host.hostname!r}")
    silent = "banner" in str(exc) or "No existing session" in str(exc)
    if isinstance(exc, (socket.timeout, TimeoutError)) or silent:
        return HostError(
            host,
            f"no answer from {target} within {settings.connect_timeout:g} s: is the host up "
            "and is port= its SSH port?",
            transient=True,
        )
    if isinstance(exc, (paramiko.ssh_exception.NoValidConnectionsError, ConnectionError)):
        return HostError(
            host,
            f"cannot connect to {target}: connection refused (is sshd running there, and is "
            "port= its SSH port?)",
            transient=True,
        )
    return HostError(host, f"SSH to {target} failed: {type(exc).__name__}: {exc}", transient=True)


class SshShell:
    """Another machine over Fabric/Paramiko, with known_hosts loaded and unknown keys refused.

    Fabric's Connection accepts unknown host keys by default (AutoAddPolicy); we replace the
    policy before connecting. Trusting a new host is an explicit opt-in that records its key.
    """

    def __init__(self, host: Host, settings: SshSettings) -> None:
        # Paramiko's transport thread logs failures with tracebacks; we report them ourselves.
        logging.getLogger("paramiko").addHandler(logging.NullHandler())
        self.host = host
        self.settings = settings
        self._lock = threading.Lock()
        self._sftp: paramiko.SFTPClient | None = None
        self.reconnects = 0  # times a dropped connection was opened again
        # A host whose sshd accepts TCP but never speaks must not hold the job for long.
        connect_kwargs: dict[str, object] = {
            "banner_timeout": settings.connect_timeout,
            "auth_timeout": settings.connect_timeout,
        }
        if host.key:
            connect_kwargs["key_filename"] = os.path.expanduser(host.key)
        self.conn = Connection(
            host.hostname,
            user=host.user,
            port=host.port,
            connect_timeout=int(settings.connect_timeout),
            connect_kwargs=connect_kwargs,
        )
        known = os.path.expanduser(settings.known_hosts)
        client = self.conn.client
        if os.path.exists(known):
            client.load_host_keys(known)
        elif settings.accept_new_host_keys:
            Path(known).parent.mkdir(parents=True, exist_ok=True)
            Path(known).touch(mode=0o600)
            client.load_host_keys(known)
        policy: paramiko.MissingHostKeyPolicy = (
            paramiko.AutoAddPolicy() if settings.accept_new_host_keys else paramiko.RejectPolicy()
        )
        client.set_missing_host_key_policy(policy)

    def _guard(self, action: Callable[[], T]) -> T:
        """Run one action on the connection; after any SSH error, drop the connection and its
        SFTP client so that the next call reconnects (a dead SFTP client never comes back)."""
        try:
            with self._lock:
                return action()
        except HostError:
            raise
        except OSError as exc:
            if exc.errno in _FILE_ERRORS:
                raise  # about the file, not the connection
            self.reset()
            raise _ssh_error(self.host, exc, self.settings) from exc
        except (paramiko.SSHException, EOFError) as exc:
            self.reset()
            raise _ssh_error(self.host, exc, self.settings) from exc

    def open(self) -> None:
        self._guard(self.conn.open)

    def run(self, command: str, timeout: float | None = None) -> CommandResult:
        def go() -> CommandResult:
            self._ensure_open()
            r = self.conn.run(
                command, hide=True, warn=True, in_stream=False, timeout=timeout, pty=False
            )
            return CommandResult(r.exited, r.stdout, r.stderr)

        try:
            return self._guard(go)
        except Exception as exc:
            if type(exc).__name__ == "CommandTimedOut":
                # The command may still run there; the connection may be the one that hangs.
                self.reset()
                raise HostError(
                    self.host, f"command timed out after {timeout} s", transient=True
                ) from exc
            raise

    def _ensure_open(self) -> None:
        """Reconnect if the transport died since the last call (Paramiko notices it first)."""
        if not self.conn.is_connected:
            had = self.conn.client.get_transport() is not None
            self.reset()
            self.conn.open()
            self.reconnects += had

    def _client(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            self._sftp = self.conn.client.open_sftp()
            # A read on a connection that died silently (sleep, Wi-Fi change) must not hang.
            self._sftp.get_channel().settimeout(SFTP_TIMEOUT)
        return self._sftp

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        def go() -> bytes:
            self._ensure_open()
            with self._client().open(path, "rb") as f:
                f.seek(offset)
                if length > 32768:
                    f.prefetch(offset + length)
                data = f.read(length)
            return data

        return self._guard(go)

    def write_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        def go() -> None:
            self._ensure_open()
            sftp = self._client()
            with sftp.open(path, "wb") as f:
                # Restrict before the content is written, so a secret is never world-readable.
                sftp.chmod(path, mode)
                f.set_pipelined(True)
                f.write(data)

        self._guard(go)

    def reset(self) -> None:
        """Forget the connection and its SFTP client; the next call opens new ones."""
        sftp, self._sftp = self._sftp, None
        for close in (sftp.close if sftp else None, self.conn.client.close):
            # Closing a broken connection must not hide the real error.
            with contextlib.suppress(Exception):
                if close is not None:
                    close()

    def close(self) -> None:
        self.reset()


def open_shell(host: Host, settings: SshSettings) -> HostShell:
    """A LocalShell for local hosts, a connected SshShell for the others."""
    if host.local:
        return LocalShell(host)
    shell = SshShell(host, settings)
    shell.open()
    return shell


def each_host(items: Sequence[T], action: Callable[[T], object]) -> list[object]:
    """Run `action` on every item at once; return results or the exception, per item."""
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        futures = [pool.submit(action, item) for item in items]
        out: list[object] = []
        for fut in futures:
            try:
                out.append(fut.result())
            except Exception as exc:
                out.append(exc)
        return out
