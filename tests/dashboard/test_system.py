"""The System tab's rules from tables: charts, warnings and the worker that holds the others
back; and the real page on a run whose worker 1 waits for a CPU."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest

from dashboard.events import Arrays
from dashboard.live import Snapshot
from dashboard.livechart import COMPONENT as LIVE_CHART
from dashboard.samplerun import EventWriter, RunPlan, write_run
from dashboard.system import (
    find_straggler,
    saturated_for,
    system_figures,
    system_warnings,
)
from tests.dashboard.conftest import OpenApp

HOSTS = {0: "ml@gpu-a", 1: "ml@gpu-b", 2: "ml@gpu-c"}


def series(values: Sequence[float], every: float = 5.0, end: float = 1000.0) -> Arrays:
    """One sample every `every` seconds, the last at `end`."""
    n = len(values)
    walls = end - every * np.arange(n - 1, -1, -1, dtype=float)
    return np.arange(n, dtype=np.int64) * 10, walls, np.asarray(values, dtype=float)


def workers(**tags: Sequence[Sequence[float]]) -> dict[int, dict[str, Arrays]]:
    """workers(cpu_wait_percent=[[w0 samples], [w1 samples]], ...) -> per worker series."""
    out: dict[int, dict[str, Arrays]] = {}
    for tag, per_worker in tags.items():
        for index, values in enumerate(per_worker):
            out.setdefault(index, {})[f"system/{tag.replace('__', '/')}"] = series(values)
    return out


@pytest.mark.parametrize(
    ("values", "lasted"),
    [
        ([50, 96, 97, 99, 98, 99, 100, 97], 35.0),  # high since the sample after 50
        ([96, 97, 99, 98, 99, 100, 97], 30.0),  # high from the first sample on
        ([99, 99, 99, 99, 99, 99, 80], None),  # the latest sample is below
        ([10, 99, 99, 99], None),  # only 15 s so far
        ([], None),
    ],
)
def test_host_saturation_counts_the_latest_run_of_high_samples(
    values: list[float], lasted: float | None
) -> None:
    assert saturated_for(series(values) if values else None, 95.0, 30.0) == lasted


@pytest.mark.parametrize(
    ("data", "phases", "expected"),
    [
        (workers(host_cpu_percent=[[99] * 8, [40] * 8]), {}, ["worker 0 (ml@gpu-a): host CPU"]),
        (workers(host_memory_percent=[[50], [93]]), {}, ["worker 1 (ml@gpu-b): host memory 93%"]),
        (
            workers(gpu_util_percent__0=[[90] * 8, [1] * 8], gpu_util_percent__1=[[90] * 8] * 2),
            {0: "training", 1: "training"},
            ["worker 1 (ml@gpu-b): GPU 0 idle while training"],
        ),
        # An idle GPU after training (evaluating, saving, ended) is no problem.
        (workers(gpu_util_percent__0=[[90] * 8, [1] * 8]), {1: "saving"}, []),
        (workers(host_cpu_percent=[[80] * 8] * 2, host_memory_percent=[[60]] * 2), {}, []),
    ],
)
def test_warnings_name_worker_and_host(
    data: dict[int, dict[str, Arrays]], phases: dict[int, str], expected: list[str]
) -> None:
    lines = system_warnings(data, HOSTS, phases)
    assert len(lines) == len(expected), lines
    for line, start in zip(lines, expected, strict=True):
        assert line.startswith(start), line


@pytest.mark.parametrize(
    ("data", "index", "because"),
    [
        # One worker starved of CPU (its host busy with other work): it waits, peers do not.
        (workers(cpu_wait_percent=[[20] * 6, [170] * 6], cpu_percent=[[7] * 6] * 2), 1, "waited"),
        # Separate hosts: one saturated, the others not.
        (workers(host_cpu_percent=[[40] * 6, [50] * 6, [99] * 6]), 2, "saturated"),
        # The busiest GPU is the one the others wait for.
        (workers(gpu_util_percent__0=[[35] * 6, [95] * 6, [30] * 6]), 1, "GPU is busy"),
        # A slower CPU needs more CPU for the same steps.
        (workers(cpu_percent=[[180] * 6, [90] * 6]), 0, "used 180%"),
        # Bursts (tracing the step function) do not outweigh a steady wait: seen in a real run.
        (
            workers(
                cpu_wait_percent=[[0, 19, 127, 22, 28, 347, 30], [49, 93, 99, 100, 99, 86, 97]]
            ),
            1,
            "waited for a CPU",
        ),
        # Nobody stands out: no name.
        (workers(cpu_wait_percent=[[150] * 6, [160] * 6], cpu_percent=[[90] * 6] * 2), None, ""),
        (workers(host_cpu_percent=[[99] * 6, [99] * 6]), None, ""),  # one shared, busy host
        (workers(cpu_wait_percent=[[20] * 6, [40] * 6]), None, ""),  # too little to matter
        (workers(cpu_wait_percent=[[300] * 6]), None, ""),  # one worker: nobody to hold back
        (
            # Only the last 30 s count: worker 0 waited long ago, worker 1 now.
            {
                0: {"system/cpu_wait_percent": series([200] * 10 + [10] * 6)},
                1: {"system/cpu_wait_percent": series([10] * 10 + [150] * 6)},
            },
            1,
            "150%",
        ),
    ],
)
def test_the_worker_holding_the_others_back_is_named(
    data: Mapping[int, Mapping[str, Arrays]], index: int | None, because: str
) -> None:
    found = find_straggler(data)
    if index is None:
        assert found is None, found
        return
    assert found is not None and found.index == index and because in found.reason, found
    assert found.message(HOSTS).startswith(f"worker {index} ({HOSTS[index]}) holds the others")


def test_only_training_workers_are_compared() -> None:
    data = workers(cpu_wait_percent=[[20] * 6, [170] * 6])
    assert find_straggler(data, training=[0]) is None


def test_figures_one_line_per_worker_and_gpu_charts_only_with_gpus() -> None:
    cpu_only = workers(cpu_percent=[[10, 20], [30, 40]], memory_mb=[[800, 810], [790, 795]])
    figures = dict(system_figures(Snapshot(workers=cpu_only), start=990.0))
    assert list(figures) == ["system/cpu_percent", "system/memory_mb"]
    lines = figures["system/cpu_percent"].data
    assert [trace.name for trace in lines] == ["chief (0)", "worker 1"]
    assert list(lines[1].x) == [5.0, 10.0]  # seconds since the run started
    with_gpu = workers(gpu_util_percent__0=[[50, 60]], gpu_memory_mb__0=[[900, 950]])
    assert [tag for tag, _ in system_figures(Snapshot(workers=with_gpu), start=None)] == [
        "system/gpu_util_percent/0",
        "system/gpu_memory_mb/0",
    ]


@pytest.fixture
def starved_run(tmp_path: Path) -> Path:
    """A running 2-worker run (sample format) whose worker 1 has waited for a CPU lately."""
    runs = tmp_path / "runs"
    now = time.time()
    plan = RunPlan(workers=2, state="running", system_every=0)  # system series: the ones below
    run_dir = write_run(runs, plan, run_id="20261130-060000-dddd", now=now)
    for index, wait in ((0, 15.0), (1, 160.0)):
        status_path = run_dir / "workers" / str(index) / "status.json"
        status = json.loads(status_path.read_text())
        status_path.write_text(json.dumps({**status, "phase": "training"}))
        events = run_dir / "workers" / str(index) / "events"
        with EventWriter.create(events, now - 60, host=f"system{index}") as writer:
            for k in range(12):
                wall = now - 55 + 5 * k
                writer.scalar("system/cpu_wait_percent", wait, 10 * k, wall)
                writer.scalar("system/cpu_percent", 8.0, 10 * k, wall)
                writer.scalar("system/host_cpu_percent", 100.0, 10 * k, wall)
    return runs


def test_the_system_tab_names_the_starved_worker(starved_run: Path, open_app: OpenApp) -> None:
    app = open_app(starved_run, tab="System")
    warnings = [w.value.replace("\\", "") for w in app.warning]  # markdown escapes
    assert any(w.startswith("worker 1 (host1) holds the others back") for w in warnings), warnings
    assert sum("host CPU at 95% or more" in w for w in warnings) == 2, warnings
    layouts = [
        json.loads(chart.proto.bytes)["figure"]["layout"]
        for chart in app.get("bidi_component")
        if chart.proto.component_name == LIVE_CHART
    ]
    titles = [layout.get("title", {}).get("text") for layout in layouts]
    assert "Waiting for a CPU (% of one core)" in titles and "Host CPU (%)" in titles
