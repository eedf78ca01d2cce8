"""A script run without ClusterProgress: what the page makes of the progress Keras printed
(dashboard.printed, the rows and the ETA), from status.json written by the wrapper's code."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from dashboard import charts
from dashboard.cluster import rows_frame, run_eta, run_rows
from dashboard.live import RunEvents
from dashboard.printed import StatusTrail, has_line, latest, reports_progress, shows_printed
from dashboard.runs import Program, load_run
from runformat import PROGRESS_ACCURACY, PROGRESS_LOSS, SYSTEM_CPU_PERCENT, StatusRecord
from tests.dashboard.scriptrun import ScriptRun

RUN_ID = "20261207-150000-5c3p"


def status(
    index: int, step: int | None, updated: float, loss: float | None = 0.5, **more: float
) -> StatusRecord:
    return StatusRecord(index=index, step=step, updated=updated, loss=loss, **more)  # type: ignore[arg-type]


def test_the_trail_keeps_each_new_sample_once_on_our_clock() -> None:
    trail = StatusTrail("run")
    first = trail.record({0: status(0, 5, 100.0, accuracy=0.6), 1: status(1, 5, 100.5)})
    again = trail.record({0: status(0, 5, 100.0, accuracy=0.6), 1: status(1, 5, 100.5)})
    assert again is first, "the same files: the same snapshot (its figures are kept)"
    # Worker 1's host runs 10 s ahead: its times come onto our clock.
    later = trail.record(
        {0: status(0, 9, 102.0, accuracy=0.7), 1: status(1, 9, 112.5)},
        lambda index, stamp: None if stamp is None else stamp - (10.0 if index else 0.0),
    )
    assert later is not first and later.version == 2 and later.name == "run"
    steps, walls, values = later.workers[0][PROGRESS_LOSS]
    assert values.tolist() == [0.5, 0.5]
    assert steps.tolist() == [5, 9] and walls.tolist() == [100.0, 102.0]
    assert later.workers[0][PROGRESS_ACCURACY][2].tolist() == [0.6, 0.7]
    assert later.workers[1][PROGRESS_LOSS][1].tolist() == [100.5, 102.5]
    assert PROGRESS_ACCURACY not in later.workers[1], "no accuracy printed, no accuracy line"
    # A heartbeat (same step, later `updated`) is a sample too: time passed at that step.
    beat = trail.record({0: status(0, 9, 107.0, accuracy=0.7)})
    assert beat.workers[0][PROGRESS_LOSS][0].tolist() == [5, 9, 9]
    assert has_line(beat, PROGRESS_LOSS) and has_line(beat, PROGRESS_ACCURACY)


def test_one_step_seen_is_no_line() -> None:
    """A run the page first saw after it ended (or beating at one step): no line to draw."""
    trail = StatusTrail("run")
    once = trail.record({0: status(0, 8, 100.0)})
    still = trail.record({0: status(0, 8, 105.0)})
    assert len(still.workers[0][PROGRESS_LOSS][0]) == 2
    assert not has_line(once, PROGRESS_LOSS) and not has_line(still, PROGRESS_LOSS)


def test_no_step_no_point_and_no_loss_no_loss_point() -> None:
    trail = StatusTrail("run")
    empty = trail.record({0: status(0, None, 100.0), 1: status(1, 3, 100.0, loss=None)})
    assert empty.workers == {} and empty.version == 0


def test_the_trail_draws_as_the_callbacks_loss_and_gives_an_eta(tmp_path: Path) -> None:
    """Under the callback's tags, the Loss chart and the ETA read it as they read events."""
    trail = StatusTrail("run")
    for second in range(6):  # 4 steps a second
        seen = trail.record({0: status(0, 4 * second, 1000.0 + second, loss=1.0 / (second + 1))})
    figure = charts.metric_figure(seen, charts.METRICS[0], start=1000.0, smoothing=0.0)
    assert figure is not None
    line = figure.data[-1]
    assert list(line.x) == [0, 4, 8, 12, 16, 20] and line.y[-1] == pytest.approx(1 / 6)
    run = ScriptRun(tmp_path, RUN_ID, workers=1, epochs=2, steps=20)
    run.train(0, 0.0, 0.0)
    run.train(5, 0.5, 0.5)  # the bar says how many steps there are
    loaded = load_run(run.path)
    rows = run_rows(loaded, {}, time.time())
    # 40 steps in all, 20 done at 4 steps a second: 19 more steps after the next one.
    assert run_eta(loaded, seen.workers, rows) == pytest.approx(19 / 4)


def test_only_a_script_without_progress_events_shows_what_it_printed(tmp_path: Path) -> None:
    run = load_run(ScriptRun(tmp_path, RUN_ID).path)
    events = RunEvents(run.path)
    snapshot = events.refresh(run.indices)
    assert set(snapshot.workers[0]) >= {SYSTEM_CPU_PERCENT}, "the wrapper's system tags"
    assert not reports_progress(snapshot.workers)
    assert shows_printed(run, snapshot)
    arrays = (np.array([1]), np.array([1.0]), np.array([0.5]))
    with_progress = replace(snapshot, workers={1: {PROGRESS_LOSS: arrays}})
    assert reports_progress(with_progress.workers) and not shows_printed(run, with_progress)
    assert not shows_printed(replace(run, program=Program()), snapshot), "the trainer"
    callback = {0: replace(run.workers[0], examples_per_sec=812.5)}
    assert not shows_printed(replace(run, workers=callback), snapshot), "ClusterProgress"
    loading = replace(snapshot, loading=object())  # type: ignore[arg-type]
    assert not shows_printed(run, loading), "not while its events are first read"


def test_rows_show_each_workers_printed_epoch_step_loss_and_accuracy(tmp_path: Path) -> None:
    """status.json as the wrapper wrote it from the bar; the table and the fraction."""
    run = ScriptRun(tmp_path, RUN_ID, workers=2, epochs=2, steps=10)
    run.train(0, 0.0, 0.0)
    run.train(3, 0.69, 0.51)
    run.train(10, 0.42, 0.8)
    run.train(13, 0.31, 0.875)
    loaded = load_run(run.path)
    rows = run_rows(loaded, {}, time.time())
    assert [(r.epoch, r.epochs, r.step, r.steps_total) for r in rows] == [(1, 2, 13, 20)] * 2
    assert [(r.loss, r.accuracy, r.phase, r.stalled) for r in rows] == [
        (0.31, 0.875, "running", False)
    ] * 2
    assert rows[0].fraction == pytest.approx(0.65)
    table = rows_frame(rows)
    assert (
        table[["epoch", "step", "loss", "accuracy"]].values.tolist()
        == [["1/2", "13/20", "0.3100", "0.8750"]] * 2
    )
    newest = latest(loaded)
    assert newest is not None and newest.step == 13 and newest.loss == 0.31
    run.finish()
    ended = run_rows(load_run(run.path), {}, time.time())
    assert [(r.state, r.step, r.loss) for r in ended] == [("finished", 13, 0.31)] * 2
