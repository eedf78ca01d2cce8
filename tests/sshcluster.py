"""Real SSH test hosts on this machine: one sshd per loopback address, one Unix user per host.

Tests of the launcher need machines that answer SSH like real ones do: separate users with
separate home directories, host keys checked strictly, SFTP, hosts that stop answering. This
module starts up to four such hosts in a second or two, as root (here and in CI), and up to 64
for benchmarks of the launcher at scale (a few seconds more per host beyond four: see below).

Usage::

    from tests.sshcluster import free_port, free_ports, start_cluster

    with start_cluster(3, tmp_path) as cluster:      # or: cluster = start_cluster(...) ... .close()
        host = cluster.hosts[0]                        # TestHost(name="tfhost1", "127.0.0.2", ...)
        cluster.run_as(host, "echo $HOME")             # real ssh client, strict host key checking
        cluster.hosts_file(tmp_path / "hosts.txt", 2)  # lines for the launcher, free tf ports
        with cluster.host_down(host): ...              # its sshd is stopped, then restarted
        assert cluster.wait_idle(host) == []           # nothing of that user left running

In pytest use the session fixtures of tests/conftest.py: ``ssh_cluster`` (3 hosts) and
``ssh_cluster4`` (4 hosts, for benchmarks); both views share the same sshd processes.

API:

- ``TestHost`` (frozen): ``name``, ``address``, ``port``, ``user``, ``home``, ``key`` (client
  private key), ``python`` (interpreter the user can run); ``hosts_line(tf_port=, python=None,
  **options)`` returns ``"user@address port=P key=K tf_port=T python=PY opt=value ..."``.
- ``SshCluster``: ``hosts``, ``key_path``, ``known_hosts`` (``[address]:port keytype base64``
  lines, one per host), ``python`` (``sys.executable``, with TensorFlow), ``workdir``;
  ``hosts_file(path, n, tf_ports=None, **options)``, ``run_as(host, command, timeout=30)``,
  ``ssh_args(host)`` (the argv prefix ``run_as`` uses), ``fabric_connection(host)`` (strict
  host keys), ``processes_of(host)``, ``wait_idle(host, timeout=5)``, ``stop_host(host)``,
  ``start_host(host)`` (same port), ``pause_host(host)``/``resume_host(host)`` (sshd frozen:
  TCP connects, no SSH banner), ``host_down(host)``, ``ensure_running()``, ``reset_home(host)``,
  ``locks_of(host)``, ``leftovers(timeout=10)``, ``kill_leftovers()``,
  ``subset(n)``, ``close()``.
- ``start_cluster(n, base)``: a started ``SshCluster`` (context manager) of 1 to
  ``MAX_BENCH_HOSTS`` (64) hosts; its files live in a new directory under ``base``.
  ``free_port()`` / ``free_ports(n)``: TCP ports free right now.

Users are ``tfhost1`` ... ``tfhost4`` on 127.0.0.2 ... 127.0.0.5; they are created when missing,
and their homes are emptied (back to /etc/skel) and their processes killed at start and close.
A benchmark may ask for more (``MAX_BENCH_HOSTS``): ``tfhost5`` ... on 127.0.0.6 ... exist only
while the cluster does; close deletes them and their homes (a killed session's are deleted by
the next session of its slot). Their sshd start in parallel; users are created one at a time
(useradd holds the passwd lock), ~0.1 s each.
Concurrent test sessions on one machine each take a free slot: the second one gets users
``tfs1host1`` ... on 127.0.1.2 ... so sessions never share a user. The interpreter is made
runnable by the test users with the least change: ``setfacl -m u:USER:x`` only on the directories
on its path that others cannot traverse; the ACL entries are removed again at close. Where
ACLs are unavailable it falls back to ``chmod o+x``, which stays (another session may rely on it).

For the code under test: a host's login shell finds ``python3`` on the default PATH, which has no
TensorFlow, so hosts files must carry ``python=`` (``hosts_line`` puts ``cluster.python`` there).
Strict host key checking needs ``cluster.known_hosts``; ``[127.0.0.2]:PORT`` is the form both
OpenSSH and Paramiko look up for a port other than 22. Each sshd accepts only its own user.
Every worker of a cluster shares this machine, so each host needs its own ``tf_port``.
``processes_of`` leaves out zombies; ``run_as`` with a timeout does not kill the remote command.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import fcntl
import importlib.util
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import IO, TYPE_CHECKING

from launcher.commands import lock_path
from runformat import RUNS_DIR

if TYPE_CHECKING:
    from fabric import Connection

SSHD = Path("/usr/sbin/sshd")
MAX_HOSTS = 4  # the suite's hosts: their users stay between sessions
MAX_BENCH_HOSTS = 64  # for benchmarks: users beyond MAX_HOSTS live as long as their cluster
MAX_SLOTS = 8
POOL = 16  # threads for per-host set-up: enough to overlap waits, few enough for 2 cores
STATE_DIR = Path(tempfile.gettempdir()) / "tfcluster-sshcluster"
INSTALL_HINT = "run scripts/system-packages.sh (installs openssh-server and acl)"
START_TIMEOUT = 10.0


class SshClusterError(RuntimeError):
    """The test hosts could not be set up; the message says what to install or fix."""


def free_port(address: str = "") -> int:
    """A TCP port nobody listens on right now (on every address unless one is given)."""
    return free_ports(1, address)[0]


def free_ports(n: int, address: str = "") -> list[int]:
    """n distinct free TCP ports: all sockets stay bound until every port is chosen."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(n):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((address, 0))
            ports.append(sock.getsockname()[1])
        return ports


@dataclass(frozen=True)
class TestHost:
    """One SSH test host: its own sshd on its own loopback address, its own Unix user."""

    __test__ = False  # not a pytest test class despite the name

    name: str
    address: str
    port: int
    user: str
    home: Path
    key: Path
    python: str

    def hosts_line(self, *, tf_port: int, python: str | None = None, **options: str) -> str:
        """A hosts-file line for the launcher: user@address, then key=value options."""
        fields = {
            "port": str(self.port),
            "key": str(self.key),
            "tf_port": str(tf_port),
            "python": python or self.python,
            **{k: str(v) for k, v in options.items()},
        }
        for key, value in fields.items():
            if not value or any(c.isspace() for c in value):
                raise ValueError(f"hosts-file value {key}={value!r} is empty or has whitespace")
        return " ".join([f"{self.user}@{self.address}", *(f"{k}={v}" for k, v in fields.items())])


@dataclass
class _Sshd:
    """The sshd serving one host, restartable on the same port."""

    config: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False


@dataclass
class _Runtime:
    """State shared by a cluster and its subset views; released once by close()."""

    slot_lock: IO[str]
    slot: int
    sshd: dict[str, _Sshd]
    users: list[str]  # every existing user of the slot, used by this session or not
    acl_dirs: list[Path]
    temporary: list[str] = field(default_factory=list)  # users beyond MAX_HOSTS: deleted at close
    lock: threading.Lock = field(default_factory=threading.Lock)
    closed: bool = False


@dataclass
class SshCluster:
    """Running test hosts plus the client key and known_hosts file that reach them."""

    hosts: list[TestHost]
    key_path: Path
    known_hosts: Path
    python: str
    workdir: Path
    _rt: _Runtime = field(repr=False, compare=False)

    def __enter__(self) -> SshCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def subset(self, n: int) -> SshCluster:
        """A view on the first n hosts; it shares the sshd processes (close either one)."""
        if not 1 <= n <= len(self.hosts):
            raise ValueError(f"subset of {n} hosts from a cluster of {len(self.hosts)}")
        return dataclasses.replace(self, hosts=self.hosts[:n])

    def host(self, name: str) -> TestHost:
        """The host called name (tfhost1, ...)."""
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    def hosts_file(
        self, path: Path, n: int, *, tf_ports: list[int] | None = None, **options: str
    ) -> Path:
        """Write a hosts file for the first n hosts (the first is the chief); return path."""
        if not 1 <= n <= len(self.hosts):
            raise ValueError(f"{n} hosts asked, the cluster has {len(self.hosts)}")
        ports = tf_ports if tf_ports is not None else free_ports(n)
        if len(ports) != n:
            raise ValueError(f"{len(ports)} tf_ports for {n} hosts")
        lines = [
            h.hosts_line(tf_port=p, **options) for h, p in zip(self.hosts[:n], ports, strict=True)
        ]
        path.write_text("# SSH test hosts (tests/sshcluster.py)\n" + "\n".join(lines) + "\n")
        return path

    def ssh_args(self, host: TestHost) -> list[str]:
        """The ssh argv up to the command: batch mode, this key, strict host key checking."""
        return [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(self.key_path),
            "-p",
            str(host.port),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=5",
            "-o",
            "LogLevel=ERROR",
            f"{host.user}@{host.address}",
        ]

    def run_as(
        self, host: TestHost, command: str, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command as the host's user through the real ssh client."""
        return subprocess.run(
            [*self.ssh_args(host), command],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )

    def fabric_connection(self, host: TestHost) -> Connection:
        """A Fabric Connection that trusts only the keys in known_hosts (RejectPolicy)."""
        from fabric import Config, Connection
        from paramiko import RejectPolicy

        conn = Connection(
            host.address,
            user=host.user,
            port=host.port,
            config=Config(overrides={"load_ssh_configs": False, "run": {"in_stream": False}}),
            connect_timeout=5,
            connect_kwargs={
                "key_filename": str(self.key_path),
                "look_for_keys": False,
                "allow_agent": False,
            },
        )
        conn.client.load_host_keys(str(self.known_hosts))
        conn.client.set_missing_host_key_policy(RejectPolicy())
        return conn

    def processes_of(self, host: TestHost) -> list[str]:
        """`ps` lines (pid and command) of the host user's processes, zombies left out.

        Zombies are dead already; the ones sshd has not reaped yet would make checks flaky.
        """
        out = subprocess.run(
            ["ps", "-u", host.user, "-o", "pid=,stat=,args="],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        rows = [line.split(None, 2) for line in out.splitlines() if line.strip()]
        return [f"{row[0]} {row[-1]}" for row in rows if not row[1].startswith("Z")]

    def wait_idle(self, host: TestHost, timeout: float = 5) -> list[str]:
        """Processes of the user still there after up to timeout s (SSH sessions end late)."""
        deadline = time.monotonic() + timeout
        while (procs := self.processes_of(host)) and time.monotonic() < deadline:
            time.sleep(0.05)
        return procs

    def locks_of(self, host: TestHost) -> list[Path]:
        """The launcher's tf_port lock files anywhere in the host user's workdirs."""
        return lock_files(host.home)

    def leftovers(self, timeout: float = 10) -> dict[str, list[str]]:
        """What the test users left, by host name: processes still running after up to
        timeout s (SSH sessions end a moment after the client) and lock files."""
        deadline = time.monotonic() + timeout
        left: dict[str, list[str]] = {}
        for host in self.hosts:
            procs = self.wait_idle(host, max(0.0, deadline - time.monotonic()))
            found = procs + [f"lock {path}" for path in self.locks_of(host)]
            if found:
                left[host.name] = found
        return left

    def kill_leftovers(self) -> dict[str, list[str]]:
        """SIGKILL whatever the test users still run and delete their lock files; returns
        what was there, by host name (see `leftovers`, which waits; this does not).

        A test that fails half-way can leave workers behind; without this the next test
        would inherit them (busy ports, a held lock) and fail for a reason not its own.
        """
        left = self.leftovers(timeout=0)
        for host in self.hosts:
            if host.name in left:
                _kill_user_processes(host.user)
                for path in self.locks_of(host):
                    path.unlink(missing_ok=True)
        return left

    def stop_host(self, host: TestHost) -> None:
        """Stop the host's sshd: new connections are refused; open sessions live on."""
        with self._rt.lock:
            _stop_sshd(self._rt.sshd[host.name])

    def start_host(self, host: TestHost) -> None:
        """Start the host's sshd again on the same address and port."""
        with self._rt.lock:
            if self._rt.closed:
                raise SshClusterError("the SSH test cluster is closed")
            sshd = self._rt.sshd[host.name]
            if sshd.proc is not None and sshd.proc.poll() is None:
                return
            _start_sshd(sshd, host)
            _record_pids(self._rt)

    def pause_host(self, host: TestHost) -> None:
        """Freeze the host's sshd (SIGSTOP): connections open but no SSH banner comes."""
        with self._rt.lock:
            sshd = self._rt.sshd[host.name]
            if sshd.proc is None or sshd.proc.poll() is not None:
                raise SshClusterError(f"{host.name}: sshd is not running")
            sshd.proc.send_signal(signal.SIGSTOP)
            sshd.paused = True

    def resume_host(self, host: TestHost) -> None:
        """Let a paused sshd go on (SIGCONT)."""
        with self._rt.lock:
            sshd = self._rt.sshd[host.name]
            if sshd.proc is not None and sshd.proc.poll() is None:
                sshd.proc.send_signal(signal.SIGCONT)
            sshd.paused = False

    @contextlib.contextmanager
    def host_down(self, host: TestHost) -> Iterator[TestHost]:
        """The host's sshd is stopped inside the block and running again after it."""
        self.stop_host(host)
        try:
            yield host
        finally:
            self.start_host(host)

    def ensure_running(self) -> None:
        """Resume and restart every host a test left paused or stopped."""
        if self._rt.closed:
            return
        for host in self.hosts:
            self.resume_host(host)
            self.start_host(host)

    def reset_home(self, host: TestHost) -> None:
        """Kill the user's processes and put the home back to /etc/skel plus authorized_keys."""
        _kill_user_processes(host.user)
        _reset_home(host.user, self.key_path.with_suffix(".pub").read_text())

    def close(self) -> None:
        """Stop every sshd, kill the users' processes, empty homes, undo grants. Idempotent."""
        rt = self._rt
        with rt.lock:
            if rt.closed:
                return
            rt.closed = True
        atexit.unregister(self.close)
        errors: list[str] = []
        with ThreadPoolExecutor(max_workers=POOL) as pool:
            list(pool.map(_stop_sshd, rt.sshd.values()))
        users = [u for u in rt.users if _user_exists(u)]  # set-up may have failed half-way
        try:
            _kill_user_processes(*users)
        except (OSError, SshClusterError) as exc:
            errors.append(str(exc))
        for user in users:
            try:
                if user not in rt.temporary:
                    _reset_home(user, None)
            except (OSError, subprocess.SubprocessError) as exc:
                errors.append(f"{user}: {exc}")
        _revoke_acl(rt.acl_dirs, users)  # before userdel: setfacl -x needs the names
        for user in (u for u in rt.temporary if u in users):
            try:
                _delete_user(user)
            except (OSError, SshClusterError) as exc:
                errors.append(f"{user}: {exc}")
        _wait_discarded()
        _slot_pids_file(rt.slot).unlink(missing_ok=True)
        rt.slot_lock.close()
        shutil.rmtree(self.workdir, ignore_errors=True)
        if errors:
            raise SshClusterError("cleaning up the test users failed: " + "; ".join(errors))


def start_cluster(n: int, base: Path, python: str | None = None) -> SshCluster:
    """Start n (1 to MAX_BENCH_HOSTS) SSH test hosts, files under a new directory in base; see
    module doc."""
    if not 1 <= n <= MAX_BENCH_HOSTS:
        raise ValueError(f"between 1 and {MAX_BENCH_HOSTS} test hosts, not {n}")
    check_requirements()
    python = python or sys.executable
    slot, slot_lock = _take_slot()
    rt = _Runtime(slot_lock=slot_lock, slot=slot, sshd={}, users=[], acl_dirs=[])
    workdir = Path(tempfile.mkdtemp(prefix="sshcluster-", dir=base))
    key = workdir / "id_ed25519"
    cluster = SshCluster(
        hosts=[],
        key_path=key,
        known_hosts=workdir / "known_hosts",
        python=python,
        workdir=workdir,
        _rt=rt,
    )
    atexit.register(cluster.close)
    try:
        _kill_stale_sshd(slot)
        names = [_user_name(slot, i) for i in range(1, n + 1)]
        slot_users = [_user_name(slot, i) for i in range(1, MAX_BENCH_HOSTS + 1)]
        existing = {entry.pw_name for entry in pwd.getpwall()}
        # Users beyond MAX_HOSTS, this session's and a killed session's, go at close.
        rt.temporary = [u for u in slot_users[MAX_HOSTS:] if u in names or u in existing]
        rt.users = [u for u in slot_users if u in names or u in existing]
        for name in names:
            _ensure_user(name)
        with ThreadPoolExecutor(max_workers=POOL) as pool:
            keygens = [pool.submit(_keygen, key)]
            for name in names:
                (workdir / name).mkdir()
                keygens.append(pool.submit(_keygen, workdir / name / "ssh_host_ed25519_key"))
            for job in keygens:
                job.result()
        pubkey = key.with_suffix(".pub").read_text()
        # All of the slot: a killed session may have used more hosts.
        _kill_user_processes(*rt.users)
        with ThreadPoolExecutor(max_workers=POOL) as pool:
            resets = [pool.submit(_reset_home, u, pubkey if u in names else None) for u in rt.users]
            for job in resets:
                job.result()
        rt.acl_dirs = _grant_python(python, names)
        planned = [
            TestHost(
                name=name,
                address=f"127.0.{slot}.{i + 1}",
                port=0,
                user=name,
                home=Path(pwd.getpwnam(name).pw_dir),
                key=key,
                python=python,
            )
            for i, name in enumerate(names, start=1)
        ]
        for host in planned:
            rt.sshd[host.name] = _Sshd(
                config=workdir / host.name / "sshd_config", log=workdir / host.name / "sshd.log"
            )
        with ThreadPoolExecutor(max_workers=POOL) as pool:
            ports = list(pool.map(lambda h: _start_sshd(rt.sshd[h.name], h), planned))
        cluster.hosts.extend(
            dataclasses.replace(h, port=port) for h, port in zip(planned, ports, strict=True)
        )
        _record_pids(rt)
        with ThreadPoolExecutor(max_workers=POOL) as pool:
            list(pool.map(lambda h: _wait_ready(rt.sshd[h.name], h), cluster.hosts))
        _write_known_hosts(cluster)
        _check_python(cluster)
    except BaseException:
        cluster.close()
        raise
    return cluster


def check_requirements() -> None:
    """Raise SshClusterError naming what is missing: sshd, ssh tools or root."""
    missing = [str(SSHD)] if not os.access(SSHD, os.X_OK) else []
    missing += [tool for tool in ("ssh", "ssh-keygen", "ps") if shutil.which(tool) is None]
    if missing:
        raise SshClusterError(f"SSH test hosts need {', '.join(missing)}: {INSTALL_HINT}")
    if os.geteuid() != 0:
        raise SshClusterError("SSH test hosts need root: they create users and start sshd")


def _user_name(slot: int, index: int) -> str:
    return f"tfhost{index}" if slot == 0 else f"tfs{slot}host{index}"


def _take_slot() -> tuple[int, IO[str]]:
    """Lock the first free slot so concurrent sessions never share users or addresses."""
    STATE_DIR.mkdir(mode=0o700, exist_ok=True)
    for slot in range(MAX_SLOTS):
        handle = (STATE_DIR / f"slot{slot}.lock").open("w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        return slot, handle
    raise SshClusterError(f"{MAX_SLOTS} test sessions already hold SSH test hosts")


def _slot_pids_file(slot: int) -> Path:
    return STATE_DIR / f"slot{slot}.pids"


def _record_pids(rt: _Runtime) -> None:
    """Note the sshd pids so a later session can stop them if this process gets killed."""
    pids = [str(s.proc.pid) for s in rt.sshd.values() if s.proc is not None]
    _slot_pids_file(rt.slot).write_text("\n".join(pids) + "\n")


def _kill_stale_sshd(slot: int) -> None:
    """Stop sshd processes a killed earlier session of this slot left behind."""
    try:
        pids = [int(p) for p in _slot_pids_file(slot).read_text().split()]
    except (OSError, ValueError):
        return
    for pid in pids:
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()  # retitled: "sshd: /usr/..."
        except OSError:
            continue
        if exe == str(SSHD) and b"/sshcluster-" in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _run(argv: list[str]) -> None:
    """Run a setup command; its stderr goes into the error."""
    res = subprocess.run(argv, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SshClusterError(f"{shlex.join(argv)} failed: {res.stderr.strip()}")


def _ensure_user(name: str) -> None:
    """Create the user if missing (retrying while another useradd holds the passwd lock)."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        for attempt in range(20):
            res = subprocess.run([*USERADD, name], capture_output=True, text=True, check=False)
            if res.returncode == 0 or _user_exists(name):
                break
            if attempt == 19:
                raise SshClusterError(f"useradd {name} failed: {res.stderr.strip()}") from None
            time.sleep(0.1)
    if pwd.getpwnam(name).pw_passwd in ("!", "!*", "*LK*") or _shadow_locked(name):
        _run(["usermod", "-p", "*", name])


# No subordinate ids (/etc/subuid, /etc/subgid): test users never run containers, and
# allocating them doubles the time useradd and userdel take.
USERADD = ["useradd", "-m", "-s", "/bin/bash", "-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0"]


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _shadow_locked(name: str) -> bool:
    """A password field starting with '!' locks the account: sshd refuses even key logins."""
    with contextlib.suppress(OSError):
        for line in Path("/etc/shadow").read_text().splitlines():
            user, _, rest = line.partition(":")
            if user == name:
                return rest.startswith("!")
    return False


def _uid_pids(uids: set[int]) -> list[int]:
    """Live processes of these uids; zombies are skipped (dead already, their parent reaps
    them). One pass over /proc however many users."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if entry.stat().st_uid not in uids:
                    continue
                state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
                if state != "Z":
                    pids.append(int(entry.name))
    return pids


def _kill_user_processes(*users: str) -> None:
    """SIGKILL, pid by pid, whatever the test users still run (they fork: repeat until none)."""
    uids = {pwd.getpwnam(user).pw_uid for user in users}
    deadline = time.monotonic() + 5
    while pids := _uid_pids(uids):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise SshClusterError(f"processes of {', '.join(users)} survive SIGKILL: {pids}")
        time.sleep(0.02)


def _delete_user(user: str) -> None:
    """Delete a user made for one session, and its home (in the background, see _discard)."""
    home = Path(pwd.getpwnam(user).pw_dir)
    if home.is_dir() and home.parent != Path("/"):
        _discard([home], home.parent)
    for attempt in range(20):  # another session's useradd may hold the passwd lock
        res = subprocess.run(["userdel", user], capture_output=True, text=True, check=False)
        if res.returncode == 0 or not _user_exists(user):
            return
        if attempt == 19:
            raise SshClusterError(f"userdel {user} failed: {res.stderr.strip()}")
        time.sleep(0.1)


def _reset_home(user: str, pubkey: str | None) -> None:
    """Empty the home back to /etc/skel; install pubkey as ~/.ssh/authorized_keys if given."""
    entry = pwd.getpwnam(user)
    home = Path(entry.pw_dir)
    home.mkdir(mode=0o750, exist_ok=True)
    _discard(list(home.iterdir()), home.parent)
    skel = Path("/etc/skel")
    if skel.is_dir():
        shutil.copytree(skel, home, symlinks=True, dirs_exist_ok=True)
    if pubkey is not None:
        ssh_dir = home / ".ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        (ssh_dir / "authorized_keys").write_text(pubkey)
        (ssh_dir / "authorized_keys").chmod(0o600)
    os.lchown(home, entry.pw_uid, entry.pw_gid)
    for root, dirs, files in os.walk(home):  # never follows symlinks out of the home
        for name in dirs + files:
            os.lchown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


_discarding: list[subprocess.Popen[bytes]] = []


def _discard(paths: list[Path], where: Path) -> None:
    """Delete paths in the background: they move (a rename) into a new root-only folder in
    `where`, on their file system, which `rm -rf` then removes. A home can hold a venv that
    deploy built (TensorFlow: ~30,000 files, 2 GB); deleting it took a test a minute."""
    if not paths:
        return
    trash = Path(tempfile.mkdtemp(prefix=".tfcluster-trash-", dir=where))
    for path in paths:
        try:
            path.rename(trash / path.name)
        except OSError:  # another file system: delete it here and now
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    _discarding.append(subprocess.Popen(["rm", "-rf", "--", str(trash)]))


def _wait_discarded() -> None:
    """Until every background deletion has ended."""
    while _discarding:
        _discarding.pop().wait()


def _keygen(path: Path) -> None:
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.stem, "-f", str(path)])


def _lookup_dirs(path: Path, out: list[Path], depth: int = 0) -> Path:
    """Resolve path as the kernel does, appending every directory searched on the way."""
    if depth > 40:
        raise SshClusterError(f"too many symlinks resolving {path}")
    cur = Path("/")
    for part in path.parts[1:]:
        if part == "..":
            cur = cur.parent
            continue
        out.append(cur)
        nxt = cur / part
        if nxt.is_symlink():
            target = Path(os.readlink(nxt))
            cur = _lookup_dirs(target if target.is_absolute() else cur / target, out, depth + 1)
        else:
            cur = nxt
    return cur


def _python_paths(python: str) -> list[Path]:
    """Paths the interpreter opens at start: itself, its venv config, stdlib, site-packages."""
    res = subprocess.run(
        [
            python,
            "-c",
            "import os, site, sys; print(os.path.join(sys.prefix, 'pyvenv.cfg'));"
            "print(os.path.dirname(os.__file__)); print('\\n'.join(site.getsitepackages()))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return [Path(python).absolute()] + [Path(p) for p in res.stdout.splitlines() if p]


def _grant_python(python: str, users: list[str]) -> list[Path]:
    """Let the users traverse what they need to run python; return paths given ACL entries.

    Only directories on the way that others cannot search get an entry (plus the interpreter
    itself if others cannot execute it); each entry keeps the r/w bits others already have.
    """
    searched: list[Path] = []
    targets = [_lookup_dirs(path, searched) for path in _python_paths(python) if path.exists()]
    closed = [p for p in dict.fromkeys(searched) if not os.stat(p).st_mode & stat.S_IXOTH]
    executable = targets[0]
    if not os.stat(executable).st_mode & stat.S_IXOTH:
        closed.append(executable)
    granted: list[Path] = []
    with _acl_lock():
        for path in closed:
            mode = os.stat(path).st_mode
            perms = ("r" if mode & stat.S_IROTH else "-") + ("w" if mode & stat.S_IWOTH else "-")
            entries = ",".join(f"u:{user}:{perms}x" for user in users)
            if shutil.which("setfacl") is not None:
                res = subprocess.run(
                    ["setfacl", "-m", entries, str(path)], capture_output=True, check=False
                )
                if res.returncode == 0:
                    granted.append(path)
                    continue
            path.chmod(mode | stat.S_IXOTH)
    return granted


@contextlib.contextmanager
def _acl_lock() -> Iterator[None]:
    """Serialize ACL edits of concurrent sessions (they touch the same directories)."""
    STATE_DIR.mkdir(mode=0o700, exist_ok=True)
    with (STATE_DIR / "acl.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _revoke_acl(dirs: list[Path], users: list[str]) -> None:
    """Remove the users' ACL entries; drop the ACL when no named entry is left."""
    if not dirs:
        return
    entries = ",".join(f"u:{user}" for user in users)
    with _acl_lock():
        for path in dirs:
            subprocess.run(["setfacl", "-x", entries, str(path)], capture_output=True, check=False)
            acl = subprocess.run(
                ["getfacl", "-c", "-p", str(path)], capture_output=True, text=True, check=False
            ).stdout
            named = [
                line
                for line in acl.splitlines()
                if line.startswith(("user:", "group:")) and line.split(":")[1]
            ]
            if not named:
                subprocess.run(["setfacl", "-b", str(path)], capture_output=True, check=False)


def _sshd_config(host: TestHost, keydir: Path) -> str:
    return "\n".join(
        [
            f"ListenAddress {host.address}",
            f"Port {host.port}",
            f"HostKey {keydir / 'ssh_host_ed25519_key'}",
            f"PidFile {keydir / 'sshd.pid'}",
            f"AllowUsers {host.user}",
            "AuthorizedKeysFile .ssh/authorized_keys",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin no",
            "UsePAM no",
            "StrictModes no",
            "UseDNS no",
            "PrintMotd no",
            "MaxStartups 100",
            "MaxSessions 100",
            "Subsystem sftp internal-sftp",
            "LogLevel VERBOSE",
            "",
        ]
    )


def _start_sshd(sshd: _Sshd, host: TestHost) -> int:
    """Start sshd for host (on host.port, or a free port when 0); return the port."""
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
    for _ in range(5):
        port = host.port or free_port(host.address)
        sshd.config.write_text(
            _sshd_config(dataclasses.replace(host, port=port), sshd.config.parent)
        )
        sshd.proc = subprocess.Popen(
            [str(SSHD), "-D", "-f", str(sshd.config), "-E", str(sshd.log)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        sshd.paused = False
        if _listening(sshd, host.address, port, quick=True):
            return port
        if host.port:
            break
    log = sshd.log.read_text(errors="replace")[-2000:] if sshd.log.exists() else ""
    raise SshClusterError(f"{host.name}: sshd did not start on {host.address}:{host.port}\n{log}")


def _listening(sshd: _Sshd, address: str, port: int, *, quick: bool) -> bool:
    """Wait for the port to accept; quick returns True as soon as sshd is alive and bound."""
    deadline = time.monotonic() + START_TIMEOUT
    assert sshd.proc is not None
    while time.monotonic() < deadline:
        if sshd.proc.poll() is not None:
            return False
        with socket.socket() as sock:
            sock.settimeout(1)
            try:
                sock.connect((address, port))
            except OSError:
                time.sleep(0.01)
                continue
            if quick:
                return True
            with contextlib.suppress(OSError):
                if sock.recv(64).startswith(b"SSH-"):
                    return True
        time.sleep(0.01)
    return False


def _wait_ready(sshd: _Sshd, host: TestHost) -> None:
    if not _listening(sshd, host.address, host.port, quick=False):
        log = sshd.log.read_text(errors="replace")[-2000:] if sshd.log.exists() else ""
        raise SshClusterError(f"{host.name}: sshd on {host.address}:{host.port} is silent\n{log}")


def _stop_sshd(sshd: _Sshd) -> None:
    proc = sshd.proc
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGCONT)
    proc.terminate()
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    sshd.paused = False


def _write_known_hosts(cluster: SshCluster) -> None:
    lines = []
    for host in cluster.hosts:
        keytype, blob = (
            (cluster.workdir / host.name / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        )
        lines.append(f"[{host.address}]:{host.port} {keytype} {blob}\n")
    cluster.known_hosts.write_text("".join(lines))


def _check_python(cluster: SshCluster) -> None:
    """Log in to every host and run the interpreter as its user, as the launcher will."""
    code = "import sys; print(sys.version)"
    if importlib.util.find_spec("tensorflow") is not None and cluster.python == sys.executable:
        code = "import importlib.util as u, sys; assert u.find_spec('tensorflow'); " + code
    command = f"{shlex.quote(cluster.python)} -c {shlex.quote(code)}"

    def check(host: TestHost) -> str | None:
        res = cluster.run_as(host, command, timeout=20)
        if res.returncode == 0:
            return None
        return f"{host.name}: exit {res.returncode}: {res.stderr.strip()[-1000:]}"

    with ThreadPoolExecutor(max_workers=POOL) as pool:
        failures = [f for f in pool.map(check, cluster.hosts) if f]
    if failures:
        raise SshClusterError(
            f"the test users cannot run {cluster.python} over SSH:\n" + "\n".join(failures)
        )


_LOCK = PurePosixPath(lock_path(".", 0))


def lock_files(root: Path, depth: int = 4) -> list[Path]:
    """The launcher's lock files (`<workdir>/locks/*.lock`) under root, up to depth folders
    down; virtual environments and run folders (thousands of files, never a lock) are not
    entered."""
    found: list[Path] = []
    for top, dirs, files in os.walk(root):
        here = Path(top)
        level = len(here.relative_to(root).parts)
        if here.name == _LOCK.parent.name:
            found += [here / f for f in files if f.endswith(_LOCK.suffix)]
        dirs[:] = [
            d
            for d in dirs
            if level < depth and d not in _NO_LOCKS and not (here / d / "pyvenv.cfg").exists()
        ]
    return sorted(found)


_NO_LOCKS = frozenset({RUNS_DIR, "site-packages", "node_modules", ".cache"})


def ssh_session_pids(host: TestHost) -> list[int]:
    """The sshd processes that carry the user's SSH sessions (not the user's own programs)."""
    out = subprocess.run(
        ["ps", "-u", host.user, "-o", "pid=,args="], capture_output=True, text=True, check=False
    ).stdout
    return [
        int(line.split()[0])
        for line in out.splitlines()
        if re.search(rf"sshd: {host.user}@(notty|internal-sftp)", line)
    ]
