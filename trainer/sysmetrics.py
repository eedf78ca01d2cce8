"""This worker's system metrics (CPU, memory, network, GPUs) and the heartbeat of status.json.

A background thread samples every few seconds with psutil (and NVIDIA's NVML when there are
GPUs), so that a sample exists even while a step is stuck waiting for a slow peer, during
validation and while the model is saved. It keeps only the latest sample; the training loop
writes it into this worker's event files at its next progress window (one tf.summary writer,
one thread writing). Outside the training phase, when no progress windows come, the thread
also rewrites status.json with the latest sample, which refreshes `updated`: a healthy worker
that evaluates or saves for a minute is never taken for a stalled one. During training it
leaves `updated` alone, so that a hung step still shows as silence.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil

from runformat import (
    SYSTEM_CPU_PERCENT,
    SYSTEM_CPU_WAIT_PERCENT,
    SYSTEM_GPU_MEMORY_MB,
    SYSTEM_GPU_UTIL_PERCENT,
    SYSTEM_HOST_CPU_PERCENT,
    SYSTEM_HOST_MEMORY_PERCENT,
    SYSTEM_MEMORY_MB,
    SYSTEM_NET_RECV_MBPS,
    SYSTEM_NET_SENT_MBPS,
    SystemSample,
    gpu_tag,
)
from trainer.status import StatusFile

SAMPLE_SECONDS = 5.0
# Outside training status.json is rewritten at most this often, however fast the sampling:
# the launcher mirrors it from SSH hosts, and a file replaced many times a second churns.
HEARTBEAT_SECONDS = 5.0
MB = 1024 * 1024  # memory: MiB, like `top` and `free -m`
NET_MB = 1_000_000  # network: MB/s in powers of ten, like link speeds


@dataclass(frozen=True)
class Sample:
    """One reading of this process, its host and the host's visible GPUs."""

    time: float
    cpu_percent: float
    memory_mb: float
    host_cpu_percent: float
    host_memory_percent: float
    net_sent_mbps: float
    net_recv_mbps: float
    cpu_wait_percent: float | None = None
    gpu_util_percent: list[float] | None = None
    gpu_memory_mb: list[float] | None = None

    def as_status(self) -> dict[str, Any]:
        """The `system` field of status.json (docs/run-format.md)."""
        return SystemSample(
            time=round(self.time, 3),
            cpu_percent=round(self.cpu_percent, 1),
            memory_mb=round(self.memory_mb, 1),
            host_cpu_percent=round(self.host_cpu_percent, 1),
            host_memory_percent=round(self.host_memory_percent, 1),
            net_sent_mbps=round(self.net_sent_mbps, 3),
            net_recv_mbps=round(self.net_recv_mbps, 3),
            cpu_wait_percent=_rounded(self.cpu_wait_percent),
            gpu_util_percent=_tuple(self.gpu_util_percent),
            gpu_memory_mb=_tuple(self.gpu_memory_mb),
        ).to_dict()

    def scalars(self) -> dict[str, float]:
        """Event tags and values; GPU tags (one per visible GPU) only when there are GPUs."""
        out = {
            SYSTEM_CPU_PERCENT: self.cpu_percent,
            SYSTEM_MEMORY_MB: self.memory_mb,
            SYSTEM_HOST_CPU_PERCENT: self.host_cpu_percent,
            SYSTEM_HOST_MEMORY_PERCENT: self.host_memory_percent,
            SYSTEM_NET_SENT_MBPS: self.net_sent_mbps,
            SYSTEM_NET_RECV_MBPS: self.net_recv_mbps,
        }
        if self.cpu_wait_percent is not None:
            out[SYSTEM_CPU_WAIT_PERCENT] = self.cpu_wait_percent
        for base, per_gpu in (
            (SYSTEM_GPU_UTIL_PERCENT, self.gpu_util_percent),
            (SYSTEM_GPU_MEMORY_MB, self.gpu_memory_mb),
        ):
            for i, value in enumerate(per_gpu or []):
                out[gpu_tag(base, i)] = value
        return out


def _tuple(values: list[float] | None) -> tuple[float, ...] | None:
    return tuple(values) if values is not None else None


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def cpu_wait_seconds(pid: int) -> float | None:
    """Seconds the process's threads spent ready to run but waiting for a CPU, so far.

    This is what tells a worker starved of CPU (its host busy with other work) from its peers:
    under synchronous all-reduce every worker steps at the same rate and so uses about the
    same CPU per second, but only the starved one waits to run. psutil does not offer it;
    Linux keeps it per thread in /proc/<pid>/task/<tid>/schedstat (run, wait, slices; ns).
    None where that does not exist (another OS, or a kernel without schedstats).
    """
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    waited, seen = 0, False
    for tid in threads:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as stats:
                waited += int(stats.read().split()[1])
            seen = True
        except (OSError, ValueError, IndexError):
            continue  # the thread ended meanwhile
    return waited / 1e9 if seen else None


class Gpus:
    """The GPUs this process may use (CUDA_VISIBLE_DEVICES), read through NVML.

    Without the NVML bindings, without a driver or with no visible GPU there are none, and
    nothing is reported: a CPU host is not an error.
    """

    def __init__(self) -> None:
        self.handles: list[Any] = []
        try:
            import pynvml
        except ImportError:
            return
        self._nvml = pynvml
        try:
            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            self.handles = [
                pynvml.nvmlDeviceGetHandleByIndex(i)
                for i in visible_gpus(os.environ.get("CUDA_VISIBLE_DEVICES"), count)
            ]
        except pynvml.NVMLError:
            self.handles = []

    def read(self) -> tuple[list[float], list[float]] | None:
        """Utilisation (%) and memory used (MiB) per visible GPU, or None without GPUs."""
        if not self.handles:
            return None
        try:
            util = [float(self._nvml.nvmlDeviceGetUtilizationRates(h).gpu) for h in self.handles]
            memory = [self._nvml.nvmlDeviceGetMemoryInfo(h).used / MB for h in self.handles]
        except self._nvml.NVMLError:
            return None
        return util, memory


def visible_gpus(setting: str | None, count: int) -> list[int]:
    """NVML indices of the GPUs CUDA lets this process see: all when unset; CUDA's rule of
    stopping at the first entry that is not a valid index (so `-1` or `""` hides them all)."""
    if setting is None:
        return list(range(count))
    visible: list[int] = []
    for entry in setting.split(","):
        entry = entry.strip()
        if not entry.isdigit() or int(entry) >= count:
            break
        visible.append(int(entry))
    return visible


class SystemSampler:
    """Reads psutil's counters; CPU and network are averages since the previous sample.

    It measures one process (`pid`, this one by default) or, with `tree`, that process and
    all its descendants (the wrapper of a user's program measures the program that way:
    whatever it forks, data loaders included, counts).
    """

    def __init__(
        self, clock: Callable[[], float] = time.time, pid: int | None = None, tree: bool = False
    ) -> None:
        self.clock = clock
        self.process = psutil.Process(pid)
        self.tree = tree
        psutil.cpu_percent(None)  # the first call only starts the interval
        self.cpu_seconds: dict[int, float] = {}
        self.cpu_time = clock()
        self._cpu_since_last()
        self.net = psutil.net_io_counters()
        self.net_time = clock()
        self.waited = self._waited()
        self.gpus = Gpus()

    def _processes(self) -> list[psutil.Process]:
        if not self.tree:
            return [self.process]
        try:
            return [self.process, *self.process.children(recursive=True)]
        except psutil.Error:
            return [self.process]

    def _cpu_since_last(self) -> float:
        """CPU seconds the measured processes used since the last call: a process new since
        then counts whole, one that ended meanwhile takes its last seconds with it."""
        used, seen = 0.0, {}
        for process in self._processes():
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            total = times.user + times.system
            seen[process.pid] = total
            used += max(total - self.cpu_seconds.get(process.pid, 0.0), 0.0)
        self.cpu_seconds = seen
        return used

    def _memory_mb(self) -> float:
        rss = 0
        for process in self._processes():
            try:
                rss += process.memory_info().rss
            except psutil.Error:
                continue
        return rss / MB

    def _waited(self) -> float | None:
        waits = [cpu_wait_seconds(p.pid) for p in self._processes()]
        known = [w for w in waits if w is not None]
        return sum(known) if known else None

    def sample(self) -> Sample:
        now = self.clock()
        net = psutil.net_io_counters()
        seconds = max(now - self.net_time, 1e-6)
        sent = (net.bytes_sent - self.net.bytes_sent) / seconds / NET_MB
        recv = (net.bytes_recv - self.net.bytes_recv) / seconds / NET_MB
        self.net, self.net_time = net, now
        cpu_seconds = max(now - self.cpu_time, 1e-6)
        cpu_percent = 100 * self._cpu_since_last() / cpu_seconds
        self.cpu_time = now
        waited = self._waited()
        wait_percent = None
        if waited is not None and self.waited is not None:
            wait_percent = max(100 * (waited - self.waited) / seconds, 0.0)
        self.waited = waited
        gpus = self.gpus.read()
        memory_mb = self._memory_mb()
        if self.tree and not _alive(self.process):
            # The program ended while it was measured: its figures would read as zeros.
            raise psutil.NoSuchProcess(self.process.pid)
        return Sample(
            time=now,
            cpu_percent=cpu_percent,
            memory_mb=memory_mb,
            host_cpu_percent=psutil.cpu_percent(None),
            host_memory_percent=psutil.virtual_memory().percent,
            net_sent_mbps=max(sent, 0.0),
            net_recv_mbps=max(recv, 0.0),
            cpu_wait_percent=wait_percent,
            gpu_util_percent=gpus[0] if gpus else None,
            gpu_memory_mb=gpus[1] if gpus else None,
        )


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class SystemMonitor:
    """Samples every `interval` seconds in a daemon thread (the first after `first`, so that
    a short program still gets a sample), hands each sample to `on_sample` (the wrapper writes
    its event file there) and beats status.json (StatusFile.beat)."""

    def __init__(
        self,
        status: StatusFile,
        interval: float = SAMPLE_SECONDS,
        sampler: SystemSampler | None = None,
        heartbeat: float = HEARTBEAT_SECONDS,
        on_sample: Callable[[Sample], None] | None = None,
        first: float | None = None,
    ) -> None:
        self.status = status
        self.interval = interval
        self.first = interval if first is None else first
        self.heartbeat = heartbeat
        self.sampler = sampler or SystemSampler()
        self.on_sample = on_sample
        self.latest: Sample | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="system-monitor", daemon=True)

    def start(self) -> SystemMonitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)

    def __enter__(self) -> SystemMonitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        beat = time.monotonic()
        wait = self.first
        while not self._stop.wait(wait):
            wait = self.interval
            try:
                self.latest = self.sampler.sample()
                if self.on_sample is not None:
                    self.on_sample(self.latest)
                now = time.monotonic()
                if now - beat >= self.heartbeat:
                    # Best effort: a full disk skips the beat (trainer.guard), never raises.
                    self.status.beat(system=self.latest.as_status())
                    beat = now
            except psutil.NoSuchProcess:
                return  # the measured program has ended
            except Exception as e:  # a monitor must never take the training down
                with contextlib.suppress(OSError, ValueError):
                    print(f"trainer: system metrics stopped: {type(e).__name__}: {e}", flush=True)
                return
