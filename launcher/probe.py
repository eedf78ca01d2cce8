"""Preflight: what each host has (interpreter, TensorFlow, free port and disk, deployed code).

One short Python program runs on each host with that host's interpreter, changes nothing, and
prints one JSON line; `host_problems` judges each answer against those of all hosts.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from launcher.commands import home_path, q
from launcher.hosts import Host
from launcher.netcheck import clock_offset
from launcher.remote import HostError, HostShell

# Free space a run folder needs before a run starts: the trainer's model.h5 (8.4 MB), its
# event files and logs take tens of MB, but a user's model or data may take hundreds, and a
# disk that fills mid-run fails the chief's save at the very end. Backups (--max-restarts)
# keep the whole training state (weights and optimizer, about 3x the model) twice over.
MIN_FREE_MB = 500
BACKUP_FREE_MB = 500  # more, when the run keeps backups
MIN_FREE_ENV = "TFCLUSTER_MIN_FREE_MB"  # a smaller (or larger) floor for known small disks

PROBE = r"""
import time
started = time.time()
import json, os, socket, sys
from importlib import metadata
wd, port, code = os.path.expanduser(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
out = {"python": sys.version.split()[0], "executable": sys.executable,
       "home": os.path.expanduser("~"), "workdir": wd}
for name in ("tensorflow", "tf-keras"):
    try:
        out[name] = metadata.version(name)
    except Exception:
        out[name] = None
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("0.0.0.0", port))
    out["port_free"] = True
except OSError as e:
    out["port_free"] = False
    out["port_error"] = e.strerror
finally:
    s.close()
d = os.path.join(wd, "runs")
while not os.path.isdir(d) and os.path.dirname(d) != d:
    d = os.path.dirname(d)
st = os.statvfs(d)
out["free_mb"] = st.f_bavail * st.f_frsize // 1048576
out["runs_dir"] = d
out["writable"] = os.access(d, os.W_OK)
codes = os.path.join(wd, "code")
out["deployed"] = os.path.isfile(os.path.join(codes, code, ".complete"))
try:
    with open(os.path.join(codes, "current")) as f:
        out["current"] = f.read().strip()
except OSError:
    out["current"] = None
venv = os.path.join(wd, "venv", "bin", "python")
out["venv_python"] = venv if os.path.isfile(venv) else None
mnist = os.path.join(wd, "data", "mnist.npz")
out["mnist"] = mnist if os.path.isfile(mnist) else None
out["clock"] = [started, time.time()]
print("PROBE " + json.dumps(out))
"""


@dataclass(frozen=True)
class ProbeResult:
    host: Host
    python: str
    facts: dict[str, Any]


def probe_command(python: str, workdir: str, tf_port: int, code_hash: str) -> str:
    return f"{q(python)} -c {q(PROBE)} {q(workdir)} {tf_port} {q(code_hash)}"


def parse_probe(host: Host, output: str) -> dict[str, Any]:
    for line in output.splitlines():
        if line.startswith("PROBE "):
            data = json.loads(line[6:])
            if isinstance(data, dict):
                return data
    raise HostError(host, "the preflight program printed no answer")


def default_python(host: Host) -> str:
    """Local workers default to the interpreter running fab (it has TensorFlow); others python3."""
    if host.python:
        return host.python
    return sys.executable if host.local else "python3"


def probe_host(shell: HostShell, code: str) -> ProbeResult:
    """Run the preflight on one host with the interpreter its workers will use, and time the
    round trip so that the host's clock can be compared with this one's."""
    host = shell.host
    python = default_python(host)
    cmd = probe_command(python, host.workdir, host.tf_port, code)
    if not host.python and not host.local:
        # A virtualenv made by `fab deploy --venv` wins over the system python3.
        venv = home_path(f"{host.workdir}/venv/bin/python")
        cmd = f"if [ -x {venv} ]; then exec {venv} -c {q(PROBE)} " + (
            f"{q(host.workdir)} {host.tf_port} {q(code)}; fi; {cmd}"
        )
    sent = time.time()
    result = shell.run(cmd, timeout=60)
    received = time.time()
    if result.code != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        if result.code == 127:
            raise HostError(host, f"python {python!r} not found (set python= in the hosts file)")
        raise HostError(host, f"python {python!r} failed (exit {result.code}): {last}")
    facts = parse_probe(host, result.stdout)
    if isinstance(clock := facts.get("clock"), list) and len(clock) == 2:
        facts["clock_offset"], facts["clock_uncertainty"] = clock_offset(
            clock[0], clock[1], sent, received
        )
    used = host.python or (sys.executable if host.local else facts.get("executable") or python)
    return ProbeResult(host, str(used), facts)


def free_needed(max_restarts: int = 0) -> int:
    """MB a run folder must have free before a run starts: MIN_FREE_MB, more when the run
    keeps backups to restart from; $TFCLUSTER_MIN_FREE_MB, when set, is the whole answer."""
    given = os.environ.get(MIN_FREE_ENV, "").strip()
    if given.isdigit():
        return int(given)
    return MIN_FREE_MB + (BACKUP_FREE_MB if max_restarts > 0 else 0)


def python_minor(version: object) -> str | None:
    """`3.11` from `3.11.7`: the part that must match for the same wheels to behave alike."""
    return ".".join(str(version).split(".")[:2]) if version else None


def majority(counts: Counter[str]) -> str | None:
    """The value more than half of the hosts have, if there is one."""
    if not counts:
        return None
    value, n = counts.most_common(1)[0]
    return value if 2 * n > sum(counts.values()) else None


def disk_problem(facts: dict[str, Any], need_mb: int) -> str | None:
    """What is wrong with the runs folder a probe found: not writable, or short of room."""
    where = facts.get("runs_dir") or facts.get("workdir")
    if facts.get("writable") is False:
        return f"cannot write in {where} (a read-only file system or its permissions)"
    if int(facts.get("free_mb", 0)) < need_mb:
        return (
            f"only {facts.get('free_mb')} MB free in {where}; a run needs {need_mb} MB "
            f"(more with --max-restarts, for its backups; ${MIN_FREE_ENV} sets another need)"
        )
    return None


def host_problems(
    p: ProbeResult,
    everyone: Sequence[dict[str, Any]],
    local: bool,
    need_code: bool = True,
    need_mb: int | None = None,
) -> list[str]:
    """Everything wrong with one host, each a short phrase with what to do.

    `everyone` holds the facts of all hosts: TensorFlow and Python must match across them.
    """
    facts = p.facts
    problems = []
    if not facts.get("tensorflow"):
        problems.append(f"TensorFlow is not installed for {p.python} (fab deploy --venv)")
    versions = Counter(str(f["tensorflow"]) for f in everyone if f.get("tensorflow"))
    mine = str(facts.get("tensorflow"))
    usual = majority(versions)
    if facts.get("tensorflow") and len(versions) > 1 and usual is None:
        problems.append(
            f"TensorFlow {mine} differs from other hosts "
            f"({', '.join(sorted(versions))}); install one version everywhere"
        )
    elif facts.get("tensorflow") and usual is not None and mine != usual:
        # Most hosts agree: name only the odd ones out, so the user knows which to fix.
        problems.append(
            f"TensorFlow {mine} differs from the other hosts' {usual}; install {usual} here "
            "(fab deploy --venv installs trainer/requirements.txt)"
        )
    pythons = {python_minor(f.get("python")) for f in everyone if f.get("python")}
    if len(pythons) > 1:
        problems.append(
            f"Python {python_minor(facts.get('python'))} differs from other hosts "
            f"({', '.join(sorted(str(v) for v in pythons))}); use one Python version everywhere"
        )
    if not facts.get("port_free"):
        problems.append(
            f"tf_port {p.host.tf_port} is in use ({facts.get('port_error', 'busy')}); "
            "stop what holds it or choose another tf_port"
        )
    disk = disk_problem(facts, free_needed() if need_mb is None else need_mb)
    if disk is not None:
        problems.append(disk)
    if need_code and not local and not facts.get("deployed"):
        problems.append("the local trainer/ is not deployed there (run fab deploy)")
    return problems
