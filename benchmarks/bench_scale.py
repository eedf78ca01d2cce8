"""The launcher at 64 SSH hosts against 8, side by side in one run (as root, like the tests):

    python benchmarks/bench_scale.py [--hosts 64 --reference 8] [--watch 20]

Every host is a real sshd on its own loopback address with its own Unix user
(tests/sshcluster.py); every worker runs a small script that prints a line and sleeps, so
that the launcher, not training, is what is measured. For each size it prints:

- `fab check`, `fab deploy` (fresh, then unchanged) and `fab status` of a running job;
- `fab train --script` until every worker runs (the first line each script prints carries its
  clock; the latest of them counts) and until the launcher said so ("started training");
- the launcher's CPU per second of wall time while it watches the running job (its own
  process; the hosts' processes, sshd sessions included, are shown apart);
- `fab stop` until it returns and until no worker process is left on any host;
- mirrored bytes per byte the workers wrote (the final size of every host's run folder).

The ratios 64/8 against the targets of issue 18: start <= 2x, stop <= 10 s, watching <= 20% of
one core. All hosts share this machine's cores, so every host's sshd and worker competes with
the launcher here, as it would not across real machines: the hosts' CPU is printed to tell the
two apart. `--profile` samples the launcher with py-spy (if on PATH) while it starts and
watches the larger job. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fcntl import ioctl
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a file: python benchmarks/bench_scale.py
    sys.path.insert(0, str(REPO))

from tests.sshcluster import SshCluster, TestHost, check_requirements, start_cluster  # noqa: E402

FAB = [str(Path(sys.executable).parent / "fab"), "-r", str(REPO)]
WORKDIR = "scale"  # the hosts' workdir, under each user's home
SCRIPT = "ticker.py"
TICKER = '''"""Stands in for training: one line now, then one line every EVERY seconds, forever."""

import sys
import time

every = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
print(f"started {time.time():.3f}", flush=True)
n = 0
while True:
    n += 1
    time.sleep(every)
    print(f"tick {n} at {time.time():.3f}", flush=True)
'''
TICKS = os.sysconf("SC_CLK_TCK")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][AB0-9]|\r")


@dataclass
class Figures:
    """What one size measured; None where the step was not run."""

    hosts: int
    check: float | None = None
    deploy: float | None = None
    deploy_again: float | None = None
    status: float | None = None
    start_workers: float | None = None  # fab train until the last worker printed its first line
    start_seen: float | None = None  # ... until the launcher named every worker as started
    start_cpu: float | None = None  # the launcher's CPU seconds until then
    start_hosts_cpu: float | None = None  # the test users' processes' CPU seconds until then
    watch_cpu: float | None = None  # the launcher's CPU seconds per second while watching
    hosts_cpu: float | None = None  # every test user's processes, CPU s per s, while watching
    stop_return: float | None = None  # fab stop until it returned
    stop_cpu: float | None = None  # fab stop's CPU seconds
    stop_gone: float | None = None  # fab stop until no worker process was left
    train_exit: float | None = None  # fab stop until fab train had exited
    mirrored: int | None = None
    written: int | None = None
    notes: list[str] = field(default_factory=list)


def fab(cwd: Path, cluster: SshCluster, *args: str, timeout: float = 900) -> float:
    """Run one fab command to its end; its wall time. A failure ends the benchmark."""
    t0 = time.perf_counter()
    res = subprocess.run(
        [*FAB, *args], cwd=cwd, env=fab_env(cluster), capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip
    took = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"fab {' '.join(args)} failed:\n{res.stdout[-3000:]}\n{res.stderr}")
    return took


def fab_env(cluster: SshCluster) -> dict[str, str]:
    return dict(os.environ, TFCLUSTER_KNOWN_HOSTS=str(cluster.known_hosts), COLUMNS="160")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def users_stats(uids: set[int]) -> Iterator[tuple[Path, list[str]]]:
    """(/proc/<pid>, the fields of its stat after the command name) of the users' processes."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid in uids:
                yield entry, (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue


def users_cpu(uids: set[int]) -> float:
    """CPU seconds of the users' live processes and of the children they reaped (an sshd
    session reaps the shell of every command it ran)."""
    return sum(sum(int(f) for f in fields[11:15]) / TICKS for _, fields in users_stats(uids))


def user_processes(uids: set[int], needle: bytes | None = None) -> list[int]:
    """Pids of the users' live processes (whose command line holds needle, if given)."""
    found = []
    for entry, fields in users_stats(uids):
        if fields[0] == "Z":
            continue
        try:
            if needle is not None and needle not in (entry / "cmdline").read_bytes():
                continue
        except OSError:
            continue
        found.append(int(entry.name))
    return found


def wait_until(predicate: object, timeout: float, every: float = 0.1) -> float | None:
    """Seconds until predicate() is true (checked every `every` s), None at the timeout."""
    assert callable(predicate)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if predicate():
            return time.perf_counter() - t0
        time.sleep(every)
    return None


class Launcher:
    """`fab train` on a pseudo-terminal, as a user sees it (the live table redrawn in place),
    its output read in a thread and the time each worker was first named as started."""

    def __init__(self, cwd: Path, cluster: SshCluster, args: list[str]) -> None:
        master, slave = pty.openpty()
        ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 100, 160, 0, 0))
        self.t0 = time.time()
        self.proc = subprocess.Popen(
            [*FAB, *args], cwd=cwd, env=fab_env(cluster), stdin=subprocess.DEVNULL,
            stdout=slave, stderr=slave, start_new_session=True,
        )  # fmt: skip
        os.close(slave)
        self.master = master
        self.text: list[str] = []
        self.started: dict[int, float] = {}  # worker index: seconds after t0
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        pending = ""
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                break
            if not chunk:
                break
            pending += ANSI.sub("", chunk.decode(errors="replace"))
            *lines, pending = pending.split("\n")
            now = time.time() - self.t0
            for line in lines:
                self.text.append(line)
                if "started training:" in line:
                    for index in re.findall(r"worker (\d+) \(", line):
                        self.started.setdefault(int(index), now)

    def output(self) -> str:
        return "\n".join(self.text[-60:])

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.reader.join(timeout=5)
        os.close(self.master)


def first_line_times(hosts: Iterable[TestHost], run_id: str, t0: float) -> dict[int, float]:
    """Per worker, when its script printed its first line (its own clock), after t0."""
    found = {}
    for index, host in enumerate(hosts):
        log = host.home / WORKDIR / "runs" / run_id / "workers" / str(index) / "worker.log"
        try:
            with log.open() as f:
                for line in f:
                    if line.startswith("started "):
                        found[index] = float(line.split()[1]) - t0
                        break
        except OSError:
            continue
    return found


def new_run(runs: Path, before: set[str], launcher: Launcher, timeout: float = 600) -> str:
    """The id of the run fab train made (its folder appears once every host is ready)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if runs.is_dir() and (new := {p.name for p in runs.iterdir()} - before):
            return sorted(new)[-1]
        if launcher.proc.poll() is not None:
            launcher.reader.join(timeout=5)
            raise SystemExit(f"fab train ended before it made a run:\n{launcher.output()}")
        time.sleep(0.05)
    raise SystemExit(f"fab train made no run folder in {runs} within {timeout:g} s")


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def profile(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy sampling the launcher for `seconds` (None when py-spy is not installed)."""
    spy = shutil.which("py-spy")
    if spy is None:
        return None
    return subprocess.Popen(
        [spy, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "50", "-f", "raw",
         "-o", str(out), "--threads", "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def run_job(
    project: Path, cluster: SshCluster, n: int, hosts_file: Path, opts: argparse.Namespace,
    fig: Figures,
) -> None:  # fmt: skip
    """Start the ticker on n hosts, watch it, look at it with fab status, stop it."""
    hosts = cluster.hosts[:n]
    uids = {os.stat(h.home).st_uid for h in hosts}
    runs = project / "runs"
    before = {p.name for p in runs.iterdir()} if runs.is_dir() else set()
    args = ["train", "--hosts-file", str(hosts_file), "--script", f"job/{SCRIPT}",
            "--trainer-args", str(opts.every), "--start-timeout", "600"]  # fmt: skip
    hosts_before = users_cpu(uids)
    launcher = Launcher(project, cluster, args)
    spy = None
    try:
        run_id = new_run(runs, before, launcher)
        if opts.profile and n == opts.hosts:
            spy = profile(launcher.proc.pid, 600, project / f"profile-start-{n}.txt")

        def all_running() -> bool:
            if launcher.proc.poll() is not None:
                raise SystemExit(f"fab train ended early:\n{launcher.output()}")
            return len(first_line_times(hosts, run_id, launcher.t0)) == n

        if wait_until(all_running, 600, 0.2) is None:
            raise SystemExit(f"not every worker started within 600 s:\n{launcher.output()}")
        fig.start_workers = max(first_line_times(hosts, run_id, launcher.t0).values())
        if wait_until(lambda: len(launcher.started) == n, 300, 0.1) is None:
            fig.notes.append(f"the launcher named {len(launcher.started)} of {n} as started")
        else:
            fig.start_seen = max(launcher.started.values())
            fig.start_cpu = cpu_seconds(launcher.proc.pid)
            fig.start_hosts_cpu = users_cpu(uids) - hosts_before
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait()
            spy = None
        time.sleep(2 * opts.interval)  # past the first passes that fetch whole logs
        if opts.profile and n == opts.hosts:
            spy = profile(launcher.proc.pid, opts.watch, project / f"profile-watch-{n}.txt")
        cpu0, host0, t0 = cpu_seconds(launcher.proc.pid), users_cpu(uids), time.perf_counter()
        time.sleep(opts.watch)
        cpu1, host1, t1 = cpu_seconds(launcher.proc.pid), users_cpu(uids), time.perf_counter()
        fig.watch_cpu = (cpu1 - cpu0) / (t1 - t0)
        fig.hosts_cpu = (host1 - host0) / (t1 - t0)
        if spy is not None:
            spy.wait()
            spy = None
        fig.status = fab(project, cluster, "status", "--hosts-file", str(hosts_file))
        stop_started = time.perf_counter()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        stopper = threading.Thread(
            target=lambda: setattr(
                fig, "stop_return", fab(project, cluster, "stop", "--run", run_id)
            )
        )
        stopper.start()
        needle = SCRIPT.encode()
        fig.stop_gone = wait_until(lambda: not user_processes(uids, needle), 120, 0.05)
        stopper.join()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)  # fab stop: the one reaped
        fig.stop_cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
        launcher.proc.wait(timeout=120)
        fig.train_exit = time.perf_counter() - stop_started
        if wait_until(lambda: not user_processes(uids), 30) is None:
            fig.notes.append(f"processes of the test users left: {user_processes(uids)}")
    finally:
        if spy is not None:
            spy.kill()
            spy.wait()
        launcher.close()
    record = json.loads((runs / run_id / "cluster.json").read_text())
    fig.mirrored = sum((record.get("sync_bytes") or {}).values())
    fig.written = sum(tree_bytes(h.home / WORKDIR / "runs" / run_id) for h in hosts)


def script_supported() -> bool:
    res = subprocess.run([*FAB, "--help", "train"], capture_output=True, text=True, check=False)
    return "--script" in res.stdout


def fmt(value: float | None, unit: str = "s", digits: int = 2) -> str:
    if value is None:
        return "-"
    if unit == "%":
        return f"{100 * value:.{digits - 1}f}%"
    return f"{value:.{digits}f}{' ' + unit if unit else ''}"


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a is not None and b else "-"


def report(ref: Figures, big: Figures, setup: float) -> None:
    r, b = ref.hosts, big.hosts
    rows: list[tuple[str, str, str, str, str]] = []

    def add(name: str, attr: str, unit: str = "s", target: str = "") -> None:
        x, y = getattr(ref, attr), getattr(big, attr)
        rows.append((name, fmt(x, unit), fmt(y, unit), ratio(y, x), target))

    add("fab check", "check")
    add("fab deploy (fresh)", "deploy")
    add("fab deploy (unchanged)", "deploy_again")
    add("fab status (running job)", "status")
    add("fab train: every worker running", "start_workers", target="ratio <= 2x")
    add("fab train: launcher saw all started", "start_seen")
    add("  launcher CPU until then", "start_cpu")
    add("  hosts' processes CPU until then", "start_hosts_cpu")
    add("watching: launcher CPU per s", "watch_cpu", "%", target="<= 20%")
    add("watching: hosts' processes CPU per s", "hosts_cpu", "%")
    add("fab stop: returned", "stop_return")
    add("  its CPU", "stop_cpu")
    add("fab stop: no worker left", "stop_gone", target="<= 10 s")
    add("fab stop: fab train exited", "train_exit")
    mirror = [
        fig.mirrored / fig.written if fig.mirrored is not None and fig.written else None
        for fig in (ref, big)
    ]
    rows.append(("mirrored bytes per byte written", fmt(mirror[0], ""), fmt(mirror[1], ""),
                 ratio(mirror[1], mirror[0]), ""))  # fmt: skip
    head = ("", f"{r} hosts", f"{b} hosts", f"{b}/{r}", "target")
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(5)]
    print(f"\n{b} SSH test hosts started in {setup:.1f} s (users, keys, sshd, a login each)")
    for row in [head, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    for fig in (ref, big):
        for note in fig.notes:
            print(f"note ({fig.hosts} hosts): {note}")
    for fig in (ref, big):
        if fig.mirrored is not None:
            print(f"{fig.hosts} hosts: {fig.mirrored} bytes mirrored, {fig.written} written")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=64, help="the larger job (default 64)")
    parser.add_argument("--reference", type=int, default=8, help="the reference (default 8)")
    parser.add_argument("--watch", type=float, default=20.0, help="seconds of watching measured")
    parser.add_argument("--every", type=float, default=1.0, help="seconds between ticker lines")
    parser.add_argument("--interval", type=float, default=2.0, help="fab train's poll interval")
    parser.add_argument("--profile", action="store_true", help="py-spy the larger job's fab")
    parser.add_argument("--keep", action="store_true", help="keep the project folder")
    opts = parser.parse_args()
    if not 1 <= opts.reference < opts.hosts:
        parser.error("--reference must be at least 1 and below --hosts")
    check_requirements()
    base = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    t0 = time.perf_counter()
    cluster = start_cluster(opts.hosts, base)
    setup = time.perf_counter() - t0
    figures = {n: Figures(n) for n in (opts.reference, opts.hosts)}
    try:
        project = base / "project"
        (project / "job").mkdir(parents=True)
        (project / "job" / SCRIPT).write_text(TICKER)
        files = {
            n: cluster.hosts_file(project / f"hosts-{n}.txt", n, workdir=f"~/{WORKDIR}")
            for n in figures
        }
        for n, fig in figures.items():
            print(f"{n} hosts: check, deploy, deploy again", flush=True)
            fig.check = fab(project, cluster, "check", "--hosts-file", str(files[n]))
            fig.deploy = fab(project, cluster, "deploy", "--hosts-file", str(files[n]))
            fig.deploy_again = fab(project, cluster, "deploy", "--hosts-file", str(files[n]))
        if script_supported():
            for n, fig in figures.items():
                print(f"{n} hosts: train, watch {opts.watch:g} s, status, stop", flush=True)
                run_job(project, cluster, n, files[n], opts, fig)
        else:
            for fig in figures.values():
                fig.notes.append("fab train has no --script here: start, watch, stop not measured")
        report(figures[opts.reference], figures[opts.hosts], setup)
        if opts.profile:
            print(f"profiles: {project}/profile-*.txt")
    finally:
        leftovers = cluster.kill_leftovers()
        cluster.close()
        if leftovers:
            print(f"killed what the test users left: {sorted(leftovers)}")
        if not opts.keep and not opts.profile:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
