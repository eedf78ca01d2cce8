"""Fixtures shared by every test folder: real SSH test hosts (see tests/sshcluster.py).

- ``ssh_cluster``: session-wide, 3 hosts (tfhost1..3). ``ssh_cluster4``: the same sshd
  processes seen as 4 hosts, for benchmarks. Hosts a test stopped or paused are running again
  before the next test. Homes are NOT emptied between tests: call ``cluster.reset_home(host)``
  or use per-test paths when a test needs a clean home.
- Without /usr/sbin/sshd (or without root) these fixtures fail with the fix.
- ``slurm_cluster``: session-wide, a one-node Slurm cluster of its own (tests/slurmcluster.py:
  munged, slurmctld, slurmd, config in a temporary folder), stopped at the session's end.
- Leaks: after every test the harness looks for what it left behind and fails the test (an
  error at teardown, naming it) before cleaning up: processes and tf_port lock files of the
  SSH test hosts' users, Slurm jobs, local processes running from or in the test's tmp_path,
  launcher lock files in it, and new run folders in the checkout's own runs/.
- Skips: ``skip_or_fail(reason)`` is the one way a test or fixture skips for want of
  something (a browser, Slurm, root): it skips, except under CI (``CI`` set to true, 1 or yes)
  where it fails. The run ends with the count of skipped tests; under CI a run that skipped
  anything fails, also under pytest-xdist.
- ``record_figures``: a scenario test appends what it measured to test-output/reliability.jsonl
  (the figures of docs/reliability.md).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import NoReturn

import pytest

from runformat import RUNS_DIR
from tests.slurmcluster import SlurmCluster, SlurmClusterError
from tests.slurmcluster import start_cluster as start_slurm
from tests.sshcluster import (
    MAX_HOSTS,
    SshCluster,
    SshClusterError,
    check_requirements,
    lock_files,
    start_cluster,
)

_started: list[SshCluster] = []
_slurm: list[SlurmCluster] = []
ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "test-output" / "reliability.jsonl"
# s: a worker or SSH session being stopped may take this long to end (the harness's own
# tests shorten it: their leaks are meant)
LEAK_WAIT = float(os.environ.get("TFCLUSTER_TEST_LEAK_WAIT", "10"))
_skipped: list[str] = []


def in_ci() -> bool:
    """`CI` set to a true value (true, 1, yes; any case): every test must run there."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def skip_or_fail(reason: str) -> NoReturn:
    """Skip for want of something this machine lacks; under CI fail instead, with the reason."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set: nothing may be skipped)", pytrace=False)
    pytest.skip(reason)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Count skipped tests (xdist replays every worker's reports in the controller)."""
    if report.skipped and not hasattr(report, "wasxfail") and report.nodeid not in _skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI a run that skipped a test fails: a skip there hides a missing part."""
    if hasattr(session.config, "workerinput") or not (in_ci() and _skipped):
        return
    if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if hasattr(terminalreporter.config, "workerinput"):
        return
    rule = "must be 0 under CI" if in_ci() else "0 under CI"
    terminalreporter.write_line(f"skipped tests: {len(_skipped)} ({rule})")
    if in_ci() and _skipped:
        for nodeid in _skipped:
            terminalreporter.write_line(f"  skipped under CI: {nodeid}", red=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules with the most `slow` tests first, each kept whole and in its own order (so
    module fixtures are still built once). Under `-n 2` the long real runs start early and the
    many quick tests even out the end, instead of one process finishing a long run that it
    started last while the other has nothing left to do."""
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::", 1)[0], []).append(item)

    def slow_count(module: list[pytest.Item]) -> int:
        return sum(item.get_closest_marker("slow") is not None for item in module)

    items[:] = [
        item for module in sorted(modules.values(), key=lambda m: -slow_count(m)) for item in module
    ]


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """With `-m serial` (scripts/test.sh's run of the tests that must run alone), import only
    the test modules that mark a test serial: importing all of them (TensorFlow among them)
    takes longer than collecting and running what is selected."""
    if config.option.markexpr != "serial" or not collection_path.name.startswith("test_"):
        return None
    if collection_path.suffix != ".py":
        return None
    return "mark.serial" not in collection_path.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def _ssh_cluster_all(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshCluster]:
    """All test hosts, started once per session and always stopped at its end."""
    try:
        check_requirements()
    except SshClusterError as exc:
        pytest.fail(f"SSH test hosts unavailable: {exc}", pytrace=False)
    with start_cluster(MAX_HOSTS, tmp_path_factory.mktemp("sshcluster")) as cluster:
        _started.append(cluster)
        try:
            yield cluster
        finally:
            _started.remove(cluster)


@pytest.fixture(scope="session")
def ssh_cluster(_ssh_cluster_all: SshCluster) -> SshCluster:
    """Three SSH test hosts (tfhost1..3), each its own user and home, strict host keys."""
    return _ssh_cluster_all.subset(3)


@pytest.fixture(scope="session")
def ssh_cluster4(_ssh_cluster_all: SshCluster) -> SshCluster:
    """Four SSH test hosts (tfhost1..4), the same sshd processes as ssh_cluster."""
    return _ssh_cluster_all


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A real one-node Slurm (22.05 from Debian), started once per session, always stopped.

    Its folder is outside pytest's private temp folder, so that the SSH test hosts' users can
    read slurm.conf and reach munged: they submit jobs like users of a login node."""
    base = Path(tempfile.mkdtemp(prefix="tfcluster-slurm-"))
    try:
        cluster = start_slurm(base)
    except SlurmClusterError as exc:
        shutil.rmtree(base, ignore_errors=True)
        skip_or_fail(f"Slurm test cluster unavailable: {exc}")
    try:
        with cluster:
            _slurm.append(cluster)
            try:
                yield cluster
            finally:
                _slurm.remove(cluster)
    finally:
        shutil.rmtree(base, ignore_errors=True)


Firewall = Callable[..., None]


@pytest.fixture
def firewall() -> Iterator[Firewall]:
    """`drop(address, port, replies=False)`: iptables drops every TCP packet to that address
    and port (and, with `replies`, every packet sent from them) until the test ends, like a
    firewall or a cut cable between hosts; no packet leaves this machine."""
    rules: list[list[str]] = []

    def drop(address: str, port: int, *, replies: bool = False) -> None:
        matches = [["-d", address, "--dport", str(port)]]
        if replies:
            matches.append(["-s", address, "--sport", str(port)])
        for match in matches:
            rule = ["INPUT", "-p", "tcp", *match, "-j", "DROP"]
            subprocess.run(["iptables", "-I", *rule], check=True, capture_output=True)
            rules.append(rule)

    try:
        yield drop
    finally:
        for rule in rules:
            subprocess.run(["iptables", "-D", *rule], check=False, capture_output=True)


@pytest.fixture(autouse=True)
def _nothing_left_behind(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test (and its own fixtures' teardown), fail it naming what it left on a
    test host; then clean that up, so the next test does not fail for a reason not its own,
    and restart the SSH hosts it stopped or paused. "Nothing left anywhere" is the product's
    promise: the harness is the first to notice when it breaks."""
    runs = ROOT / RUNS_DIR
    runs_before = set(runs.iterdir()) if runs.is_dir() else set()
    yield
    left: list[str] = []
    tmp_path = request.node.funcargs.get("tmp_path") if hasattr(request.node, "funcargs") else None
    if isinstance(tmp_path, Path):
        left += _local_leftovers(tmp_path)
    if runs.is_dir():
        left += [f"run folder {p}" for p in sorted(set(runs.iterdir()) - runs_before)]
    if "slurm_cluster" in request.fixturenames:
        for slurm in _slurm:
            if jobs := slurm.wait_idle(LEAK_WAIT):
                left.append(f"Slurm jobs {' '.join(jobs)}")
                slurm.run("scancel", "--full", "--signal", "KILL", *jobs)
                slurm.wait_idle(15)
    if "_ssh_cluster_all" in request.fixturenames:
        for cluster in _started:
            cluster.ensure_running()
            for host, found in cluster.leftovers(LEAK_WAIT).items():
                left += [f"{host}: {line}" for line in found]
            cluster.kill_leftovers()
    if left:
        pytest.fail(
            f"{request.node.nodeid} left behind on the test hosts:\n  " + "\n  ".join(left),
            pytrace=False,
        )


def _local_leftovers(tmp_path: Path) -> list[str]:
    """Processes of this machine running from or in tmp_path (after waiting for them to end),
    and launcher lock files in workdirs there; both are then removed."""
    deadline = time.monotonic() + LEAK_WAIT
    while (procs := processes_under(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in procs:
        with suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    locks = [p for p in lock_files(tmp_path) if (p.parent.parent / RUNS_DIR).is_dir()]
    for path in locks:
        path.unlink(missing_ok=True)
    return [f"local: {pid} {cmd}" for pid, cmd in procs.items()] + [
        f"local: lock {p}" for p in locks
    ]


def processes_under(folder: Path) -> dict[int, str]:
    """Live processes whose command line names, or whose working folder is in, folder."""
    found: dict[int, str] = {}
    mark = str(folder)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with suppress(OSError):
            if (entry / "stat").read_text().rpartition(")")[2].split()[0] == "Z":
                continue
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
            if mark in cmd or cwd == mark or cwd.startswith(mark + "/"):
                found[int(entry.name)] = cmd.strip()
    return found


@pytest.fixture
def record_figures(request: pytest.FixtureRequest) -> Callable[..., None]:
    """`record_figures(scenario, name=value, ...)`: one JSON line per measurement, with the
    test's id, the time and the core count, so that the figures of docs/reliability.md can be
    traced."""

    def record(scenario: int, **figures: object) -> None:
        FIGURES.parent.mkdir(exist_ok=True)
        line = {
            "scenario": scenario,
            "test": request.node.nodeid,
            "at": time.strftime("%Y-%m-%d %H:%M:%S"),
            "cpus": os.cpu_count(),
            **figures,
        }
        with FIGURES.open("a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")

    return record
