"""The network preflight: every worker's host listens on its tf_port and every other one
connects to it, locally and over SSH; a failing pair is named with its fix, nothing starts."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from launcher.hosts import parse_line
from launcher.netcheck import (
    Peer,
    check_network,
    clock_offset,
    clock_warning,
)
from launcher.remote import LocalShell
from tests.conftest import Firewall
from tests.launcher.helpers import FAST, fab_env, run_fab, this_machines_address
from tests.sshcluster import SshCluster, free_ports


@pytest.mark.parametrize(
    ("host_start", "host_end", "sent", "received", "offset", "uncertainty"),
    [
        (100.1, 100.2, 100.0, 100.3, 0.0, 0.1),  # same clock, 0.2 s lost on the way
        (105.1, 105.2, 100.0, 100.3, 5.0, 0.1),  # 5 s ahead
        (97.0, 97.0, 100.0, 100.0, -3.0, 0.0),
    ],
)
def test_clock_offset_uses_both_readings(
    host_start: float,
    host_end: float,
    sent: float,
    received: float,
    offset: float,
    uncertainty: float,
) -> None:
    got = clock_offset(host_start, host_end, sent, received)
    assert got == (pytest.approx(offset), pytest.approx(uncertainty))


@pytest.mark.parametrize(
    ("offset", "uncertainty", "warns"),
    [(0.3, 0.1, None), (1.5, 0.1, "1.5 s ahead of"), (-2.0, 0.2, "2.0 s behind"), (1.2, 0.5, None)],
)
def test_clock_warns_only_when_surely_over_a_second(
    offset: float, uncertainty: float, warns: str | None
) -> None:
    warning = clock_warning(offset, uncertainty)
    assert (warning is None) if warns is None else (warning is not None and warns in warning)


def local_peers(lines: list[str]) -> list[Peer]:
    hosts = [parse_line("hosts.txt", i + 1, i, line) for i, line in enumerate(lines)]
    return [Peer(LocalShell(h), "python3") for h in hosts]


def test_four_local_workers_reach_each_other_in_parallel() -> None:
    peers = local_peers([f"localhost tf_port={port}" for port in free_ports(4)])
    report = check_network(peers, [p.host for p in peers])
    assert report.problems == []
    assert [report.network_cell(i) for i in range(4)] == ["ok 3/3"] * 4


def test_a_port_held_by_another_program_is_named_once() -> None:
    ports = free_ports(2)
    peers = local_peers([f"localhost tf_port={port}" for port in ports])
    hosts = [p.host for p in peers]
    with socket.create_server(("0.0.0.0", ports[1])):  # accepts, never greets back
        # fab check leaves a worker whose port the preflight found taken out of the targets.
        told = check_network(peers, hosts, listeners={0})
        untold = check_network(peers, hosts)
    assert told.problems == [] and told.network_cell(0) == "ok 0/0"
    assert any("worker 1 (localhost) cannot listen on tf_port" in p for p in untold.problems)
    reached = [p for p in untold.problems if p.startswith("worker 0 (localhost) cannot reach")]
    assert len(reached) == 1 and "connected, then" in reached[0], untold.problems


def test_fab_check_and_train_name_an_unreachable_local_worker(
    tmp_path: Path, firewall: Firewall
) -> None:
    ports = free_ports(2)
    here = this_machines_address()
    firewall(here, ports[1])
    (tmp_path / "hosts.txt").write_text(
        f"localhost tf_port={ports[0]} addr={here}\nlocalhost tf_port={ports[1]} addr={here}\n"
    )
    started = time.monotonic()
    out = run_fab(tmp_path, "check", timeout=120)
    seconds = time.monotonic() - started
    assert out.returncode == 1, out.stdout + out.stderr
    named = f"worker 0 (localhost) cannot reach worker 1 at {here}:{ports[1]}: timed out"
    assert named in out.stderr and "addr=" in out.stderr, out.stderr
    assert "worker 1 (localhost) cannot" not in out.stderr  # worker 1 reaches worker 0
    rows = [line.split() for line in out.stdout.splitlines() if line.startswith(("0 ", "1 "))]
    assert [row[-2] for row in rows] == ["0/1", "1/1"] and rows[0][-3] == "FAILED"
    assert seconds < 30

    out = run_fab(tmp_path, "train", *FAST, "--epochs", "1", timeout=120)
    assert out.returncode == 1 and named in out.stderr, out.stdout + out.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.slow
def test_fab_check_names_an_unreachable_ssh_worker(
    ssh_cluster: SshCluster, tmp_path: Path, firewall: Firewall
) -> None:
    here = this_machines_address()
    ports = free_ports(3)
    firewall(here, ports[2])
    lines = [
        h.hosts_line(tf_port=port, addr=here)
        for h, port in zip(ssh_cluster.hosts, ports, strict=True)
    ]
    (tmp_path / "hosts.txt").write_text("\n".join(lines) + "\n")
    env = fab_env(TFCLUSTER_KNOWN_HOSTS=str(ssh_cluster.known_hosts))
    started = time.monotonic()
    out = run_fab(tmp_path, "check", env=env, timeout=120)
    seconds = time.monotonic() - started
    assert out.returncode == 1, out.stdout + out.stderr
    bad = ssh_cluster.hosts[2]
    for index in (0, 1):
        host = ssh_cluster.hosts[index]
        who = f"worker {index} ({host.user}@{host.address})"
        assert f"{who} cannot reach worker 2 at {here}:{ports[2]}: timed out" in out.stderr, (
            out.stderr
        )
    assert f"worker 2 ({bad.user}@{bad.address}) cannot" not in out.stderr
    assert seconds < 30, seconds
    # The good pair is good: both SSH hosts reached each other (and not worker 2).
    rows = [line.split() for line in out.stdout.splitlines() if "@127.0." in line]
    assert [row[-2] for row in rows] == ["1/2", "1/2", "2/2"], out.stdout


def test_an_addr_that_does_not_resolve_is_named_with_the_fix() -> None:
    ports = free_ports(2)
    peers = local_peers(
        [f"localhost tf_port={ports[0]}", f"localhost tf_port={ports[1]} addr=no-such-host.invalid"]
    )
    report = check_network(peers, [p.host for p in peers])
    assert report.problems == [
        f"worker 0 (localhost) cannot reach worker 1 at no-such-host.invalid:{ports[1]}: "
        "cannot resolve no-such-host.invalid: Name or service not known (add the name to that "
        "host's DNS or /etc/hosts, or use an IP address in addr=)",
        "worker 1 (localhost) cannot resolve addr no-such-host.invalid (add the name to that "
        "host's DNS or /etc/hosts, or use an IP address in addr=)",
    ]
    assert [report.resolve_cell(i) for i in (0, 1)] == ["1/2", "1/2"]
