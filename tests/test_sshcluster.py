"""The SSH test hosts behave like separate real machines, with strict host key checking."""

from __future__ import annotations

import os
import pwd
import re
import shlex
import stat
import subprocess
import sys
import time
from pathlib import Path

import paramiko
import pytest

from tests import sshcluster
from tests.conftest import in_ci, skip_or_fail
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
        skip_or_fail("/root is world-readable on this machine")
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


def test_hosts_beyond_the_suites_four_live_as_long_as_their_cluster(tmp_path: Path) -> None:
    """A benchmark's extra hosts are whole hosts (own user, address, sshd), and close deletes
    their users and homes, leaving the suite's four users in place."""
    with sshcluster.start_cluster(sshcluster.MAX_HOSTS + 2, tmp_path) as cluster:
        extra = cluster.hosts[sshcluster.MAX_HOSTS :]
        for host in extra:
            res = cluster.run_as(host, "id -un; echo $HOME")
            assert res.returncode == 0, res.stderr
            assert res.stdout.split() == [host.user, str(host.home)]
        addresses = {h.address for h in cluster.hosts}
        assert len(addresses) == len(cluster.hosts)
        kept = cluster.hosts[: sshcluster.MAX_HOSTS]
    for host in extra:
        with pytest.raises(KeyError):
            pwd.getpwnam(host.user)
        assert not host.home.exists()
    for host in kept:
        assert pwd.getpwnam(host.user).pw_dir == str(host.home)


@pytest.mark.parametrize("n", [0, sshcluster.MAX_BENCH_HOSTS + 1])
def test_a_cluster_size_out_of_range_is_refused(n: int, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"between 1 and 64 test hosts, not {n}"):
        sshcluster.start_cluster(n, tmp_path)


def test_free_ports_are_distinct() -> None:
    ports = free_ports(8)
    assert len(set(ports)) == 8
    assert all(1024 <= p < 65536 for p in ports)


def test_a_missing_sshd_names_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sshcluster, "SSHD", tmp_path / "sshd")
    with pytest.raises(SshClusterError, match=r"scripts/system-packages\.sh"):
        sshcluster.check_requirements()


LEAKY_TESTS = """
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import skip_or_fail


def test_leaks_a_sleep(ssh_cluster):
    start = "{ setsid nohup sleep 300 >/dev/null 2>&1 </dev/null & }"
    assert ssh_cluster.run_as(ssh_cluster.hosts[0], start).returncode == 0


def test_leaks_a_lock(ssh_cluster):
    locks = ssh_cluster.hosts[1].home / "wd" / "locks"
    locks.mkdir(parents=True)
    (locks / "tf_port-1234.lock").write_text("run\\n")


def test_leaks_a_local_sleep(tmp_path):
    proc = subprocess.Popen(["sleep", "300"], cwd=tmp_path, start_new_session=True)
    Path(os.environ["LEAK_PID_FILE"]).write_text(str(proc.pid))


def test_leaves_nothing(ssh_cluster, tmp_path):
    assert ssh_cluster.run_as(ssh_cluster.hosts[2], "sleep 0.1").returncode == 0
    subprocess.run(["sleep", "0.1"], cwd=tmp_path, check=True)


def test_passes():
    pass


def test_skips_for_want_of_something():
    skip_or_fail("no such thing here")


def test_skips_plainly():
    pytest.skip("a plain skip")
"""


def _pytest_of(tests: Path, *args: str, ci: str | None) -> subprocess.CompletedProcess[str]:
    """A pytest session of its own over `tests`, with this suite's conftest as a plugin."""
    env = {k: v for k, v in os.environ.items() if k != "CI" and not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    env["TFCLUSTER_TEST_LEAK_WAIT"] = "1"  # the leaks here are meant: no need to wait them out
    if ci is not None:
        env["CI"] = ci
    argv = [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider"]
    return subprocess.run(
        [*argv, "--basetemp", str(tests.parent / f"basetemp{len(args)}"), *args, str(tests)],
        cwd=tests.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
def test_the_harness_fails_a_test_that_leaves_something_behind(tmp_path: Path) -> None:
    """A sleep left on an SSH test host, a lock file there and a local process each fail the
    test that left them, by name, and are gone afterwards; a clean test passes."""
    tests = tmp_path / "probe" / "test_leaky.py"
    tests.parent.mkdir()
    tests.write_text(LEAKY_TESTS)
    pid_file = tmp_path / "local.pid"
    os.environ["LEAK_PID_FILE"] = str(pid_file)
    try:
        res = _pytest_of(tests, "-rA", ci=None)
    finally:
        del os.environ["LEAK_PID_FILE"]
    out = res.stdout
    assert res.returncode == 1, out + res.stderr
    for test, leak in [
        ("test_leaks_a_sleep", r"tfs?\d*host1: \d+ sleep 300"),
        ("test_leaks_a_lock", r"tfs?\d*host2: lock /\S+/wd/locks/tf_port-1234.lock"),
        ("test_leaks_a_local_sleep", r"local: \d+ sleep 300"),
    ]:
        assert f"ERROR test_leaky.py::{test} - Failed" in out
        said = rf"\ntest_leaky.py::{test} left behind on the test hosts:\n +{leak}\n"
        assert re.search(said, out), out
    assert "ERROR test_leaky.py::test_leaves_nothing" not in out
    assert "5 passed, 2 skipped, 3 errors" in out
    assert "skipped tests: 2 (0 under CI)" in out
    assert not Path(f"/proc/{pid_file.read_text()}").exists()


@pytest.mark.parametrize(
    ("value", "ci"), [("true", True), ("1", True), ("YES", True), ("", False), ("false", False)]
)
def test_ci_is_a_true_value(monkeypatch: pytest.MonkeyPatch, value: str, ci: bool) -> None:
    monkeypatch.setenv("CI", value)
    assert in_ci() is ci


@pytest.mark.slow
def test_under_ci_a_skip_fails_the_run_also_with_two_processes(tmp_path: Path) -> None:
    tests = tmp_path / "probe" / "test_leaky.py"
    tests.parent.mkdir()
    tests.write_text(LEAKY_TESTS)
    res = _pytest_of(tests, "-n", "2", "-k", "skips or passes", "-rA", ci="Yes")
    out = res.stdout
    assert res.returncode == 1, out + res.stderr
    assert re.search(r"FAILED .*test_skips_for_want_of_something - .*CI is set", out), out
    assert "PASSED test_leaky.py::test_passes" in out
    assert "skipped tests: 1 (must be 0 under CI)" in out
    assert "skipped under CI: test_leaky.py::test_skips_plainly" in out
