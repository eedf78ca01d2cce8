"""The per-worker rules: lag, stalls by phase, cause and aborted workers, ETA, configuration."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dashboard.cluster import (
    PHASE_SILENCE_SECONDS,
    STALL_UNKNOWN_SECONDS,
    WorkerProgress,
    WorkerRow,
    eta_seconds,
    phase_summary,
    progress_of,
    rows_frame,
    stall_limit,
    total_throughput,
    worker_rows,
)
from dashboard.compare import differences, parse_trainer_args
from dashboard.runs import ClusterInfo, Failure, Host, Run, WorkerStatus
from dashboard.triage import failure_story, no_model_reason
from runformat import SystemSample

NOW = 1_800_000_000.0


@pytest.mark.parametrize("interval", [0.01, 0.5, 3.0, 10.0, 600.0])
def test_stall_limit_is_far_beyond_the_usual_interval(interval: float) -> None:
    """Ten usual intervals at least and never under half a minute (event writers flush in
    bursts); before any interval is known (TensorFlow may still wait for every worker to
    connect) at least two minutes. The figures are the rule, not the module's constants."""
    assert stall_limit(interval) >= max(10 * interval, 30)
    assert stall_limit(None) == stall_limit(0.0) >= 120


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
    assert frame["step"].tolist() == ["12/60", "-/-"]
    assert frame["epoch"].tolist() == ["0/3", "-/3"]
    assert frame["last update"].tolist() == ["0 s ago", "-"]
    assert frame["examples/s"].tolist()[1] == "812.5"
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


def with_phase(
    phase: str | None, silent_for: float, in_phase: float, step: int = 3, total: int = 60
) -> WorkerRow:
    status = {"state": "running", "step": step, "steps_total": total, "updated": NOW - silent_for}
    run = make_run("running", {0: status})
    run.workers[0] = replace(run.workers[0], phase=phase, phase_since=NOW - in_phase)
    (row,) = worker_rows(run, {0: WorkerProgress(step, NOW - silent_for, 0.5)}, NOW)
    return row


@pytest.mark.parametrize(
    ("phase", "silent_for", "in_phase", "stalled"),
    [
        ("training", 31.0, 31.0, True),
        ("evaluating", 54.0, 54.0, False),
        ("saving", 500.0, 500.0, False),
        ("evaluating", 700.0, PHASE_SILENCE_SECONDS + 1, True),
        ("loading_data", 400.0, 400.0, False),
        ("connecting", 100.0, 100.0, False),
        ("connecting", 200.0, 200.0, True),
        ("ended", 5000.0, 5000.0, False),
    ],
)
def test_a_worker_that_evaluates_or_saves_is_not_stalled_within_its_bound(
    phase: str, silent_for: float, in_phase: float, stalled: bool
) -> None:
    row = with_phase(phase, silent_for, in_phase)
    assert row.stalled is stalled
    assert row.phase == phase


def test_an_old_run_at_its_last_step_is_evaluating_not_stalled() -> None:
    assert not with_phase(None, 54.0, 54.0, step=60, total=60).stalled
    assert with_phase(None, 54.0, 54.0, step=30, total=60).stalled


def test_cause_of_a_failure_stands_apart_from_the_workers_aborted_after_it() -> None:
    failure = Failure(index=1, host="h1", reason="killed by SIGKILL")
    run = make_run(
        "failed",
        {
            0: {"state": "failed", "error": "Collective ops is aborted"},
            1: {"state": "running", "step": 4, "updated": NOW - 10},
            2: {"state": "running"},
        },
        failure,
    )
    rows = worker_rows(run, {}, NOW)
    assert [(r.state, r.cause) for r in rows] == [
        ("aborted", False),
        ("failed", True),
        ("stopped", False),
    ]
    frame = rows_frame(rows)
    assert frame["state"].tolist() == ["aborted", "failed (cause)", "stopped"]
    assert frame["error"].tolist() == ["Collective ops is aborted", "killed by SIGKILL", "-"]
    story = failure_story(run, rows)
    assert story is not None
    assert (story.cause, story.host, story.step, story.died) == (1, "h1", 4, NOW - 10)
    assert story.aborted == (0, 2)
    assert story.log == "workers/1/worker.log"
    assert any("fab check" in line for line in story.advice)
    assert any("--max-restarts" in line for line in story.advice)
    assert "killed by SIGKILL" in (no_model_reason(run) or "")


PAIR = "worker 0 (h0) cannot reach worker 1 at h1:1: timed out (a firewall may drop it)"
FULL = {"full": True, "path": "/home/a/tfjobs/runs/r", "free_mb": 0.0, "message": "full"}


@pytest.mark.parametrize(
    ("failure", "disk", "said", "not_said"),
    [
        (
            Failure(0, "h0", "lost contact with its peers: " + PAIR, network=(PAIR,)),
            None,
            "could not reach each other when checked after the failure: worker 0",
            "--max-restarts 1",
        ),
        (
            Failure(
                1, "h1", "no space left in /home/a/tfjobs/runs/r (0 MB free); exited with code 1"
            ),
            FULL,
            "runs folder was full (/home/a/tfjobs/runs/r, 0 MB free)",
            "--max-restarts 1",
        ),
        (
            Failure(1, "h1", "exited with code 1"),
            {**FULL, "full": False},
            "--max-restarts 1",
            "was full",
        ),
        (Failure(1, "h1", "exited with code 1"), None, "--max-restarts 1", "could not reach"),
    ],
)
def test_what_to_do_next_follows_the_cause(
    failure: Failure, disk: dict | None, said: str, not_said: str
) -> None:
    run = make_run("failed", {0: {"state": "failed"}, 1: {"state": "failed"}}, failure)
    assert run.cluster is not None
    hosts = tuple(replace(h, disk=disk) if h.index == 1 else h for h in run.cluster.hosts)
    run = replace(run, cluster=replace(run.cluster, hosts=hosts))
    story = failure_story(run, worker_rows(run, {}, NOW))
    assert story is not None
    advice = " ".join(story.advice).replace("\\", "")
    assert said in advice and not_said not in advice, advice


def test_missing_values_are_a_dash_never_none() -> None:
    run = make_run("running", {0: {"state": "running"}})
    frame = rows_frame(worker_rows(run, {}, NOW))
    shown = frame.drop(columns=["worker", "stalled"]).iloc[0].tolist()
    assert "None" not in " ".join(shown) and "nan" not in " ".join(shown)
    assert frame["examples/s"][0] == "-" and frame["CPU %"][0] == "-"


def test_cpu_and_memory_come_from_the_system_sample() -> None:
    run = make_run("running", {0: {"state": "running"}})
    sample = SystemSample(cpu_percent=187.46, memory_mb=1234.4)
    run.workers[0] = replace(run.workers[0], system=sample)
    frame = rows_frame(worker_rows(run, {}, NOW))
    assert (frame["CPU %"][0], frame["memory MB"][0]) == ("187", "1,234")


def test_eta_follows_the_recent_step_rate_and_throughput_adds_up() -> None:
    steps = np.arange(100)
    walls = np.concatenate([np.arange(50) * 10.0, 600 + np.arange(50) * 1.0])
    series = {"progress/loss": (steps, walls, np.ones(100))}
    assert eta_seconds(series, 200) == pytest.approx(100.0)
    assert eta_seconds(series, None) is None
    assert eta_seconds({}, 200) is None
    run = make_run(
        "running",
        {
            0: {"state": "running", "examples_per_sec": 800.0},
            1: {"state": "running", "examples_per_sec": 700.0},
            2: {"state": "finished", "examples_per_sec": 900.0},
        },
    )
    assert total_throughput(worker_rows(run, {}, NOW)) == 1500.0


def test_phase_summary_counts_the_workers_in_each_phase() -> None:
    rows = [with_phase("training", 1, 1), with_phase("training", 1, 1)]
    assert phase_summary(rows) == ("training", "")
    rows.append(with_phase("evaluating", 1, 1))
    assert phase_summary(rows) == ("training", "training 2 · evaluating 1")


def test_configuration_comes_from_the_trainer_arguments() -> None:
    args = ["--epochs", "5", "--batch-size=32", "--learning-rate", "0.01", "--backup"]
    args += ["--no-validation", "--run-dir", "/x"]
    assert parse_trainer_args(args) == {
        "epochs": "5",
        "batch-size": "32",
        "learning-rate": "0.01",
        "backup": "yes",
        "validation": "no",
    }
    frame = pd.DataFrame({"epochs": ["3", "5"], "dataset": ["digits", "digits"]}, index=["a", "b"])
    assert list(differences(frame).columns) == ["epochs"]
