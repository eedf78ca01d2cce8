"""The hosts file: one worker per line, in task order; the first line is worker 0, the chief.

Parsing is pure (text in, hosts out) so that every rule can be tested from a table, and every
error names the file, the line, the value and what is allowed, so a user fixes it in one go.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from launcher import registry
from launcher.slurm import SLURM_KEYS, SlurmOptionError, SlurmSpec, parse_slurm_options

DEFAULT_TF_PORT = 23456
DEFAULT_WORKDIR = "~/tfjobs"
LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "local"})
SSH_KEYS = frozenset({"user", "port", "key"})
KEYS = ("user", "port", "key", "addr", "tf_port", "python", "workdir", *SLURM_KEYS)

# Values may only hold characters that mean nothing to a shell: they end up in remote commands
# (always quoted too, but a value like `$(rm -rf ~)` is a mistake worth refusing at the source).
_SAFE_VALUE = re.compile(r"[A-Za-z0-9._~/+@:,%-]+")
_HOSTNAME = re.compile(
    r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*"
)
_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_ALLOWED_CHARS = "letters, digits and . _ ~ / + @ : , % -"


class HostsFileError(ValueError):
    """A hosts file that cannot be used; the message is one line, ready for the user."""

    def __init__(self, path: str, line: int, value: str, message: str) -> None:
        self.path = path
        self.line = line
        self.value = value
        self.reason = message
        where = f"{path}:{line}" if line else path
        shown = f" {value!r}" if value else ""
        super().__init__(f"{where}:{shown} {message}")


@dataclass(frozen=True)
class Host:
    """One worker: where to reach it over SSH (unless local) and how its TF server is reached."""

    index: int
    name: str
    hostname: str
    line: int = 0
    user: str | None = None
    port: int | None = None
    key: str | None = None
    addr: str = ""
    tf_port: int = DEFAULT_TF_PORT
    python: str | None = None
    workdir: str = DEFAULT_WORKDIR
    options: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    # A `scheduler=slurm` line: the login host (or this machine) that submits the job.
    slurm: SlurmSpec | None = None

    @property
    def scheduler(self) -> str:
        """The backend that runs this line's workers (launcher/registry.py)."""
        return self.options.get("scheduler", registry.DEFAULT)

    @property
    def local(self) -> bool:
        """A local-name line with no SSH option is a process on this machine, no SSH at all."""
        return self.hostname in LOCAL_NAMES and not (SSH_KEYS & self.options.keys())

    @property
    def role(self) -> str:
        return "chief" if self.index == 0 else "worker"

    @property
    def ssh_target(self) -> str | None:
        """`user@host:port` as given (None for local hosts); the SSH config fills the rest."""
        if self.local:
            return None
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"{user}{self.hostname}{port}"

    @property
    def label(self) -> str:
        """How the host is named in messages: the first word of its line."""
        return self.name

    @property
    def tf_address(self) -> str:
        return f"{self.addr}:{self.tf_port}"


def is_loopback(name: str) -> bool:
    """True for names that only mean "this machine" (other machines cannot reach them)."""
    if name in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _port(path: str, lineno: int, key: str, value: str) -> int:
    if not re.fullmatch(r"[0-9]{1,5}", value) or not 1 <= int(value) <= 65535:
        raise HostsFileError(path, lineno, value, f"{key} must be a port number from 1 to 65535")
    return int(value)


def parse_line(path: str, lineno: int, index: int, text: str) -> Host:
    """Parse one non-blank, comment-free line into a Host."""
    words = text.split()
    target, pairs = words[0], words[1:]
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise HostsFileError(
                path, lineno, pair, "expected key=value after the host name (e.g. tf_port=23457)"
            )
        if key not in KEYS:
            raise HostsFileError(
                path, lineno, pair, f"unknown key {key!r}; allowed keys: {', '.join(KEYS)}"
            )
        if key in options:
            raise HostsFileError(path, lineno, pair, f"{key} is given twice on this line")
        if not _SAFE_VALUE.fullmatch(value):
            raise HostsFileError(
                path, lineno, pair, f"{key} must be non-empty and hold only {_ALLOWED_CHARS}"
            )
        options[key] = value

    user, at, hostname = target.rpartition("@")
    if at:
        if not _USER.fullmatch(user):
            raise HostsFileError(path, lineno, target, "user name before @ is not valid")
        if "user" in options and options["user"] != user:
            raise HostsFileError(path, lineno, target, "user given both as user@ and user=")
        options["user"] = user
    if not _HOSTNAME.fullmatch(hostname):
        raise HostsFileError(
            path, lineno, target, "expected a host name or IPv4 address, optionally user@host"
        )
    if "user" in options and not _USER.fullmatch(options["user"]):
        raise HostsFileError(path, lineno, options["user"], "user name is not valid")

    try:
        slurm = parse_slurm_options(options)
    except SlurmOptionError as exc:
        raise HostsFileError(path, lineno, exc.pair, exc.message) from None
    addr = options.get("addr")
    if addr is not None and not _HOSTNAME.fullmatch(addr):
        why = (
            "is IPv6 or has a port: TensorFlow's server listens on IPv4 only; give an IPv4 "
            "address or a host name (the port goes in tf_port=)"
            if ":" in addr
            else "must be a host name or IPv4 address"
        )
        raise HostsFileError(path, lineno, f"addr={addr}", f"addr {why}")
    port = _port(path, lineno, "port", options["port"]) if "port" in options else None
    tf_port = (
        _port(path, lineno, "tf_port", options["tf_port"])
        if "tf_port" in options
        else DEFAULT_TF_PORT
    )
    return Host(
        index=index,
        name=target,
        hostname=hostname,
        line=lineno,
        user=options.get("user"),
        port=port,
        key=options.get("key"),
        addr=options.get("addr", "localhost" if hostname in LOCAL_NAMES else hostname),
        tf_port=tf_port,
        python=options.get("python"),
        workdir=options.get("workdir", DEFAULT_WORKDIR),
        options=options,
        slurm=slurm,
    )


def _machine(host: Host) -> str:
    """Which machine a worker's TF server binds on: all loopback names are this machine."""
    return "this machine" if is_loopback(host.addr) or host.local else host.addr


def parse_hosts(text: str, path: str = "hosts.txt") -> list[Host]:
    """Parse a whole hosts file and check the rules that span lines."""
    hosts: list[Host] = []
    # Editors on Windows start UTF-8 files with a byte order mark; it is not part of the host.
    for lineno, raw in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if line:
            hosts.append(parse_line(path, lineno, len(hosts), line))
    if not hosts:
        raise HostsFileError(
            path, 0, "", "lists no hosts; write one host per line, e.g. `localhost tf_port=23456`"
        )
    slurm = next((h for h in hosts if h.slurm is not None), None)
    if slurm is not None and len(hosts) > 1:
        other = next(h for h in hosts if h is not slurm)
        raise HostsFileError(
            path,
            other.line,
            other.name,
            f"a scheduler=slurm line (line {slurm.line}) must be the only line: Slurm runs "
            "every worker; set workers= on that line, or use SSH lines without it",
        )
    # TF's gRPC server binds every interface, so the port must be unique per machine, and all
    # loopback addresses are the same machine.
    seen: dict[tuple[str, int], Host] = {}
    for host in hosts:
        where = (_machine(host), host.tf_port)
        if where in seen:
            raise HostsFileError(
                path,
                host.line,
                host.tf_address,
                f"tf_port {host.tf_port} is already used on {where[0]} by line "
                f"{seen[where].line}; give each worker on one machine its own tf_port",
            )
        seen[where] = host
    remote = [h for h in hosts if not is_loopback(h.addr)]
    if remote:
        for host in hosts:
            if is_loopback(host.addr):
                raise HostsFileError(
                    path,
                    host.line,
                    host.addr,
                    f"addr is a loopback address but {remote[0].name} (line {remote[0].line}) "
                    "is another machine that cannot reach it; set addr= to this host's "
                    "network address",
                )
    return hosts


def load_hosts(path: str | Path) -> list[Host]:
    """Read and parse a hosts file; a missing or unreadable file is a HostsFileError too."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HostsFileError(
            str(p), 0, "", "not found; create it (one host per line) or pass --hosts-file"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HostsFileError(str(p), 0, "", f"cannot be read: {exc}") from None
    return parse_hosts(text, str(p))
