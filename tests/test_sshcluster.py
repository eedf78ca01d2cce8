"""The SSH test hosts behave like separate real machines, with strict host key checking."""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import time
from pathlib import Path

import paramiko
import pytest

from tests import sshcluster
from tests.sshcluster import SshCluster, SshClusterError, TestHost, free_ports

pytestmark = pytest.mark.slow


def _paramiko_client(cluster: SshCluster, known_hosts: Path) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return client


def _connect(client: paramiko.SSHClient, cluster: SshCluster, host: TestHost, **kw: float) -> None:
    client.connect(
        host.address,
        port=host.port,
        username=host.user,
        key_filename=str(cluster.key_path),
        look_for_keys=False,
        allow_agent=False,
        timeout=5,
        **kw,
    )


def test_each_host_is_its_own_user_with_its_own_home(ssh_cluster: SshCluster) -> None:
    seen = []
    for host in ssh_cluster.hosts:
        res = ssh_cluster.run_as(host, "id -un; echo $HOME; pwd")
        assert res.returncode == 0, res.stderr
        assert res.stdout.split() == [host.user, str(host.home), str(host.home)]
        seen.append((host.user, host.home, host.address, host.port))
    assert len(ssh_cluster.hosts) == 3
    for column in zip(*seen, strict=True):
        assert len(set(column)) == 3


def test_paramiko_with_known_hosts_and_reject_policy(ssh_cluster: SshCluster) -> None:
    for host in ssh_cluster.hosts:
        with _paramiko_client(ssh_cluster, ssh_cluster.known_hosts) as client:
            _connect(client, ssh_cluster, host)
            _, stdout, _ = client.exec_command("whoami")
            assert stdout.read().decode().strip() == host.user
            assert stdout.channel.recv_exit_status() == 0


def test_unknown_host_key_is_refused(ssh_cluster: SshCluster, tmp_path: Path) -> None:
    host = ssh_cluster.hosts[0]
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    args = [
        f"UserKnownHostsFile={empty}" if a.startswith("UserKnownHostsFile=") else a
        for a in ssh_cluster.ssh_args(host)
    ]
    res = subprocess.run([*args, "true"], capture_output=True, text=True, timeout=10, check=False)
    assert res.returncode == 255
    assert "Host key verification failed" in res.stderr
    assert empty.read_text() == ""
    with (
        _paramiko_client(ssh_cluster, empty) as client,
        pytest.raises(paramiko.SSHException, match="not found in known_hosts"),
    ):
        _connect(client, ssh_cluster, host)


def test_another_hosts_key_is_refused(ssh_cluster: SshCluster, tmp_path: Path) -> None:
    first, second = ssh_cluster.hosts[:2]
    lines = ssh_cluster.known_hosts.read_text().splitlines()
    key_of_second = next(line for line in lines if line.startswith(f"[{second.address}]"))
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[{first.address}]:{first.port} {key_of_second.split(' ', 1)[1]}\n")
    with (
        _paramiko_client(ssh_cluster, wrong) as client,
        pytest.raises(paramiko.BadHostKeyException),
    ):
        _connect(client, ssh_cluster, first)


def test_fabric_put_and_get_over_sftp(ssh_cluster: SshCluster, tmp_path: Path) -> None:
    payload = os.urandom(200_000)
    (tmp_path / "up.bin").write_bytes(payload)
    for host in ssh_cluster.hosts:
        with ssh_cluster.fabric_connection(host) as conn:
            conn.run("mkdir -p tfjobs/sftp", hide=True)
            conn.put(str(tmp_path / "up.bin"), remote="tfjobs/sftp/up.bin")
            owner = conn.run("stat -c %U tfjobs/sftp/up.bin", hide=True).stdout.strip()
            assert owner == host.user
            conn.get("tfjobs/sftp/up.bin", local=str(tmp_path / f"{host.name}.bin"))
        assert (tmp_path / f"{host.name}.bin").read_bytes() == payload
        assert (host.home / "tfjobs" / "sftp" / "up.bin").read_bytes() == payload


def test_the_cluster_python_runs_as_every_user(ssh_cluster: SshCluster) -> None:
    code = "import getpass, sys; print(getpass.getuser(), sys.prefix)"
    for host in ssh_cluster.hosts:
        res = ssh_cluster.run_as(host, f"{shlex.quote(host.python)} -c {shlex.quote(code)}")
        assert res.returncode == 0, res.stderr
        user, prefix = res.stdout.split()
        assert user == host.user
        assert Path(prefix) == Path(ssh_cluster.python).parents[1]


def test_users_cannot_read_roots_home(ssh_cluster: SshCluster) -> None:
    if os.stat("/root").st_mode & stat.S_IROTH:
        pytest.skip("/root is world-readable on this machine")
    res = ssh_cluster.run_as(ssh_cluster.hosts[0], "ls /root")
    assert res.returncode != 0


def test_processes_of_sees_detached_work_and_nothing_after(ssh_cluster: SshCluster) -> None:
    host = ssh_cluster.hosts[1]
    assert ssh_cluster.run_as(host, "sleep 0.2").returncode == 0
    assert ssh_cluster.wait_idle(host) == []
    start = "{ setsid nohup sleep 300 >/dev/null 2>&1 </dev/null & }"
    assert ssh_cluster.run_as(host, start).returncode == 0
    deadline = time.monotonic() + 5
    while not any("sleep 300" in p for p in ssh_cluster.processes_of(host)):
        assert time.monotonic() < deadline, ssh_cluster.processes_of(host)
        time.sleep(0.05)
    ssh_cluster.reset_home(host)
    assert ssh_cluster.processes_of(host) == []
    assert ssh_cluster.run_as(host, "ls -A ~/.ssh").stdout.split() == ["authorized_keys"]


def test_a_stopped_host_refuses_then_comes_back(ssh_cluster: SshCluster) -> None:
    host = ssh_cluster.hosts[2]
    with ssh_cluster.host_down(host):
        res = ssh_cluster.run_as(host, "true", timeout=10)
        assert res.returncode == 255
        assert "refused" in res.stderr
    assert ssh_cluster.run_as(host, "true").returncode == 0


def test_a_paused_host_never_answers(ssh_cluster: SshCluster) -> None:
    host = ssh_cluster.hosts[2]
    ssh_cluster.pause_host(host)
    try:
        with (
            _paramiko_client(ssh_cluster, ssh_cluster.known_hosts) as client,
            pytest.raises(paramiko.SSHException, match="banner"),
        ):
            _connect(client, ssh_cluster, host, banner_timeout=1)
    finally:
        ssh_cluster.resume_host(host)
    assert ssh_cluster.run_as(host, "true").returncode == 0


def test_hosts_file_lines(ssh_cluster: SshCluster, tmp_path: Path) -> None:
    path = ssh_cluster.hosts_file(tmp_path / "hosts.txt", 2, workdir="~/tfjobs")
    lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("#")]
    assert len(lines) == 2
    for line, host in zip(lines, ssh_cluster.hosts, strict=False):
        target, *options = line.split()
        fields = dict(opt.split("=", 1) for opt in options)
        assert target == f"{host.user}@{host.address}"
        assert fields["port"] == str(host.port)
        assert fields["key"] == str(ssh_cluster.key_path)
        assert fields["python"] == ssh_cluster.python
        assert fields["workdir"] == "~/tfjobs"
    ports = [line.split("tf_port=")[1].split()[0] for line in lines]
    assert len(set(ports)) == 2
    line = ssh_cluster.hosts[0].hosts_line(tf_port=23456, python="python3")
    assert line.endswith("tf_port=23456 python=python3")


def test_four_host_view_shares_the_three(ssh_cluster: SshCluster, ssh_cluster4: SshCluster) -> None:
    assert ssh_cluster4.hosts[:3] == ssh_cluster.hosts
    assert ssh_cluster4.known_hosts == ssh_cluster.known_hosts
    fourth = ssh_cluster4.hosts[3]
    assert ssh_cluster4.run_as(fourth, "id -un").stdout.strip() == fourth.user


def test_free_ports_are_distinct() -> None:
    ports = free_ports(8)
    assert len(set(ports)) == 8
    assert all(1024 <= p < 65536 for p in ports)


def test_a_missing_sshd_names_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sshcluster, "SSHD", tmp_path / "sshd")
    with pytest.raises(SshClusterError, match=r"scripts/system-packages\.sh"):
        sshcluster.check_requirements()
