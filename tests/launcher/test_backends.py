"""A backend is one module plus one registration: a backend made only for this test
(tests/launcher/popen_backend.py), registered the way a user's package would register one
(an entry point in the `tfcluster.backends` group), goes through `fab train`, `status`,
`fetch` and `stop` with no change to the launcher.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from launcher import registry
from launcher.hosts import parse_hosts
from tests.launcher.helpers import (
    REPO,
    UNTIL_STOPPED,
    fab_env,
    left_behind,
    read_json,
    run_fab,
    training_job,
    wait_for,
)
from tests.sshcluster import free_ports


def plugin_env(tmp_path: Path) -> dict[str, str]:
    """An environment in which an installed package declares the test backend."""
    info = tmp_path / "site" / "tfcluster_test_backends-0.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tfcluster-test-backends\n")
    (info / "entry_points.txt").write_text(
        "[tfcluster.backends]\npopen = tests.launcher.popen_backend\n"
    )
    path = os.pathsep.join([str(tmp_path / "site"), str(REPO), os.environ.get("PYTHONPATH", "")])
    return fab_env(PYTHONPATH=path)


def test_an_unknown_scheduler_names_the_line_and_the_registered_ones() -> None:
    with pytest.raises(
        ValueError, match=r"hosts.txt:1: 'scheduler=k8s' unknown scheduler; allowed: slurm, ssh"
    ):
        parse_hosts("localhost scheduler=k8s\n")
    assert registry.names() == ["slurm", "ssh"]


@pytest.mark.slow
def test_a_backend_registered_by_entry_point_runs_every_command(tmp_path: Path) -> None:
    env = plugin_env(tmp_path)
    a, b = free_ports(2)
    wd = tmp_path / "wd"
    (tmp_path / "hosts.txt").write_text(
        f"localhost tf_port={a} workdir={wd} scheduler=popen\n"
        f"localhost tf_port={b} workdir={wd} scheduler=popen\n"
    )
    with training_job(tmp_path, *UNTIL_STOPPED, env=env) as (proc, run_dir):
        cluster = read_json(run_dir / "cluster.json")
        assert cluster["scheduler"] == "popen"
        assert cluster["tf_config_cluster"] == {"worker": [f"localhost:{a}", f"localhost:{b}"]}
        for i in range(2):
            # Started by this backend's runner: the launcher is each worker's parent.
            pgid = (run_dir / "workers" / str(i) / "pgid").read_text().strip()
            stat = Path(f"/proc/{pgid}/stat").read_text().rsplit(")", 1)[1].split()
            assert int(stat[1]) == proc.pid, (i, stat)
        shown = run_fab(tmp_path, "status", env=env)
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert f"run {run_dir.name}: running" in shown.stdout
        assert shown.stdout.count("alive") == 2, shown.stdout
        fetched = run_fab(tmp_path, "fetch", env=env)
        assert fetched.returncode == 0, fetched.stdout + fetched.stderr
        assert f"fetched 0 bytes from 0 host(s) into runs/{run_dir.name}" in fetched.stdout
        stop = run_fab(tmp_path, "stop", env=env)
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert stop.stdout.count("stopped (was alive)") == 2, stop.stdout
        assert proc.wait(60) == 1
    output = proc.stdout.read() if proc.stdout else ""
    assert "stopped by `fab stop`" in output, output
    assert read_json(run_dir / "cluster.json")["state"] == "stopped"
    assert not list(wd.glob("locks/*")), "the tf_port locks are released"
    wait_for(lambda: not left_behind(run_dir, 2), 30, "every worker process to end")
    # The run is looked at through its own backend, whatever the hosts file says now.
    (tmp_path / "hosts.txt").write_text("localhost\n")
    shown = run_fab(tmp_path, "status", env=env)
    assert shown.returncode == 0 and "stopped" in shown.stdout, shown.stdout + shown.stderr
