"""Bounded point buffers, shape-preserving downsampling and the many-worker band."""

from __future__ import annotations

import numpy as np
import pytest

from dashboard.bands import Grid, band, band_of_rows, band_row
from dashboard.series import (
    LINE_POINTS,
    PointBuffer,
    SeriesCache,
    downsample,
    extremes,
    latest_per_step,
)


def columns(start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    steps = np.arange(start, stop, dtype=np.int64)
    return steps, steps * 0.5 + 1000.0, np.sin(steps / 50.0)


def test_views_handed_out_never_change_while_the_buffer_grows() -> None:
    buffer = PointBuffer(limit=1_000_000)
    buffer.extend(*columns(0, 10))
    first = buffer.arrays()
    capacities = set()
    for start in range(10, 5010, 10):
        buffer.extend(*columns(start, start + 10))
        capacities.add(buffer.capacity)
    assert list(first[0]) == list(range(10))
    steps, walls, values = buffer.arrays()
    assert list(steps) == list(range(5010))
    assert np.array_equal(values, np.sin(steps / 50.0))
    assert np.array_equal(walls, steps * 0.5 + 1000.0)
    # Doubling: a handful of sizes, not one per append.
    assert sorted(capacities) == [256 * 2**k for k in range(len(capacities))]
    with pytest.raises(ValueError):
        steps[0] = 5


def test_full_buffer_thins_the_old_half_keeps_the_new_exact_and_the_spikes() -> None:
    limit = 4000
    buffer = PointBuffer(limit=limit)
    total = 100_000
    steps = np.arange(total, dtype=np.int64)
    values = np.cos(steps / 300.0)
    values[1234] = 50.0  # a spike early on
    values[2345] = -50.0  # and a dip
    values[3456] = np.nan
    values[90_000] = 30.0
    held = None
    for start in range(0, total, 333):
        part = slice(start, start + 333)
        buffer.extend(steps[part], steps[part] * 1.0, values[part])
        assert len(buffer) <= limit
        if start == 0:
            held = buffer.arrays()
    kept_steps, kept_walls, kept_values = buffer.arrays()
    assert held is not None and list(held[0]) == list(range(333))
    assert np.all(np.diff(kept_steps) > 0)
    assert list(kept_steps[-limit // 2 :]) == list(range(total - limit // 2, total))
    assert np.array_equal(kept_walls, kept_steps * 1.0)
    assert 1234 in kept_steps and 2345 in kept_steps and 90_000 in kept_steps
    assert buffer.thinned == total - len(buffer)
    # The whole history at one coarse resolution, not only the most recent stretch.
    coarse = kept_steps[: len(buffer) - buffer.exact]
    assert coarse[0] < 2 * buffer.stride
    assert np.diff(coarse).max() <= 2 * buffer.stride
    assert np.nanmax(np.abs(kept_values)) == 50.0


def test_extremes_keeps_the_minimum_and_maximum_of_each_group() -> None:
    values = np.array([1.0, 5.0, 0.0, 2.0, 3.0, 3.0, 3.0, 3.0, np.nan, 1.0, np.nan, np.nan])
    assert list(extremes(values, 4)) == [1, 2, 4, 7, 9, 11]
    assert list(extremes(values[:4], 2)) == [0, 1, 2, 3]


def test_downsample_keeps_ends_and_extremes_within_the_limit() -> None:
    rng = np.random.default_rng(1)
    values = np.exp(-np.arange(25_000) / 5000.0) + rng.normal(0, 0.01, 25_000)
    values[7777] = 9.0
    values[15000] = -9.0
    keep = downsample(values)
    assert len(keep) <= LINE_POINTS
    assert keep[0] == 0 and keep[-1] == len(values) - 1
    assert np.all(np.diff(keep) > 0)
    assert 7777 in keep and 15000 in keep
    # The envelope of every stretch is there: each 1/50 of the line keeps its extremes.
    for part in np.array_split(np.arange(len(values)), 50):
        kept = keep[(keep >= part[0]) & (keep <= part[-1])]
        assert abs(values[kept].max() - values[part].max()) < 0.05
        assert abs(values[kept].min() - values[part].min()) < 0.05
    assert list(downsample(values[:300])) == list(range(300))
    assert len(downsample(values, limit=10)) <= 10


def lines_of(count: int, steps: int = 2000) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(2)
    grid = np.arange(0, steps, 10)
    return {index: (grid, 800.0 + rng.normal(0, 5.0, len(grid))) for index in range(count)}


def test_band_of_many_workers_names_the_sustained_outlier_only() -> None:
    lines = lines_of(16)
    steps, values = lines[5]
    lines[5] = (steps, values * 0.6)  # a straggler for the whole run
    steps, values = lines[9]
    spiked = values.copy()
    spiked[40] = 5000.0  # one bad sample is not a straggler
    lines[9] = (steps, spiked)

    result = band(lines, points=100)

    assert result.outliers == (5,)
    assert result.workers == 16
    assert 50 <= len(result.steps) <= 100
    assert np.all(result.low <= result.median) and np.all(result.median <= result.high)
    assert result.high.max() >= 5000.0 / 4  # the spike is within the max line (mean of <= 4)
    assert abs(float(np.median(result.median)) - 800.0) < 5.0


def test_band_grid_is_every_step_when_short_and_nan_outside_a_worker_range() -> None:
    lines = {
        0: (np.arange(0, 50), np.full(50, 1.0)),
        1: (np.arange(20, 80), np.full(60, 3.0)),
        2: (np.array([], dtype=np.int64), np.array([])),
    }
    result = band(lines, points=500)
    assert list(result.steps) == list(range(80))
    assert result.workers == 2
    assert result.median[10] == 1.0 and result.median[70] == 3.0
    assert result.low[30] == 1.0 and result.high[30] == 3.0
    assert band({}).workers == 0


def test_series_cache_holds_while_the_arrays_are_the_same_and_stays_bounded() -> None:
    arrays = (np.arange(100), np.arange(100.0), np.arange(100.0))
    built: list[int] = []

    def build(size: int = 1000) -> np.ndarray:
        built.append(size)
        return np.zeros(size // 8)

    cache = SeriesCache(max_bytes=5_000)
    cache.get("a", arrays, build)
    cache.get("a", arrays, build)
    assert built == [1000] and (cache.hits, cache.misses) == (1, 1)
    cache.get("a", tuple(np.array(column) for column in arrays), build)  # equal, not the same
    cache.get("a", arrays, build, params=2)  # same arrays, other params
    assert len(built) == 3 and len(cache) == 1
    for key in "bcdefg":
        cache.get(key, arrays, build)
    assert cache.nbytes <= 5_000 and len(cache) < 7
    cache.get("g", arrays, build)  # the newest stays
    assert len(built) == 9
    cache.get("a", arrays, build)  # the oldest went first
    assert len(built) == 10
    nothing = SeriesCache(0)
    nothing.get("a", arrays, build)
    nothing.get("a", arrays, build)
    assert len(nothing) == 0 and len(built) == 12


def test_an_entry_never_keeps_its_source_alive() -> None:
    buffer = PointBuffer(limit=1000)
    buffer.extend(np.arange(10), np.arange(10.0), np.arange(10.0))
    cache = SeriesCache()
    cache.get("a", buffer.arrays(), lambda: 1)
    # The views it was built from are gone: a new view (maybe at the same address) misses.
    assert cache.get("a", buffer.arrays(), lambda: 2) == 2


def test_band_rows_stay_put_while_the_run_grows() -> None:
    lines = lines_of(12)
    grid = Grid.over(0, 1990, points=100)
    assert grid == Grid(32) and Grid.over(0, 3190, points=100) == grid  # until it doubles
    rows = {index: band_row(steps, values, grid) for index, (steps, values) in lines.items()}
    whole, parts = band(lines, points=100), band_of_rows(rows, grid)
    for field in ("steps", "low", "median", "high"):
        np.testing.assert_array_equal(getattr(whole, field), getattr(parts, field))
    assert whole.outliers == parts.outliers
    assert whole.steps[0] == 15.5  # the middle of steps 0..31
    steps, values = lines[3]
    longer = band_row(np.append(steps, 2040), np.append(values, 9.0), grid)
    assert longer.first == rows[3].first
    np.testing.assert_array_equal(longer.means[:-1], rows[3].means)  # only the end moved


def test_latest_per_step_keeps_the_last_value_read_for_a_redone_step() -> None:
    steps = np.array([0, 1, 2, 3, 2, 3, 4])
    walls = np.arange(7, dtype=np.float64)
    values = np.array([9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0])
    kept = latest_per_step(steps, walls, values)
    assert [list(column) for column in kept] == [
        [0, 1, 2, 3, 4],
        [0.0, 1.0, 4.0, 5.0, 6.0],
        [9.0, 8.0, 5.0, 4.0, 3.0],
    ]
    increasing = (np.arange(5), np.arange(5.0), np.arange(5.0))
    assert all(a is b for a, b in zip(latest_per_step(*increasing), increasing, strict=True))


def carried_forward(buffer: PointBuffer, chunks: list[int], smoothing: float, grid: Grid):
    """A line, an extent and a band row kept in one cache while the buffer grows chunk by
    chunk; after each chunk they must equal what is built from every point."""
    from dashboard import lines as charts

    cache = SeriesCache()
    rng = np.random.default_rng(3)
    step = 0
    for size in chunks:
        steps = np.arange(step, step + size, dtype=np.int64)
        values = np.sin(steps / 40.0) + rng.normal(scale=0.1, size=size)
        values[rng.random(size) < 0.01] = np.nan
        buffer.extend(steps, steps * 0.1, values)
        step += size
        lines = charts.WorkerLines("t", {0: buffer.arrays()}, cache)
        yield (
            (lines.line(0, smoothing), lines.extent(0), lines.row(0, smoothing, grid)),
            (
                charts.line_of(buffer.arrays(), smoothing),
                charts.extent_of(buffer.arrays()),
                charts.row_of(buffer.arrays(), smoothing, grid).row,
            ),
        )
    assert cache.extended > len(chunks) // 2  # most were carried forward, not rebuilt


@pytest.mark.parametrize("smoothing", [0.0, 0.6, 0.99])
def test_lines_and_rows_carried_forward_equal_the_ones_rebuilt(smoothing: float) -> None:
    # Single points, bursts, past LINE_POINTS and through several bucket widths.
    chunks = [1, 1, 3, 200, 1, 1, 400, *([1] * 30), 5000, 7, 1, 20_000, *([2] * 20)]
    buffer = PointBuffer(limit=1_000_000)
    for (line, extent, row), (line_whole, extent_whole, row_whole) in carried_forward(
        buffer, chunks, smoothing, Grid(64)
    ):
        assert len(line.steps) <= LINE_POINTS
        for got, want in ((line.steps, line_whole.steps), (line.values, line_whole.values)):
            np.testing.assert_array_equal(got, want)
        assert (line.raw is None) == (line_whole.raw is None)
        if line.raw is not None and line_whole.raw is not None:
            for got, want in zip(line.raw, line_whole.raw, strict=True):
                np.testing.assert_array_equal(got, want)
        assert extent == extent_whole
        assert row.first == row_whole.first
        np.testing.assert_allclose(row.means, row_whole.means, rtol=1e-12)


def test_a_line_keeps_the_spikes_of_every_bucket_and_its_ends() -> None:
    from dashboard.carry import picks_of

    values = np.zeros(10_000)
    values[[17, 5000, 9998]] = [9.0, -9.0, 5.0]
    kept, drawn = picks_of(values).indices_and_values()
    assert len(kept) <= LINE_POINTS and kept[0] == 0 and kept[-1] == 9999
    assert {17, 5000, 9998} <= set(kept.tolist())
    np.testing.assert_array_equal(drawn, values[kept])


def test_a_repeated_step_rebuilds_instead_of_carrying_forward() -> None:
    from dashboard import lines as charts

    buffer = PointBuffer(limit=10_000)
    buffer.extend(*columns(0, 600))
    cache = SeriesCache()
    charts.WorkerLines("t", {0: buffer.arrays()}, cache).line(0, 0.6)
    buffer.extend(*columns(590, 600))  # a worker resumed from a checkpoint at step 590
    line = charts.WorkerLines("t", {0: buffer.arrays()}, cache).line(0, 0.6)
    assert cache.extended == 0 and cache.misses == 2
    np.testing.assert_array_equal(line.values, charts.line_of(buffer.arrays(), 0.6).values)
