"""Running the real `fab` command in a folder of its own, and looking at what it left."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
FAB = str(Path(sys.executable).parent / "fab")
FAST = ["--dataset", "digits", "--threads", "1", "--log-every", "2", "--interval", "0.5"]
# A job that runs until the test ends it (killed worker, Ctrl-C, fab stop, ...).
UNTIL_STOPPED = [*FAST, "--epochs", "200", "--grace", "3"]


def fab_argv(*args: str) -> list[str]:
    return [FAB, "-r", str(REPO), *args]


def fab_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TFCLUSTER_HOSTS", None)
    env.update(extra)
    return env


def run_fab(
    cwd: Path, *args: str, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        fab_argv(*args),
        cwd=cwd,
        env=env or fab_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def start_fab(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        fab_argv(*args),
        cwd=cwd,
        env=env or fab_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def only_run(cwd: Path) -> Path:
    runs = sorted((cwd / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def run_dir_appeared(cwd: Path) -> Path | None:
    runs = cwd / "runs"
    found = sorted(runs.glob("*/cluster.json")) if runs.is_dir() else []
    return found[0].parent if found else None


def training(run_dir: Path, n: int) -> bool:
    """Every worker reports running with at least one step done."""
    for i in range(n):
        st = read_json(run_dir / "workers" / str(i) / "status.json")
        if not st or st.get("state") != "running" or not st.get("step"):
            return False
    return True


def group_alive(pgid: int) -> bool:
    """True while the process group has a process that is not a zombie."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def processes_matching(text: str) -> list[str]:
    """Live processes whose command line contains text (not this test's own)."""
    out = subprocess.run(["pgrep", "-af", text], capture_output=True, text=True, check=False)
    mine = {os.getpid()}
    lines = []
    for line in out.stdout.splitlines():
        pid = int(line.split()[0])
        stat = Path(f"/proc/{pid}/stat")
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if pid not in mine and state != "Z" and "pgrep" not in line:
            lines.append(line)
    return lines


def left_behind(run_dir: Path, n: int) -> list[str]:
    """Processes of the run still alive: by its id in command lines and by its process groups."""
    left = processes_matching(run_dir.name)
    for i in range(n):
        pg = run_dir / "workers" / str(i) / "pgid"
        if pg.exists() and group_alive(int(pg.read_text().strip())):
            left.append(f"process group of worker {i}")
    return left


@contextmanager
def training_job(
    cwd: Path, *args: str, env: dict[str, str] | None = None, workers: int = 2, wait: float = 120
) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """`fab train ARGS` running in cwd, once every worker has taken a step; stopped on exit."""
    proc = start_fab(cwd, "train", *args, env=env)
    try:
        run_dir = wait_for(lambda: run_dir_appeared(cwd), 60, "the run directory")
        wait_for(lambda: training(run_dir, workers), wait, "every worker training")
        yield proc, run_dir
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def check_model_loads(model: Path) -> None:
    """Load model.h5 with tf-keras's load_model, as a user would. It runs in this test process:
    TensorFlow is then imported once per process, not once per check (~7 s of CPU each)."""
    import tf_keras

    loaded = tf_keras.models.load_model(model)
    assert loaded.count_params() > 0, model


def check_complete_run(run_dir: Path, hosts_lines: Sequence[str], addrs: Sequence[str]) -> None:
    """model.h5 loads, every worker has events and status.json, TF_CONFIG matches the hosts."""
    cluster = read_json(run_dir / "cluster.json")
    assert cluster["state"] == "finished", cluster
    assert cluster["tf_config_cluster"] == {"worker": list(addrs)}
    assert cluster["exit_codes"] == {str(i): 0 for i in range(len(addrs))}
    assert cluster["failure"] is None
    for i in range(len(addrs)):
        wdir = run_dir / "workers" / str(i)
        st = read_json(wdir / "status.json")
        assert st and st["state"] == "finished", (i, st)
        assert list((wdir / "events").glob("events.out.tfevents.*")), i
        assert (wdir / "worker.log").stat().st_size > 0
    assert (run_dir / "launcher.log").stat().st_size > 0
    assert read_json(run_dir / "metrics.json")["test_accuracy"] > 0
    check_model_loads(run_dir / "model.h5")


@contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A real file system of `size` (tmpfs) mounted at path, so a full disk is a real ENOSPC."""
    if os.geteuid() != 0:
        from tests.conftest import skip_or_fail

        skip_or_fail("the full-disk tests need root to mount a tmpfs")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill_disk(path: Path) -> Path:
    """Fill the file system holding path up to its last byte with one file; returns it."""
    filler = path / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while f.write(b"\0" * 4096):
                pass
        except OSError:
            pass
    return filler


def this_machines_address() -> str:
    """The address this machine's outgoing traffic leaves from (UDP connect: no packet sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # a documentation address (RFC 5737)
        return str(probe.getsockname()[0])
