"""System metrics: psutil readings, GPU visibility, and the status heartbeat outside training."""

import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from trainer.status import StatusFile, initial_status
from trainer.sysmetrics import Gpus, Sample, SystemMonitor, SystemSampler, visible_gpus

CPU_TAGS = {
    "system/cpu_percent",
    "system/memory_mb",
    "system/host_cpu_percent",
    "system/host_memory_percent",
    "system/net_sent_mbps",
    "system/net_recv_mbps",
}


@pytest.mark.parametrize(
    ("setting", "count", "visible"),
    [
        (None, 2, [0, 1]),
        ("1", 2, [1]),
        ("1,0", 4, [1, 0]),
        ("-1", 2, []),
        ("", 2, []),
        ("0,7,1", 2, [0]),  # CUDA stops at the first entry that is not a GPU
        ("GPU-uuid", 2, []),
        (None, 0, []),
    ],
)
def test_visible_gpus_follow_cuda_visible_devices(
    setting: str | None, count: int, visible: list[int]
) -> None:
    assert visible_gpus(setting, count) == visible


def sample(gpus: int) -> Sample:
    return Sample(
        time=1.0,
        cpu_percent=150.0,
        memory_mb=800.0,
        host_cpu_percent=60.0,
        host_memory_percent=40.0,
        net_sent_mbps=1.5,
        net_recv_mbps=2.5,
        gpu_util_percent=[90.0 + i for i in range(gpus)] if gpus else None,
        gpu_memory_mb=[1000.0 * (i + 1) for i in range(gpus)] if gpus else None,
    )


def test_gpu_tags_only_with_gpus_one_series_each() -> None:
    assert set(sample(0).scalars()) == CPU_TAGS  # and no CPU wait where the OS has none
    with_gpus = sample(2).scalars()
    assert set(with_gpus) - CPU_TAGS == {
        "system/gpu_util_percent/0",
        "system/gpu_util_percent/1",
        "system/gpu_memory_mb/0",
        "system/gpu_memory_mb/1",
    }
    assert with_gpus["system/gpu_memory_mb/1"] == 2000.0


def test_status_field_has_the_documented_keys() -> None:
    assert set(sample(0).as_status()) >= {
        "cpu_percent",
        "memory_mb",
        "host_cpu_percent",
        "host_memory_percent",
        "gpu_util_percent",
        "gpu_memory_mb",
    }
    assert sample(0).as_status()["gpu_util_percent"] is None


def test_a_real_sample_measures_this_process() -> None:
    sampler = SystemSampler()
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:  # burn CPU so the process has something to show
        pass
    reading = sampler.sample()
    assert reading.cpu_percent > 10
    assert 10 < reading.memory_mb < 100_000
    assert 0 <= reading.host_cpu_percent <= 100 and 0 < reading.host_memory_percent < 100
    assert reading.net_sent_mbps >= 0 and reading.net_recv_mbps >= 0
    assert reading.cpu_wait_percent is not None and reading.cpu_wait_percent >= 0  # Linux
    # No GPU here (and CUDA_VISIBLE_DEVICES=-1 in every worker): nothing, and no error.
    assert reading.gpu_util_percent is None and Gpus().read() is None


def _until(predicate: Callable[[], object], what: str, timeout: float = 60) -> None:
    """Wait for a condition, not for a time: a loaded machine only makes it come later."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _updated(path: Path) -> float:
    return float(json.loads(path.read_text())["updated"])


def test_heartbeat_refreshes_status_outside_training_only(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    status = StatusFile(path, initial_status(0, "chief", "h", 1, 1, time.time()))
    with SystemMonitor(status, interval=0.1, heartbeat=0.2) as monitor:
        status.enter("evaluating")
        first = _updated(path)
        _until(lambda: _updated(path) > first, "a heartbeat while evaluating")
        during_evaluation = json.loads(path.read_text())
        status.enter("training")
        t_enter = time.time()
        # Once a sample taken after the phase change is out, a heartbeat that was past its
        # phase check has landed too.
        _until(lambda: monitor.latest is not None and monitor.latest.time > t_enter, "a sample")
        entered = _updated(path)
        # Samples go on for several heartbeat periods: none of them may refresh status.json.
        _until(
            lambda: monitor.latest is not None and monitor.latest.time > entered + 1.0, "5 beats"
        )
        during_training = json.loads(path.read_text())
    assert during_evaluation["system"]["memory_mb"] > 0
    assert during_training["updated"] == entered  # silence in training stays silence
    assert during_training["phase"] == "training" and during_training["phase_since"] <= entered


class CountingSampler(SystemSampler):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def sample(self) -> Sample:
        self.count += 1
        return super().sample()


def test_fast_sampling_does_not_churn_status_json(tmp_path: Path) -> None:
    """Samples every 0.02 s; status.json is written once per 0.5 s heartbeat at most."""
    path = tmp_path / "status.json"
    status = StatusFile(path, initial_status(0, "chief", "h", 1, 1, time.time()))
    status.enter("saving")
    seen = {_updated(path)}
    sampler = CountingSampler()
    with SystemMonitor(status, interval=0.02, sampler=sampler, heartbeat=0.5):

        def three_beats() -> bool:
            seen.add(_updated(path))
            return len(seen) >= 4

        _until(three_beats, "three heartbeats")
    times = sorted(seen)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.45, gaps  # a load can only make them longer
    assert sampler.count > 3 * len(gaps), "sampled far more often than written"
