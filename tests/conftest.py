"""Fixtures shared by every test folder: real SSH test hosts (see tests/sshcluster.py).

- ``ssh_cluster``: session-wide, 3 hosts (tfhost1..3). ``ssh_cluster4``: the same sshd
  processes seen as 4 hosts, for benchmarks. Hosts a test stopped or paused are running again
  before the next test. Homes are NOT emptied between tests: call ``cluster.reset_home(host)``
  or use per-test paths when a test needs a clean home.
- Without /usr/sbin/sshd (or without root) these fixtures fail with the fix, also in CI (CI=true).
- ``slurm_cluster``: session-wide, a one-node Slurm cluster of its own (tests/slurmcluster.py:
  munged, slurmctld, slurmd, config in a temporary folder), stopped at the session's end.
  Without Slurm it skips the test, except in CI (CI=true) where it fails with the fix.
- ``record_figures``: a scenario test appends what it measured to test-output/reliability.jsonl
  (the figures of docs/reliability.md).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.slurmcluster import SlurmCluster, SlurmClusterError
from tests.slurmcluster import start_cluster as start_slurm
from tests.sshcluster import (
    MAX_HOSTS,
    SshCluster,
    SshClusterError,
    check_requirements,
    start_cluster,
)

_started: list[SshCluster] = []
FIGURES = Path(__file__).resolve().parents[1] / "test-output" / "reliability.jsonl"


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
        where = " in CI (CI=true)" if os.environ.get("CI") == "true" else ""
        pytest.fail(f"SSH test hosts unavailable{where}: {exc}", pytrace=False)
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
        if os.environ.get("CI") == "true":
            pytest.fail(f"Slurm test cluster unavailable in CI (CI=true): {exc}", pytrace=False)
        pytest.skip(f"Slurm test cluster unavailable: {exc}")
    try:
        with cluster:
            yield cluster
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(autouse=True)
def _ssh_hosts_back_up(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test that used the SSH test hosts, restart the ones it stopped or paused and
    end what it left running there (the test itself asserts that nothing was left; this stops
    a cascade). Other tests cannot touch the hosts, so they skip the `ps` calls."""
    yield
    if "_ssh_cluster_all" not in request.fixturenames:
        return
    for cluster in _started:
        cluster.ensure_running()
        cluster.kill_leftovers()


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
