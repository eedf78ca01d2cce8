"""The shared readers of a run: views not copies, one snapshot per version, big first loads
in the background."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from dashboard import charts, live
from dashboard.events import EventDirectory
from dashboard.live import RunEvents, Snapshot
from dashboard.samplerun import EventWriter, RunPlan, append_progress, write_run
from dashboard.series import MAX_POINTS_PER_SERIES


@pytest.fixture
def live_run(runs_dir: Path) -> Path:
    plan = RunPlan(workers=3, state="running", epochs=2, steps_per_epoch=200)
    return write_run(runs_dir, plan, run_id="20261130-010000-live")


def test_refresh_hands_out_views_that_later_reads_never_change(live_run: Path) -> None:
    events = RunEvents(live_run)
    first = events.refresh(range(3), min_interval=0)
    loss = first.workers[1]["progress/loss"]
    kept = [column.copy() for column in loss]

    assert events.refresh(range(3), min_interval=0) is first  # nothing new: same snapshot
    append_progress(live_run, 1, range(400, 410))
    second = events.refresh(range(3), min_interval=0)

    assert second is not first and second.version == first.version + 1
    assert all(np.array_equal(a, b) for a, b in zip(loss, kept, strict=True))
    steps = second.workers[1]["progress/loss"][0]
    assert list(steps[-10:]) == list(range(400, 410))
    # The untouched workers' arrays are the very same objects: nothing was copied.
    assert second.workers[2]["progress/loss"][0] is first.workers[2]["progress/loss"][0]
    assert not loss[0].flags.writeable


def test_memo_builds_once_per_snapshot_for_every_viewer(live_run: Path) -> None:
    events = RunEvents(live_run)
    builds: list[int] = []

    def build() -> int:
        builds.append(1)
        return len(builds)

    snapshot = events.refresh(range(3), min_interval=0)
    assert snapshot.memo(("loss", "step"), build) == 1
    assert events.refresh(range(3), min_interval=0).memo(("loss", "step"), build) == 1
    append_progress(live_run, 0, range(400, 401))
    assert events.refresh(range(3), min_interval=0).memo(("loss", "step"), build) == 2


def test_the_next_snapshot_redraws_only_the_worker_with_new_points(live_run: Path) -> None:
    events = RunEvents(live_run)
    first = events.refresh(range(3), min_interval=0)
    throughput = next(m for m in charts.METRICS if not m.all_reduced)
    charts.metric_figure(first, throughput)
    built = first.lines.misses  # per worker: its point count and its line

    append_progress(live_run, 1, range(400, 410))
    second = events.refresh(range(3), min_interval=0)
    assert second.lines is first.lines  # the run's, not the snapshot's
    figure = charts.metric_figure(second, throughput)
    assert figure is not None
    # worker 1's count and line only, carried forward from its new points
    assert (second.lines.misses, second.lines.extended) == (built, 2)
    anew = Snapshot(name=second.name, workers=second.workers)  # its own, empty cache
    assert figure.to_json() == charts.metric_figure(anew, throughput).to_json()


def test_a_big_first_load_goes_on_in_the_background_and_shows_its_parts(
    live_run: Path, hold_reads: Callable[[int], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page never waits for a big first load: every refresh returns at once with what
    has been read, the load says how far it is, and the end result equals a plain read."""
    serial = RunEvents(live_run).refresh(range(3), min_interval=0)
    release = hold_reads(2)
    calls: list[int] = []
    original = live.ProcessPoolExecutor

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(live, "ProcessPoolExecutor", counting)
    events = RunEvents(live_run)
    first = events.refresh(range(3), min_interval=0)
    assert first.loading is not None and first.loading.workers_done == 0
    assert first.loading.workers == 3
    deadline = time.monotonic() + 60
    while True:
        part = events.refresh(range(3), min_interval=0)
        assert part.loading is not None, "the load ended while worker 2 waited"
        if part.loading.workers_done == 2:
            break
        assert time.monotonic() < deadline, "workers 0 and 1 were never read"
        time.sleep(0.02)
    assert 0 < part.loading.fraction < 1
    assert str(part.loading).startswith("Reading events: 2 of 3 workers")
    assert len(part.workers[0]["progress/loss"][0]) and part.workers[2] == {}
    release.touch()
    loaded = events.wait(timeout=60)

    assert loaded.loading is None and calls == [1]
    assert loaded.events == serial.events
    for index in range(3):
        for tag, arrays in serial.workers[index].items():
            for mine, theirs in zip(loaded.workers[index][tag], arrays, strict=True):
                assert np.array_equal(mine, theirs)
    # The readers came back from the processes and read on from where those stopped.
    append_progress(live_run, 2, range(400, 403))
    after = events.refresh(range(3), min_interval=0)
    assert after.events == serial.events + 12 and after.loading is None
    assert calls == [1]


def test_a_huge_event_file_keeps_the_server_small(tmp_path: Path) -> None:
    """100 MB, 1.25 million points in one series: memory follows the bound, not the file.

    Unbounded, this file costs ~130 MB (the file read whole plus 30 MB of points); the
    bound is 2.4 MB per series and the file is read 16 MB at a time.
    """
    directory = tmp_path / "events"
    with EventWriter.create(directory, wall_time=1000.0) as writer:
        # 10,000 distinct records, repeated: as costly to keep as any other curve.
        block = b"".join(writer_record(step) for step in range(10_000))
        for _ in range(100_000_000 // len(block) + 1):
            writer.raw(block)
    size = sum(path.stat().st_size for path in directory.iterdir())
    assert size > 100_000_000
    code = textwrap.dedent(
        f"""
        import resource, sys
        from dashboard.events import EventDirectory
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        reader = EventDirectory({str(directory)!r})
        reader.poll()
        series = reader.series["progress/loss"]
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(len(series), series.thinned, grown // 1024)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[2],
        timeout=300,
    )
    kept, thinned, grown_mb = map(int, result.stdout.split())
    assert kept <= MAX_POINTS_PER_SERIES
    assert kept + thinned > 1_250_000
    assert grown_mb < 60, f"reading {size:,} bytes grew the process by {grown_mb} MB"


def writer_record(step: int) -> bytes:
    from dashboard.samplerun import scalar_event
    from dashboard.tfrecord import frame_record

    return frame_record(scalar_event("progress/loss", 1.0 / (step + 1), step, 1000.0 + step))


def test_reader_survives_a_pickle_round_trip(live_run: Path) -> None:
    import pickle

    reader = EventDirectory(live_run / "workers" / "0" / "events")
    reader.poll()
    again: EventDirectory = pickle.loads(pickle.dumps(reader))
    append_progress(live_run, 0, range(400, 405))
    assert again.poll().events == 20
    assert list(again.series["progress/loss"].steps[-5:]) == list(range(400, 405))


def test_a_hosts_times_are_put_on_our_clock_once_per_snapshot() -> None:
    points = (np.arange(3), np.array([10.0, 11.0, 12.0]), np.ones(3))
    snapshot = Snapshot(
        name="r", workers={0: {"t": points}, 1: {"t": points}}, own={1: {"o": points}}
    )

    assert snapshot.on_our_clock({}) is snapshot and snapshot.on_our_clock({0: 0.0}) is snapshot
    moved = snapshot.on_our_clock({1: 3600.0})

    assert moved is snapshot.on_our_clock({1: 3600.0}), "built once per snapshot"
    assert moved.workers[0]["t"] is points
    assert moved.workers[1]["t"][1].tolist() == [-3590.0, -3589.0, -3588.0]
    assert moved.own[1]["o"][1].tolist() == [-3590.0, -3589.0, -3588.0]
    assert moved.lines is snapshot.lines and moved.name == "r"
