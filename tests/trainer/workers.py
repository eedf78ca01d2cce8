"""Start real trainer workers as local processes, the way the launcher does, and read what
they wrote. Shared by the trainer's tests and benchmarks/bench_trainer.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dashboard.events import EventDirectory
from runformat import METRICS_JSON, events_dir, status_path
from tests.sshcluster import free_ports

REPO = Path(__file__).resolve().parents[2]
Scalars = dict[str, list[tuple[int, float]]]
# What every worker writes on a Linux host without GPUs (docs/run-format.md).
SYSTEM_TAGS = {
    "system/cpu_percent",
    "system/memory_mb",
    "system/host_cpu_percent",
    "system/host_memory_percent",
    "system/net_sent_mbps",
    "system/net_recv_mbps",
    "system/cpu_wait_percent",
}


@dataclass(frozen=True)
class Finished:
    """One worker process after it ended."""

    index: int
    returncode: int
    stdout: str
    stderr: str


def tf_configs(n: int) -> list[str | None]:
    """TF_CONFIG for each of n local workers on free ports; a lone worker gets none."""
    if n == 1:
        return [None]
    workers = [f"localhost:{port}" for port in free_ports(n)]
    return [
        json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})
        for i in range(n)
    ]


def worker_env(tf_config: str | None) -> dict[str, str]:
    """The environment of a test worker: CPU only, quiet, this checkout importable."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(CUDA_VISIBLE_DEVICES="-1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    if tf_config is not None:
        env["TF_CONFIG"] = tf_config
    return env


def start_cluster(n: int, argv: Sequence[str]) -> list[subprocess.Popen[str]]:
    """n processes of `python ARGV...`, each in its own process group, started together."""
    return [
        subprocess.Popen(
            [sys.executable, *argv],
            cwd=REPO,
            env=worker_env(tf_config),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for tf_config in tf_configs(n)
    ]


def wait_all(processes: Sequence[subprocess.Popen[str]], timeout: float = 300) -> list[Finished]:
    """Wait for every process; kill all of them if any overruns, so none outlives the test."""
    try:
        outputs = [p.communicate(timeout=timeout) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    return [
        Finished(i, p.returncode, out, err)
        for i, (p, (out, err)) in enumerate(zip(processes, outputs, strict=True))
    ]


def run_cluster(n: int, argv: Sequence[str], timeout: float = 300) -> list[Finished]:
    return wait_all(start_cluster(n, argv), timeout)


def run_trainers(n: int, run_dir: Path, *options: str, timeout: float = 300) -> list[Finished]:
    """n trainer workers sharing one local run directory (like the launcher's local hosts)."""
    argv = ["-m", "trainer", "--run-dir", str(run_dir), "--threads", "1", *options]
    return run_cluster(n, argv, timeout)


def event_files(events_dir: Path) -> list[Path]:
    """A folder's event files, oldest first (their names start with the creation time)."""
    return sorted(events_dir.glob("events.out.tfevents.*"))


def read_scalars(events_dir: Path, files: Sequence[Path] | None = None) -> Scalars:
    """Every scalar in a folder's event files (or only the given ones): tag -> [(step, value)],
    read by the dashboard's reader, which checks every record's CRC."""
    with tempfile.TemporaryDirectory() as alone:
        if files is not None:
            for path in files:
                shutil.copy(path, alone)
        reader = EventDirectory(events_dir if files is None else alone)
        reader.poll()
    assert not reader.problems, list(reader.problems)
    return {
        tag: list(zip(series.steps, series.values, strict=True))
        for tag, series in reader.series.items()
    }


@dataclass(frozen=True)
class TrainerRun:
    """A finished local run: its directory and its workers' exits."""

    run_dir: Path
    workers: list[Finished]

    def status(self, index: int) -> dict[str, object]:
        return json.loads(status_path(self.run_dir, index).read_text())

    def metrics(self) -> dict[str, object]:
        return json.loads((self.run_dir / METRICS_JSON).read_text())

    def scalars(self, index: int) -> Scalars:
        return read_scalars(events_dir(self.run_dir, index))


def train_locally(n: int, run_dir: Path, *options: str, timeout: float = 300) -> TrainerRun:
    return TrainerRun(run_dir, run_trainers(n, run_dir, *options, timeout=timeout))
