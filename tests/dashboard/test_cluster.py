"""The per-worker table's rules: lag, stalls, and what a stopped or failed worker shows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dashboard.cluster import (
    STALL_MIN_SECONDS,
    STALL_UNKNOWN_SECONDS,
    WorkerProgress,
    progress_of,
    rows_frame,
    stall_limit,
    worker_rows,
)
from dashboard.runs import ClusterInfo, Failure, Host, Run, WorkerStatus

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("interval", "limit"),
    [
        (None, STALL_UNKNOWN_SECONDS),
        (0.0, STALL_UNKNOWN_SECONDS),
        (0.5, STALL_MIN_SECONDS),
        (10.0, 100.0),
    ],
)
def test_stall_limit_is_far_beyond_the_usual_interval(interval: float | None, limit: float) -> None:
    assert stall_limit(interval) == limit


def test_progress_uses_the_median_gap_between_points() -> None:
    walls = np.array([0.0, 1.0, 2.0, 3.0, 13.0, 14.0])
    series = {
        "progress/loss": (np.arange(6), walls, np.ones(6)),
        "progress/examples_per_sec": (np.arange(6), walls, np.full(6, 512.0)),
    }
    progress = progress_of(series)
    assert progress == WorkerProgress(5, 14.0, 1.0, 512.0)
    assert progress_of({}) == WorkerProgress()


def make_run(state: str, statuses: dict[int, dict], failure: Failure | None = None) -> Run:
    hosts = tuple(
        Host(index=i, role="chief" if i == 0 else "worker", name=f"h{i}", addr=f"h{i}", tf_port=1)
        for i in statuses
    )
    return Run(
        run_id="r",
        path=Path("/nonexistent"),
        cluster=ClusterInfo(state=state, hosts=hosts, epochs=3, failure=failure),
        workers={i: WorkerStatus(index=i, **fields) for i, fields in statuses.items()},
        metrics=None,
    )


def test_lag_is_measured_from_the_fastest_worker() -> None:
    run = make_run(
        "running",
        {
            0: {"state": "running", "step": 100, "updated": NOW - 1},
            1: {"state": "running", "step": 90, "updated": NOW - 1},
            2: {"state": "starting"},
        },
    )
    rows = worker_rows(run, {2: WorkerProgress(last_step=95, last_wall=NOW - 2)}, NOW)
    assert [row.lag for row in rows] == [0, 10, 5]
    assert [row.address for row in rows] == ["h0:1", "h1:1", "h2:1"]


@pytest.mark.parametrize(
    ("run_state", "silent_for", "interval", "stalled"),
    [
        ("running", 5.0, 0.5, False),
        ("running", 31.0, 0.5, True),
        ("running", 90.0, 10.0, False),
        ("running", 101.0, 10.0, True),
        ("running", 170.0, None, False),
        ("running", 181.0, None, True),
        ("finished", 10_000.0, 0.5, False),
    ],
)
def test_worker_is_stalled_only_when_silent_far_longer_than_usual(
    run_state: str, silent_for: float, interval: float | None, stalled: bool
) -> None:
    run = make_run(run_state, {0: {"state": "running", "step": 3, "updated": NOW - silent_for}})
    progress = {0: WorkerProgress(3, NOW - silent_for, interval)}
    (row,) = worker_rows(run, progress, NOW)
    assert row.stalled is stalled
    assert row.shown_state == ("stalled" if stalled else row.state)


def test_failed_worker_and_stopped_workers_after_the_run_ended() -> None:
    failure = Failure(index=1, host="h1", reason="killed by SIGKILL")
    run = make_run(
        "failed",
        {0: {"state": "running", "step": 5}, 1: {"state": "running", "step": 4}},
        failure,
    )
    rows = worker_rows(run, {}, NOW)
    assert [row.state for row in rows] == ["stopped", "failed"]
    assert rows[1].error == "killed by SIGKILL"
    assert not any(row.stalled for row in rows)


def test_table_has_one_row_per_worker_and_readable_cells() -> None:
    run = make_run(
        "running",
        {
            0: {"state": "running", "step": 12, "steps_total": 60, "epoch": 0, "updated": NOW},
            1: {"state": "running", "examples_per_sec": 812.46},
        },
    )
    frame = rows_frame(worker_rows(run, {}, NOW))
    assert frame["step"].tolist() == ["12/60", "?/?"]
    assert frame["epoch"].tolist() == ["0/3", "?/3"]
    assert frame["last update"].tolist() == ["0 s ago", "never"]
    assert frame["examples/s"].tolist()[1] == pytest.approx(812.5)
    assert worker_rows(run, {}, NOW)[0].fraction == pytest.approx(0.2)


@pytest.mark.parametrize(("waited", "stalled"), [(60.0, False), (STALL_UNKNOWN_SECONDS + 1, True)])
def test_worker_that_never_reports_counts_from_the_start_of_the_run(
    waited: float, stalled: bool
) -> None:
    run = make_run("running", {0: {"state": "running", "step": 3, "updated": NOW}})
    run.cluster = ClusterInfo(
        state="running",
        created=NOW - waited,
        hosts=(Host(0, "chief", "h0"), Host(1, "worker", "h1")),
    )
    rows = worker_rows(run, {0: WorkerProgress(3, NOW, 0.5)}, NOW)
    assert rows[1].state == "starting"
    assert rows[1].stalled is stalled
