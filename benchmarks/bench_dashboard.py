"""How fast the dashboard reads a big run, against TensorBoard's EventAccumulator and tbparse.

    .venv/bin/python benchmarks/bench_dashboard.py [--steps 6250] [--workers 8] [--repeat 3]

Writes a made-up run (8 workers, 4 progress scalars per step: 200,000+ events by default),
then, in this one process:

1. a full load of every worker's events with our reader, with TensorBoard's EventAccumulator
   (size guidance 0 for tensors and scalars, so it keeps every point) and with tbparse;
2. the cost of a refresh after 1,000 and 10,000 new events (it should follow the new
   bytes, not the size of the files);
3. a cold page load of that run through Streamlit's AppTest, then a warm one.

Each figure is the best of --repeat tries (the machine is shared). Exit code 1 when our full
load is less than 5x faster than EventAccumulator.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dashboard.events import EventDirectory  # noqa: E402
from dashboard.live import RunEvents  # noqa: E402
from dashboard.samplerun import RunPlan, append_progress, write_run  # noqa: E402

TARGET_RATIO = 5.0


def best_of(repeat: int, action: Callable[[], object]) -> tuple[float, object]:
    """The fastest of `repeat` runs (seconds) and the last result."""
    best = float("inf")
    result: object = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = action()
        best = min(best, time.perf_counter() - start)
    return best, result


def event_dirs(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("workers/*/events"))


def load_ours(run_dir: Path) -> int:
    """Every point of every worker, read and turned into numpy arrays."""
    total = 0
    for directory in event_dirs(run_dir):
        reader = EventDirectory(directory)
        reader.poll()
        for series in reader.series.values():
            steps, _, _ = series.to_numpy()
            total += len(steps)
    return total


def load_accumulator(run_dir: Path) -> list[object]:
    from tensorboard.backend.event_processing import event_accumulator as ea

    accumulators = []
    for directory in event_dirs(run_dir):
        accumulator = ea.EventAccumulator(
            str(directory), size_guidance={ea.TENSORS: 0, ea.SCALARS: 0}
        )
        accumulator.Reload()
        accumulators.append(accumulator)
    return accumulators


def accumulator_points(accumulators: list[object]) -> int:
    return sum(
        len(acc.Tensors(tag))  # type: ignore[attr-defined]
        for acc in accumulators
        for tag in acc.Tags()["tensors"]  # type: ignore[attr-defined]
    )


def accumulator_values(accumulators: list[object]) -> int:
    """What a user of EventAccumulator does next: tensor protos to floats."""
    from tensorboard.util import tensor_util

    count = 0
    for acc in accumulators:
        for tag in acc.Tags()["tensors"]:  # type: ignore[attr-defined]
            values = [
                tensor_util.make_ndarray(e.tensor_proto).item()
                for e in acc.Tensors(tag)  # type: ignore[attr-defined]
            ]
            count += len(values)
    return count


def load_tbparse(run_dir: Path) -> int:
    from tbparse import SummaryReader

    frame = SummaryReader(str(run_dir / "workers"), extra_columns={"dir_name"}).tensors
    return len(frame)


def timed_refresh(
    run_dir: Path, workers: int, new_events: int, repeat: int
) -> tuple[float, float, int]:
    """After new_events more events (spread over every worker): seconds for the readers to
    take them in, seconds for the whole refresh the page does (readers + fresh arrays of
    every point for the charts), and the new bytes."""
    indices = list(range(workers))
    steps_per_worker = -(-new_events // (4 * workers))
    best_poll = best_refresh = float("inf")
    new_bytes = 0
    for attempt in range(repeat):
        readers = [EventDirectory(directory) for directory in event_dirs(run_dir)]
        for reader in readers:
            reader.poll()
        events = RunEvents(run_dir)
        events.refresh(indices, min_interval=0)
        size_before = total_size(run_dir)
        start_step = 10_000_000 + (attempt + new_events) * steps_per_worker
        for index in indices:
            append_progress(run_dir, index, range(start_step, start_step + steps_per_worker))
        new_bytes = total_size(run_dir) - size_before
        start = time.perf_counter()
        read = sum(reader.poll().events for reader in readers)
        best_poll = min(best_poll, time.perf_counter() - start)
        assert read >= new_events, read
        start = time.perf_counter()
        events.refresh(indices, min_interval=0)
        best_refresh = min(best_refresh, time.perf_counter() - start)
    return best_poll, best_refresh, new_bytes


def total_size(run_dir: Path) -> int:
    return sum(path.stat().st_size for d in event_dirs(run_dir) for path in d.iterdir())


def page_load(runs_dir: Path) -> tuple[float, float]:
    """Seconds for a first (cold) and a second (warm) AppTest run of the dashboard."""
    from streamlit.testing.v1 import AppTest

    os.environ["TFCLUSTER_RUNS"] = str(runs_dir)
    app = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=300)
    start = time.perf_counter()
    app.run()
    cold = time.perf_counter() - start
    if app.exception:
        raise RuntimeError(f"the page failed: {[e.value for e in app.exception]}")
    start = time.perf_counter()
    app.run()
    warm = time.perf_counter() - start
    return cold, warm


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6250, help="progress steps per worker")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="write the run here and keep it")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as scratch:
        runs_dir = args.keep or Path(scratch)
        start = time.perf_counter()
        plan = RunPlan(
            workers=args.workers,
            state="running",
            epochs=5,
            steps_per_epoch=max(1, args.steps // 5),
            step_seconds=0.05,
        )
        run_dir = write_run(runs_dir, plan, run_id="20261128-000000-bench")
        size = total_size(run_dir)
        print(f"run: {run_dir} ({args.workers} workers, {size / 1e6:.1f} MB of event files,")
        print(f"     written in {time.perf_counter() - start:.1f} s)")

        ours, points = best_of(args.repeat, lambda: load_ours(run_dir))
        assert isinstance(points, int)
        print(f"\nfull load of {points:,} scalar events, best of {args.repeat}:")
        print(f"  our reader              {ours:7.3f} s  {points / ours:>10,.0f} events/s")

        accumulate, accumulators = best_of(args.repeat, lambda: load_accumulator(run_dir))
        assert isinstance(accumulators, list)
        kept = accumulator_points(accumulators)
        convert, _ = best_of(1, lambda: accumulator_values(accumulators))
        tensorflow = "with" if "tensorflow" in sys.modules else "without"
        print(
            f"  EventAccumulator        {accumulate:7.3f} s  {kept / accumulate:>10,.0f} events/s"
            f"  ({tensorflow} TensorFlow's record reader; kept {kept:,} points)"
        )
        print(f"    + protos to floats    {convert:7.3f} s")
        parsed, rows = best_of(args.repeat, lambda: load_tbparse(run_dir))
        assert isinstance(rows, int)
        print(f"  tbparse                 {parsed:7.3f} s  {rows / parsed:>10,.0f} events/s")
        ratio = accumulate / ours
        print(f"\n  EventAccumulator / ours = {ratio:5.1f}x   (target >= {TARGET_RATIO:.0f}x)")
        print(f"  EventAccumulator + floats / ours = {(accumulate + convert) / ours:5.1f}x")
        print(f"  tbparse / ours          = {parsed / ours:5.1f}x")

        print(f"\nrefresh of every worker after new events (best of {args.repeat}):")
        idle_events = RunEvents(run_dir)
        idle_events.refresh(range(args.workers), min_interval=0)
        idle, _ = best_of(
            args.repeat, lambda: idle_events.refresh(range(args.workers), min_interval=0)
        )
        print(f"  nothing new             {idle * 1000:7.2f} ms")
        for new_events in (1_000, 10_000):
            poll, refresh, new_bytes = timed_refresh(run_dir, args.workers, new_events, args.repeat)
            print(
                f"  {new_events:>6,} new events      {poll * 1000:7.2f} ms to read them"
                f" ({poll / new_events * 1e6:.2f} us per event; {new_bytes:,} new bytes"
                f" of {total_size(run_dir):,})"
            )
            print(f"{'':25}{refresh * 1000:7.2f} ms with fresh chart arrays of every point")

        cold, warm = page_load(runs_dir)
        print("\npage load through AppTest (the whole app script, all tabs):")
        print(f"  cold (reads every event) {cold:6.2f} s")
        print(f"  warm (cached readers)    {warm:6.2f} s")
    return 0 if ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    raise SystemExit(main())
