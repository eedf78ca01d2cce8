"""Network preflight: can every worker reach every other worker at `addr:tf_port`?

TensorFlow's workers wait for each other for up to an hour, so a wrong `addr=` or a firewall
shows up as a job that never starts. Before anything starts, one short Python program runs on
every worker's host at once (the host's own interpreter, nothing to install): it listens on its
worker's `tf_port`, connects to every other worker at `addr:tf_port` in parallel, and trades a
one-line greeting, so that "reached" means "reached that worker's check", not "something
answers on that port". It also reports which `addr`s its host resolves. `check_network`
turns the answers into one line per failing pair, with the fix.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from launcher.commands import q
from launcher.hosts import Host
from launcher.remote import HostError, HostShell, each_host

# Peers' checks start up to a few seconds apart (SSH round trips): a refused connection is
# retried for WINDOW seconds; a connection attempt gives up after CONNECT_TIMEOUT.
WINDOW = 6.0
CONNECT_TIMEOUT = 3.0
LISTEN_SECONDS = WINDOW + CONNECT_TIMEOUT + 2
CLOCK_WARN_SECONDS = 1.0

NETCHECK = r"""
import json, socket, sys, threading, time
cfg = json.loads(sys.argv[1])
start = time.monotonic()
me, nonce, window, timeout = cfg["me"], cfg["nonce"], cfg["window"], cfg["timeout"]
workers = {w["index"]: w for w in cfg["workers"]}
out = {"listen": None, "reached": {}, "heard": [], "resolve": {}}
heard = set()
expect = {i for i in cfg["callers"] if i != me}
srv = None
if me in cfg["targets"]:
    try:
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("0.0.0.0", workers[me]["port"]))
        srv.listen(128)
        srv.settimeout(0.2)
    except OSError as e:
        out["listen"] = e.strerror or str(e)
        srv = None

def greet(conn):
    with conn:
        try:
            conn.settimeout(timeout)
            words = conn.makefile("r").readline().split()
            if len(words) == 4 and words[0] == "tfcluster-netcheck" and words[1] == nonce:
                if words[3] == str(me):
                    # Answer first: once the last caller is heard, this program may end.
                    conn.sendall(("ok %d\n" % me).encode())
                    heard.add(int(words[2]))
                    return
            conn.sendall(b"no\n")
        except (OSError, ValueError):
            pass

def serve():
    end = start + cfg["listen"]
    while srv is not None and time.monotonic() < end and not expect <= heard:
        try:
            conn, _ = srv.accept()
        except socket.timeout:
            continue
        except OSError:
            break
        threading.Thread(target=greet, args=(conn,), daemon=True).start()

def reach(w):
    t0 = time.monotonic()
    try:
        socket.getaddrinfo(w["addr"], w["port"], 0, socket.SOCK_STREAM)
    except socket.gaierror as e:
        error = "cannot resolve %s: %s" % (w["addr"], e.strerror)
        return {"ok": False, "kind": "resolve", "error": error}
    while True:
        try:
            s = socket.create_connection((w["addr"], w["port"]), timeout=timeout)
        except ConnectionRefusedError:
            if time.monotonic() - start < window:
                time.sleep(0.1)
                continue
            return {"ok": False, "kind": "refused", "error": "connection refused"}
        except (socket.timeout, TimeoutError):
            return {"ok": False, "kind": "timeout", "error": "timed out after %g s" % timeout}
        except OSError as e:
            return {"ok": False, "kind": "other", "error": (e.strerror or str(e)).lower()}
        break
    with s:
        try:
            s.settimeout(timeout)
            s.sendall(("tfcluster-netcheck %s %d %d\n" % (nonce, me, w["index"])).encode())
            reply = s.makefile("r").readline().split()
        except OSError as e:
            error = "connected, then %s" % (e.strerror or e)
            return {"ok": False, "kind": "silent", "error": error}
    if reply == ["ok", str(w["index"])]:
        return {"ok": True, "ms": round(1000 * (time.monotonic() - t0), 1)}
    return {"ok": False, "kind": "other_service", "error": "something else answers there"}

for w in workers.values():
    try:
        infos = socket.getaddrinfo(w["addr"], None, 0, socket.SOCK_STREAM)
        out["resolve"][w["addr"]] = infos[0][4][0]
    except socket.gaierror as e:
        out["resolve"][w["addr"]] = None

server = threading.Thread(target=serve, daemon=True)
server.start()
results = {}
def run(w):
    results[w["index"]] = reach(w)
threads = [threading.Thread(target=run, args=(workers[i],), daemon=True)
           for i in cfg["targets"] if i != me] if me in cfg["callers"] else []
for t in threads:
    t.start()
for t in threads:
    t.join()
server.join()
out["reached"] = {str(i): r for i, r in results.items()}
out["heard"] = sorted(heard)
print("NETCHECK " + json.dumps(out), flush=True)
"""

_HINTS = {
    "timeout": "check addr= and the firewall",
    "refused": "addr= may name another machine, or a firewall rejects the port",
    "resolve": "add the name to that host's DNS or /etc/hosts, or use an IP address in addr=",
    "other_service": "addr= may name another machine, whose tf_port another program holds",
    "silent": "a firewall or proxy may cut the connection",
    "other": "check addr= and the network route between them",
}


@dataclass(frozen=True)
class Peer:
    """One worker taking part: its host, the interpreter to run the check with, its shell."""

    shell: HostShell
    python: str

    @property
    def host(self) -> Host:
        return self.shell.host


@dataclass
class NetworkReport:
    """What the check found: per worker a summary for the table, and every failing pair."""

    reached: dict[int, tuple[int, int]] = field(default_factory=dict)  # index -> (ok, tried)
    resolved: dict[int, tuple[int, int]] = field(default_factory=dict)  # index -> (ok, names)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def network_cell(self, index: int) -> str:
        """The `network` column of fab check: peers this worker reached, of those tried."""
        if index not in self.reached:
            return "-"
        ok, tried = self.reached[index]
        return f"{'ok' if ok == tried else 'FAILED'} {ok}/{tried}"

    def resolve_cell(self, index: int) -> str:
        if index not in self.resolved:
            return "-"
        ok, names = self.resolved[index]
        return f"{ok}/{names}"


def netcheck_command(python: str, config: dict[str, Any]) -> str:
    return f"{q(python)} -c {q(NETCHECK)} {q(json.dumps(config, separators=(',', ':')))}"


def parse_netcheck(host: Host, output: str) -> dict[str, Any]:
    for line in output.splitlines():
        if line.startswith("NETCHECK "):
            data = json.loads(line[len("NETCHECK ") :])
            if isinstance(data, dict):
                return data
    raise HostError(host, "the network check printed no answer")


def check_network(
    peers: Sequence[Peer], hosts: Sequence[Host], listeners: set[int] | None = None
) -> NetworkReport:
    """Run the check on every peer's host at once; `hosts` are all workers of the job.

    Only peers take part (a host that failed its preflight is reported there, not twice), and
    only `listeners` (default: every peer) are connected to: a worker whose tf_port is taken
    is already named by the preflight.
    """
    started = time.monotonic()
    report = NetworkReport()
    if len(hosts) < 2 or not peers:
        return report
    indices = [p.host.index for p in peers]
    config: dict[str, Any] = {
        "nonce": secrets.token_hex(8),
        "workers": [{"index": h.index, "addr": h.addr, "port": h.tf_port} for h in hosts],
        "targets": [i for i in indices if listeners is None or i in listeners],
        "callers": indices,
        "window": WINDOW,
        "timeout": CONNECT_TIMEOUT,
        "listen": LISTEN_SECONDS,
    }

    def one(peer: Peer) -> dict[str, Any]:
        cmd = netcheck_command(peer.python, {**config, "me": peer.host.index})
        limit = LISTEN_SECONDS + 20
        try:
            result = peer.shell.run(cmd, timeout=limit)
        except HostError as e:
            if "timed out" not in e.message:
                raise
            raise HostError(
                peer.host, f"the network check did not finish within {limit:g} s (overloaded?)"
            ) from e
        if result.code != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise HostError(peer.host, f"the network check failed (exit {result.code}): {last}")
        return parse_netcheck(peer.host, result.stdout)

    answers = each_host(peers, one)
    by_index = {h.index: h for h in hosts}
    for peer, answer in zip(peers, answers, strict=True):
        me = peer.host
        if not isinstance(answer, dict):
            msg = answer.message if isinstance(answer, HostError) else str(answer)
            report.problems.append(f"worker {me.index} ({me.label}): {msg}")
            continue
        who = f"worker {me.index} ({me.label})"
        if answer.get("listen"):
            report.problems.append(
                f"{who} cannot listen on tf_port {me.tf_port}: {answer['listen']} "
                "(stop what holds it or choose another tf_port)"
            )
        resolve = answer.get("resolve") or {}
        unresolved = sorted(name for name, ip in resolve.items() if ip is None)
        report.resolved[me.index] = (len(resolve) - len(unresolved), len(resolve))
        reached = answer.get("reached") or {}
        ok = 0
        for key, outcome in sorted(reached.items(), key=lambda kv: int(kv[0])):
            other = by_index[int(key)]
            if outcome.get("ok"):
                ok += 1
                continue
            if outcome.get("kind") == "resolve":
                unresolved = [name for name in unresolved if name != other.addr]
            hint = _HINTS.get(str(outcome.get("kind")), _HINTS["other"])
            report.problems.append(
                f"{who} cannot reach worker {other.index} at {other.tf_address}: "
                f"{outcome.get('error')} ({hint})"
            )
        report.reached[me.index] = (ok, len(reached))
        for name in unresolved:  # not already named by a pair above
            report.problems.append(f"{who} cannot resolve addr {name} ({_HINTS['resolve']})")
    report.seconds = time.monotonic() - started
    return report


def clock_offset(
    host_start: float, host_end: float, sent: float, received: float
) -> tuple[float, float]:
    """A host's clock minus ours, and how far off that estimate can be (NTP's rule).

    The host read its clock at the start and the end of the probe; we sent the command at
    `sent` and had the answer at `received`. What the host did not spend between its two
    readings went to the network and process start-up, split unevenly at worst.
    """
    offset = ((host_start - sent) + (host_end - received)) / 2
    delay = max((received - sent) - (host_end - host_start), 0.0)
    return offset, delay / 2


def clock_warning(offset: float, uncertainty: float) -> str | None:
    """A warning when the host's clock is surely more than CLOCK_WARN_SECONDS off."""
    if abs(offset) - uncertainty <= CLOCK_WARN_SECONDS:
        return None
    side = "ahead of" if offset > 0 else "behind"
    return (
        f"clock is {abs(offset):.1f} s {side} this machine's (wall-time charts of its "
        "workers will be shifted; turn on NTP there, e.g. `timedatectl set-ntp true`)"
    )


def clock_cell(offset: float | None, uncertainty: float | None) -> str:
    if offset is None or uncertainty is None:
        return "-"
    return f"{offset:+.2f} s"
