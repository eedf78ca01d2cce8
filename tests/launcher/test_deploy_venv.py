"""`fab deploy --venv` on a host that starts like a fresh machine, then check and train with it;
and a python3 without Debian's python3-venv, which must be named and leave no venv behind.

The host's line has no `python=`, and its user has only Debian's /usr/bin/python3 (no
TensorFlow) on the login PATH: the venv that deploy builds is the only way the trainer can run
there. One deploy is shared by the module because it downloads TensorFlow once; the host's home
is reset before and after, so no other test ever sees that venv (check prefers it when present).
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from launcher.deploy import deploy_code, deploy_venv, tree_archive, tree_hash
from launcher.hosts import parse_hosts
from launcher.remote import HostError, LocalShell
from tests.launcher.helpers import check_model_loads, fab_env, only_run, read_json, run_fab
from tests.sshcluster import SshCluster, TestHost, free_port

# One test process for the whole module: the venv (a TensorFlow download) is built once.
pytestmark = pytest.mark.xdist_group("test_deploy_venv")

TENSORFLOW = "2.21.0"
DEPLOY_TIMEOUT = 600


@dataclass(frozen=True)
class Deployed:
    """The first `fab deploy --venv` on the fresh host and where it ran."""

    host: TestHost
    system_python: str
    cwd: Path
    env: dict[str, str]
    output: str

    @property
    def venv_python(self) -> str:
        return f"{self.host.home}/tfjobs/venv/bin/python"


@pytest.fixture(scope="module")
def deployed(
    ssh_cluster: SshCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployed]:
    """Reset one host's home, write a hosts line without python=, deploy with --venv once."""
    host = ssh_cluster.hosts[0]
    ssh_cluster.reset_home(host)
    try:
        # Like a fresh Debian machine: python3 with venv and ensurepip, but no TensorFlow.
        probe = "import ensurepip, venv, platform, importlib.util as u; "
        probe += "print(platform.python_version(), u.find_spec('tensorflow'))"
        system = ssh_cluster.run_as(host, f'command -v python3 && python3 -c "{probe}"')
        assert system.returncode == 0, system.stderr
        where, facts = system.stdout.splitlines()
        version, tensorflow = facts.split()
        assert (where, tensorflow) == ("/usr/bin/python3", "None"), system.stdout
        cwd = tmp_path_factory.mktemp("deploy-venv")
        line = f"{host.user}@{host.address} port={host.port} key={host.key} tf_port={free_port()}"
        (cwd / "hosts.txt").write_text(line + "\n")
        env = fab_env(TFCLUSTER_KNOWN_HOSTS=str(ssh_cluster.known_hosts))
        out = run_fab(cwd, "deploy", "--venv", env=env, timeout=DEPLOY_TIMEOUT)
        assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
        yield Deployed(host, version, cwd, env, out.stdout + out.stderr)
    finally:
        ssh_cluster.reset_home(host)


@pytest.mark.slow
def test_deploy_builds_the_venv_with_tensorflow(
    deployed: Deployed, ssh_cluster: SshCluster
) -> None:
    assert "venv installed" in deployed.output, deployed.output
    assert len(deployed.output.splitlines()) <= 3, deployed.output  # no pip chatter
    code = "import platform, sys, tensorflow as tf; "
    code += "print(sys.prefix, platform.python_version(), tf.__version__)"
    res = ssh_cluster.run_as(
        deployed.host, f"{deployed.venv_python} -c '{code}' 2>/dev/null", timeout=120
    )
    assert res.returncode == 0, res.stderr[-2000:]
    venv = f"{deployed.host.home}/tfjobs/venv"
    assert res.stdout.split() == [venv, deployed.system_python, TENSORFLOW], res.stdout


@pytest.mark.slow
def test_second_deploy_leaves_the_venv_alone(deployed: Deployed) -> None:
    venv = deployed.host.home / "tfjobs" / "venv"

    def state() -> list[tuple[str, int, int]]:
        """Every entry of the venv's top two levels: name, inode, modification time."""
        paths = [
            venv,
            *venv.iterdir(),
            *(p for d in venv.iterdir() if d.is_dir() for p in d.iterdir()),
        ]
        return sorted((str(p), p.lstat().st_ino, p.lstat().st_mtime_ns) for p in paths)

    before = state()
    out = run_fab(deployed.cwd, "deploy", "--venv", env=deployed.env, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "unchanged (0 bytes), venv unchanged" in out.stdout, out.stdout
    assert state() == before, "nothing in the venv was made again"


@pytest.mark.slow
def test_check_and_train_use_the_venv(deployed: Deployed, ssh_cluster: SshCluster) -> None:
    check = run_fab(deployed.cwd, "check", env=deployed.env, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    row = next(r for r in check.stdout.splitlines() if f"{deployed.host.user}@" in r)
    fields = row.split()
    assert fields[2:5] == ["ok", deployed.system_python, TENSORFLOW], check.stdout
    train = run_fab(
        deployed.cwd,
        "train",
        "--dataset",
        "digits",
        "--epochs",
        "1",
        "--threads",
        "1",
        "--interval",
        "0.5",
        env=deployed.env,
        timeout=300,
    )
    assert train.returncode == 0, train.stdout[-4000:] + train.stderr[-2000:]
    assert f"(ssh {deployed.host.user}@" in train.stdout
    assert deployed.venv_python in train.stdout, train.stdout
    run_dir = only_run(deployed.cwd)
    cluster = read_json(run_dir / "cluster.json")
    assert cluster["state"] == "finished" and cluster["exit_codes"] == {"0": 0}, cluster
    assert cluster["hosts"][0]["python"] == deployed.venv_python
    assert read_json(run_dir / "metrics.json")["test_accuracy"] > 0
    check_model_loads(run_dir / "model.h5")
    assert ssh_cluster.wait_idle(deployed.host, timeout=10) == []


def test_python3_without_venv_package_is_named_and_leaves_no_venv(tmp_path: Path) -> None:
    """Debian's python3 as on a machine without python3-venv: its ensurepip is hidden by a
    bind mount in a mount namespace of its own (root, as the tests run)."""
    stdlib = subprocess.run(
        ["/usr/bin/python3", "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    empty = tmp_path / "empty"
    empty.mkdir()
    hide = f"mount --bind {shlex.quote(str(empty))} {shlex.quote(stdlib + '/ensurepip')}"
    inner = hide + ' && exec /usr/bin/python3 "$@"'
    python = tmp_path / "python3"
    python.write_text(f'#!/bin/sh\nexec unshare -m sh -c {shlex.quote(inner)} sh "$@"\n')
    python.chmod(0o755)
    shell = LocalShell(parse_hosts("localhost\n")[0])
    code = tree_hash()
    _, workdir = deploy_code(shell, str(tmp_path / "wd"), code, tree_archive())
    with pytest.raises(HostError, match=r"ensurepip is missing \(on Debian/Ubuntu: apt install"):
        deploy_venv(shell, workdir, str(python), code)
    assert not (tmp_path / "wd" / "venv").exists()
