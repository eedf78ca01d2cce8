"""Preflight refusals against real SSH test hosts: `fab check` and `fab train` refuse before
anything starts, name the host and say what to do (issue 5, scenario 6).

Every case checks the same aftermath: exit code 1, one message without a traceback, no run
directory here, and on every host no process, no run directory and no lock left.
"""

from __future__ import annotations

import shlex
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.launcher.helpers import fab_env, run_fab
from tests.sshcluster import SshCluster, TestHost

# One test process for the whole module, so that its module fixtures are built once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("test_preflight")]

WORKDIR = "~/preflight"
TRAIN = ["train", "--dataset", "digits", "--epochs", "1", "--start-timeout", "30"]

FAKE_TF = """#!/bin/sh
# The real interpreter, but an older TensorFlow's metadata comes first on its path.
PYTHONPATH="$HOME/oldtf${{PYTHONPATH:+:$PYTHONPATH}}" exec {python} "$@"
"""


@pytest.fixture(scope="module")
def deployed(ssh_cluster: SshCluster, tmp_path_factory: pytest.TempPathFactory) -> SshCluster:
    """The code deployed once to WORKDIR on every host, so that only the fault is reported."""
    where = tmp_path_factory.mktemp("preflight-deploy")
    ssh_cluster.hosts_file(where / "hosts.txt", 3, workdir=WORKDIR)
    env = fab_env(TFCLUSTER_KNOWN_HOSTS=str(ssh_cluster.known_hosts))
    out = run_fab(where, "deploy", env=env, timeout=180)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return ssh_cluster


@pytest.fixture
def job(deployed: SshCluster, tmp_path: Path) -> Path:
    """A folder with a hosts file of the first two hosts, deployed, on fresh tf_ports."""
    deployed.hosts_file(tmp_path / "hosts.txt", 2, workdir=WORKDIR)
    return tmp_path


def set_line(job: Path, index: int, change: Callable[[str], str]) -> None:
    path = job / "hosts.txt"
    lines = path.read_text().splitlines()
    workers = [i for i, line in enumerate(lines) if line and not line.startswith("#")]
    lines[workers[index]] = change(lines[workers[index]])
    path.write_text("\n".join(lines) + "\n")


def label(host: TestHost) -> str:
    return f"({host.user}@{host.address})"


def refused(
    cluster: SshCluster,
    job: Path,
    args: list[str],
    env: dict[str, str] | None = None,
    hosts: int = 2,
) -> tuple[str, float]:
    """Run fab, expect a clean refusal and nothing started; returns (stderr, seconds)."""
    env = env or fab_env(TFCLUSTER_KNOWN_HOSTS=str(cluster.known_hosts))
    t0 = time.monotonic()
    out = run_fab(job, *args, env=env, timeout=120)
    took = time.monotonic() - t0
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    assert out.stderr.startswith("error: "), out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    assert not (job / "runs").exists(), "no run was made here"
    for host in cluster.hosts[:hosts]:
        assert cluster.wait_idle(host, timeout=10) == [], host.name
        left = cluster.run_as(
            host, f"find {WORKDIR}/runs {WORKDIR}/locks -mindepth 1 2>/dev/null; true"
        ).stdout
        assert left.strip() == "", (host.name, left)
    return out.stderr, took


def test_host_with_sshd_stopped(
    deployed: SshCluster, job: Path, record_figures: Callable[..., None]
) -> None:
    bad = deployed.hosts[1]
    with deployed.host_down(bad):
        check, _ = refused(deployed, job, ["check"])
        train, train_sec = refused(deployed, job, TRAIN)
    for text in (check, train):
        assert f"worker 1 {label(bad)}" in text and "worker 0" not in text, text
        assert "connection refused (is sshd running there" in text, text
    record_figures(6, case="sshd stopped", refused_sec=round(train_sec, 1), processes_left=0)


def test_wrong_ssh_port(
    deployed: SshCluster, job: Path, record_figures: Callable[..., None]
) -> None:
    bad = deployed.hosts[1]
    set_line(job, 1, lambda line: line.replace(f"port={bad.port}", "port=1"))
    train, took = refused(deployed, job, TRAIN)
    assert f"worker 1 ({bad.user}@{bad.address})" in train and "worker 0" not in train
    assert f"cannot connect to {bad.address}:1" in train and "port=" in train
    record_figures(6, case="wrong SSH port", refused_sec=round(took, 1), processes_left=0)


def test_unknown_host_key_refuses_train(
    deployed: SshCluster, job: Path, record_figures: Callable[..., None]
) -> None:
    known = job / "known_hosts"
    lines = deployed.known_hosts.read_text().splitlines()
    bad = deployed.hosts[1]
    known.write_text("".join(f"{line}\n" for line in lines if f"[{bad.address}]" not in line))
    train, took = refused(deployed, job, TRAIN, env=fab_env(TFCLUSTER_KNOWN_HOSTS=str(known)))
    assert f"worker 1 {label(bad)}" in train and "worker 0" not in train
    assert "unknown host key" in train and "--accept-new-host-keys" in train
    assert "ssh-keyscan" in train
    record_figures(6, case="unknown host key", refused_sec=round(took, 1), processes_left=0)


@pytest.fixture
def changed_key(deployed: SshCluster, job: Path) -> Iterator[Path]:
    """known_hosts where host 1's entry holds another (valid) ed25519 key."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(job / "other")], check=True
    )
    other = (job / "other.pub").read_text().split()
    bad = deployed.hosts[1]
    lines = []
    for line in deployed.known_hosts.read_text().splitlines():
        if line.startswith(f"[{bad.address}]:{bad.port} "):
            line = f"[{bad.address}]:{bad.port} {other[0]} {other[1]}"
        lines.append(line + "\n")
    known = job / "known_hosts"
    known.write_text("".join(lines))
    yield known


def test_changed_host_key_is_refused_even_when_new_keys_are_accepted(
    deployed: SshCluster, job: Path, changed_key: Path, record_figures: Callable[..., None]
) -> None:
    env = fab_env(TFCLUSTER_KNOWN_HOSTS=str(changed_key))
    before = changed_key.read_text()
    bad = deployed.hosts[1]
    check, _ = refused(deployed, job, ["check"], env=env)
    train, took = refused(deployed, job, [*TRAIN, "--accept-new-host-keys"], env=env)
    for text in (check, train):
        assert f"worker 1 {label(bad)}" in text and "worker 0" not in text, text
        assert "CHANGED" in text
        assert f"ssh-keygen -f {changed_key} -R '[{bad.address}]:{bad.port}'" in text, text
    assert changed_key.read_text() == before, "the recorded key is never replaced"
    record_figures(6, case="changed host key", refused_sec=round(took, 1), processes_left=0)


def test_tf_port_in_use(
    deployed: SshCluster, job: Path, record_figures: Callable[..., None]
) -> None:
    text = (job / "hosts.txt").read_text()
    port = int(text.split("tf_port=")[2].split()[0])  # worker 1's
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("0.0.0.0", port))
        holder.listen()
        check, _ = refused(deployed, job, ["check"])
        train, took = refused(deployed, job, TRAIN)
    bad = deployed.hosts[1]
    assert f"worker 1 {label(bad)}: tf_port {port} is in use" in check
    assert f"worker 1 {label(bad)}: tf_port {port} is in use" in train
    assert "stop what holds it or choose another tf_port" in train
    assert "worker 0" not in train
    record_figures(6, case="tf_port in use", refused_sec=round(took, 1), processes_left=0)


def test_tensorflow_versions_differ(
    deployed: SshCluster, tmp_path: Path, record_figures: Callable[..., None]
) -> None:
    """Three hosts, the third with an older TensorFlow: only that one is named."""
    bad = deployed.hosts[2]
    meta = "Metadata-Version: 2.1\nName: tensorflow\nVersion: 2.15.0\n"
    wrapper = FAKE_TF.format(python=shlex.quote(bad.python))
    dist = "oldtf/tensorflow-2.15.0.dist-info"
    deployed.run_as(
        bad,
        f"mkdir -p {dist} && printf %s {shlex.quote(meta)} > {dist}/METADATA && "
        f"printf %s {shlex.quote(wrapper)} > oldtf-python && chmod +x oldtf-python",
    )
    deployed.hosts_file(tmp_path / "hosts.txt", 3, workdir=WORKDIR)
    python = f"python={bad.python}"
    set_line(tmp_path, 2, lambda line: line.replace(python, f"python={bad.home}/oldtf-python"))
    check, _ = refused(deployed, tmp_path, ["check"], hosts=3)
    train, took = refused(deployed, tmp_path, TRAIN, hosts=3)
    for text in (check, train):
        assert (
            f"worker 2 {label(bad)}: TensorFlow 2.15.0 differs from the other hosts' 2.21.0; "
            "install 2.21.0 here" in text
        ), text
        assert "worker 0" not in text and "worker 1" not in text
    record_figures(
        6, case="TensorFlow versions differ", refused_sec=round(took, 1), processes_left=0
    )
