"""Why is it slow? Each worker's system metrics as charts, warnings, and the worker that holds
the others back. Pure functions of the event series (no Streamlit), tested from tables.

Under synchronous all-reduce every worker steps at the same rate, so throughput cannot name
a straggler. Busy time can: the worker that waits for a CPU while its peers do not, whose
host alone is saturated, whose GPU alone is busy, or whose process alone needs much more CPU
is the one the others wait for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from dashboard import charts
from dashboard.events import Arrays
from dashboard.lines import Source
from dashboard.runs import Run
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
    gpu_of,
    gpu_tag,
)

WorkerSeries = Mapping[str, Arrays]

CHARTS = (
    (SYSTEM_CPU_PERCENT, "Process CPU (% of one core)"),
    (SYSTEM_CPU_WAIT_PERCENT, "Waiting for a CPU (% of one core)"),
    (SYSTEM_MEMORY_MB, "Process memory (MiB)"),
    (SYSTEM_HOST_CPU_PERCENT, "Host CPU (%)"),
    (SYSTEM_HOST_MEMORY_PERCENT, "Host memory (%)"),
    (SYSTEM_NET_SENT_MBPS, "Host network sent (MB/s)"),
    (SYSTEM_NET_RECV_MBPS, "Host network received (MB/s)"),
)
GPU_CHARTS = (
    (SYSTEM_GPU_UTIL_PERCENT, "GPU {gpu} utilisation (%)"),
    (SYSTEM_GPU_MEMORY_MB, "GPU {gpu} memory (MiB)"),
)

WINDOW_SECONDS = 30.0  # what "lately" means for every rule below
HOST_CPU_SATURATED = 95.0
HOST_MEMORY_FULL = 90.0
GPU_IDLE = 5.0
# Straggler rules: how far one worker must stand out from the busiest of its peers.
CPU_WAIT_MIN, CPU_WAIT_FACTOR = 50.0, 2.0
HOST_PEERS_BELOW = 80.0
GPU_BUSY_MIN, GPU_PEER_FRACTION = 80.0, 0.6
CPU_BUSY_MIN, CPU_BUSY_FACTOR = 50.0, 1.5


def system_figures(source: Source, start: float | None) -> list[tuple[str, go.Figure]]:
    """(tag, figure) for every system chart with data: one line per worker, by time."""
    wanted = [*CHARTS]
    for gpu in gpu_indices(source.workers):
        wanted += [(f"{tag}/{gpu}", title.format(gpu=gpu)) for tag, title in GPU_CHARTS]
    figures = []
    for tag, title in wanted:
        figure = charts.line_figure(source, tag, title, start, "relative", 0.0)
        if figure is not None:
            figures.append((tag, figure))
    return figures


def gpu_indices(workers: Mapping[int, WorkerSeries]) -> list[int]:
    """The GPU numbers any worker reported (none on CPU hosts)."""
    found = {
        gpu for s in workers.values() for tag in s if (gpu := _utilisation_gpu(tag)) is not None
    }
    return sorted(found)


def _utilisation_gpu(tag: str) -> int | None:
    parsed = gpu_of(tag)
    return parsed[1] if parsed is not None and parsed[0] == SYSTEM_GPU_UTIL_PERCENT else None


def recent(arrays: Arrays | None, end: float, seconds: float = WINDOW_SECONDS) -> np.ndarray:
    """Values whose wall time falls in the `seconds` before `end`."""
    if arrays is None:
        return np.empty(0)
    _, walls, values = arrays
    return np.asarray(values[(walls > end - seconds) & (walls <= end)], dtype=float)


def latest_wall(workers: Mapping[int, WorkerSeries]) -> float | None:
    walls = [float(a[1][-1]) for s in workers.values() for a in s.values() if len(a[1])]
    return max(walls) if walls else None


def saturated_for(arrays: Arrays | None, threshold: float, seconds: float) -> float | None:
    """How long the latest run of samples at or above `threshold` lasts, if >= `seconds`."""
    if arrays is None or not len(arrays[2]):
        return None
    _, walls, values = arrays
    below = np.flatnonzero(np.asarray(values) < threshold)
    first = int(below[-1]) + 1 if below.size else 0  # the latest run of high samples
    if first >= len(values):
        return None
    # A sample averages the interval before it: the run began at the sample before it.
    begin = float(walls[first - 1]) if first > 0 else float(walls[first])
    lasted = float(walls[-1]) - begin
    return lasted if lasted >= seconds else None


def system_warnings(
    workers: Mapping[int, WorkerSeries],
    hosts: Mapping[int, str],
    phases: Mapping[int, str | None],
) -> list[str]:
    """One line per problem, naming the worker and its host."""
    lines = []
    for index, series in sorted(workers.items()):
        who = f"worker {index} ({hosts.get(index) or 'unknown host'})"
        busy = saturated_for(
            series.get(SYSTEM_HOST_CPU_PERCENT), HOST_CPU_SATURATED, WINDOW_SECONDS
        )
        if busy is not None:
            lines.append(
                f"{who}: host CPU at {HOST_CPU_SATURATED:.0f}% or more for {busy:.0f} s; "
                "the worker competes with other work there (or has too many threads)"
            )
        memory = series.get(SYSTEM_HOST_MEMORY_PERCENT)
        if memory is not None and len(memory[2]) and memory[2][-1] >= HOST_MEMORY_FULL:
            lines.append(
                f"{who}: host memory {memory[2][-1]:.0f}% full; the worker may be killed or "
                "swap (smaller --batch-size, or free memory on that host)"
            )
        if phases.get(index) == "training":
            for gpu in gpu_indices({index: series}):
                util = series.get(gpu_tag(SYSTEM_GPU_UTIL_PERCENT, gpu))
                end = float(util[1][-1]) if util is not None and len(util[1]) else 0.0
                values = recent(util, end)
                if values.size >= 2 and float(values.max()) < GPU_IDLE:
                    lines.append(
                        f"{who}: GPU {gpu} idle while training (under {GPU_IDLE:.0f}% for "
                        f"the last {WINDOW_SECONDS:.0f} s); the input pipeline or the CPU "
                        "may be the bottleneck"
                    )
    return lines


@dataclass(frozen=True)
class Straggler:
    """The worker the others wait for, and why the data point at it."""

    index: int
    reason: str

    def message(self, hosts: Mapping[int, str]) -> str:
        host = hosts.get(self.index) or "unknown host"
        return f"worker {self.index} ({host}) holds the others back: {self.reason}"


def _medians(workers: Mapping[int, WorkerSeries], tag: str, end: float) -> dict[int, float]:
    """Each worker's typical value lately: the median, so that a burst (tracing the step
    function, writing a checkpoint) does not outweigh a steady wait."""
    out = {}
    for index, series in workers.items():
        values = recent(series.get(tag), end)
        if values.size:
            out[index] = float(np.median(values))
    return out


def _gpu_medians(workers: Mapping[int, WorkerSeries], end: float) -> dict[int, float]:
    out = {}
    for index, series in workers.items():
        per_gpu = [
            recent(series.get(gpu_tag(SYSTEM_GPU_UTIL_PERCENT, gpu)), end)
            for gpu in gpu_indices({index: series})
        ]
        values = [float(np.median(v)) for v in per_gpu if v.size]
        if values:
            out[index] = float(np.mean(values))
    return out


def _stands_out(values: Mapping[int, float]) -> tuple[int, float, float] | None:
    """(worker, its value, the highest of the others) for the highest value, if any."""
    if len(values) < 2:
        return None
    ordered = sorted(values.items(), key=lambda kv: kv[1], reverse=True)
    return ordered[0][0], ordered[0][1], ordered[1][1]


def find_straggler(
    workers: Mapping[int, WorkerSeries], training: Sequence[int] | None = None
) -> Straggler | None:
    """The worker holding the others back over the last WINDOW_SECONDS, when one stands out.

    `training` limits the comparison to workers that are training (default: all).
    """
    chosen = {i: s for i, s in workers.items() if training is None or i in training}
    end = latest_wall(chosen)
    if end is None or len(chosen) < 2:
        return None
    window = f"over the last {WINDOW_SECONDS:.0f} s"
    top = _stands_out(_medians(chosen, SYSTEM_CPU_WAIT_PERCENT, end))
    if top and top[1] >= CPU_WAIT_MIN and top[1] >= CPU_WAIT_FACTOR * top[2]:
        return Straggler(
            top[0],
            f"its threads waited for a CPU {top[1]:.0f}% of one core {window}, its peers "
            f"{top[2]:.0f}% at most (its host is busy with other work, or it has too few cores)",
        )
    host = _medians(chosen, SYSTEM_HOST_CPU_PERCENT, end)
    top = _stands_out(host)
    if top and top[1] >= HOST_CPU_SATURATED and top[2] < HOST_PEERS_BELOW:
        return Straggler(
            top[0],
            f"its host's CPU is saturated ({top[1]:.0f}% {window}) while its peers' hosts "
            f"are at {top[2]:.0f}% at most",
        )
    top = _stands_out(_gpu_medians(chosen, end))
    if top and top[1] >= GPU_BUSY_MIN and top[2] <= GPU_PEER_FRACTION * top[1]:
        return Straggler(
            top[0],
            f"its GPU is busy {top[1]:.0f}% {window} while its peers' GPUs wait at "
            f"{top[2]:.0f}% at most (a slower GPU, or more work on it)",
        )
    top = _stands_out(_medians(chosen, SYSTEM_CPU_PERCENT, end))
    if top and top[1] >= CPU_BUSY_MIN and top[1] >= CPU_BUSY_FACTOR * top[2]:
        return Straggler(
            top[0],
            f"its process used {top[1]:.0f}% of one core {window}, its peers {top[2]:.0f}% "
            "at most for the same steps (a slower CPU, or fewer threads)",
        )
    return None


def run_warnings(run: Run, workers: Mapping[int, WorkerSeries]) -> list[str]:
    """What the System tab warns of for a run: the worker holding the others back (among
    those training, while the run is active), then each worker's own trouble."""
    hosts = {h.index: h.name for h in (run.cluster.hosts if run.cluster else ())}
    hosts.update({i: w.host for i, w in run.workers.items() if i not in hosts and w.host})
    phases = {i: w.phase for i, w in run.workers.items()}
    training = [i for i, phase in phases.items() if phase == "training"]
    straggler = find_straggler(workers, training if run.active else None)
    lines = [straggler.message(hosts)] if straggler is not None else []
    return lines + system_warnings(workers, hosts, phases if run.active else {})
