"""What `fab train` prints, with real workers: a short default output in a file, and one
table redrawn in place on a terminal (a pty)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

from runformat.noise import is_keras_progress, is_tf_log
from tests.launcher.helpers import FAST, fab_argv, fab_env, only_run, run_fab
from tests.sshcluster import free_ports

pytestmark = pytest.mark.slow

COLOR = re.compile(r"\x1b\[[0-9;]*(?:3[0-9]|9[0-7])m")  # a foreground colour


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    a, b = free_ports(2)
    (tmp_path / "hosts.txt").write_text(f"localhost tf_port={a}\nlocalhost tf_port={b}\n")
    return tmp_path


def test_thirty_epochs_to_a_file_print_at_most_40_lines(job_dir: Path) -> None:
    short = ["--epochs", "30", "--steps-per-epoch", "1", "--trainer-args", "--no-validation"]
    out = run_fab(job_dir, "train", *FAST, *short, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert len(lines) <= 40, out.stdout
    assert not [ln for ln in lines if is_tf_log(ln) or is_keras_progress(ln)], out.stdout
    run_dir = only_run(job_dir)
    assert f"http://127.0.0.1:8501/?run={run_dir.name}" in out.stdout
    assert f"tensorboard --logdir runs/{run_dir.name}" in out.stdout
    assert "epoch 30/30" in out.stdout  # completed epochs of total, as everywhere
    # launcher.log still has every worker's whole output.
    log = (run_dir / "launcher.log").read_text()
    assert "[1 localhost] Epoch 30/30" in log and "[0 localhost] trainer: worker 0" in log


def read_pty(master: int, proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the other end closed: fab has exited
                break
            if not chunk:
                break
            data += chunk
        elif proc.poll() is not None:
            break
    return data


def test_the_table_is_redrawn_in_place_on_a_terminal(job_dir: Path) -> None:
    """On a 100-column terminal with NO_COLOR: one table, redrawn many times, no colours."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    env = fab_env(NO_COLOR="1", TERM="xterm-256color")
    env.pop("COLUMNS", None)
    proc = subprocess.Popen(
        fab_argv("train", *FAST, "--epochs", "3", "--steps-per-epoch", "8"),
        cwd=job_dir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    try:
        screen = read_pty(master, proc, 240).decode("utf-8", "replace")
        proc.wait(30)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, screen[-3000:]
    frames = screen.count("phase")  # the table's header, once per frame
    assert frames >= 4, screen[-3000:]
    assert screen.count("\x1b[1A") >= frames - 1  # each redraw moves the cursor back up
    assert not COLOR.search(screen), "NO_COLOR is honoured"
    run_dir = only_run(job_dir)
    assert f"?run={run_dir.name}" in screen
    assert "Epoch 1/3" not in screen and "cuInit" not in screen
