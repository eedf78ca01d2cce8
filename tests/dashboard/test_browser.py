"""The dashboard in a real browser: `streamlit run` once, Chromium for every check.

Cluster pictures of 2, 16 and 64 workers without overlapping text, zoom and pan kept across
live refreshes, a Runs row click, an overlay of two runs, a download, a refused run name,
Plotly.js served compressed once and kept by the browser.
Screenshots land in test-output/dashboard/ (or $TEST_OUTPUT/dashboard/).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import site
import socket
import subprocess
import time
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from dashboard.charts import METRICS
from dashboard.live import BIG_LOAD_BYTES
from dashboard.livechart import ASSET_DIR, PLOTLY_JS, PLOTLY_PACKAGE
from dashboard.samplerun import RunPlan, append_progress, write_run
from dashboard.serve import streamlit_command
from tests.conftest import skip_or_fail

# One test process for the whole module, so that its module fixtures are built once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("test_browser")]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
]
FINISHED_ID = "20261128-100000-f1f1"
RUNNING_ID = "20261128-110000-a2a2"
FAILED_ID = "20261128-090000-dead"
BIG_ID = "20261128-060000-b1b1"
WIDE_IDS = {16: "20261128-080000-0016", 64: "20261128-070000-0064"}
SIZE_IDS = {2: FINISHED_ID, **WIDE_IDS}


@pytest.fixture(scope="module")
def output_dir() -> Path:
    path = Path(os.environ.get("TEST_OUTPUT", ROOT / "test-output")) / "dashboard"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser_runs(tmp_path_factory: pytest.TempPathFactory, tf_script_run: Path) -> Path:
    """A finished 2-worker run, a failed run, running runs of 16 and 64 workers whose
    worker 1 stalled, and a user's script's run written by real TensorFlow."""
    runs = tmp_path_factory.mktemp("runs")
    shutil.copytree(tf_script_run, runs / tf_script_run.name)
    write_run(
        runs,
        RunPlan(workers=2, state="finished", model_bytes=os.urandom(300_000)),
        run_id=FINISHED_ID,
    )
    # Another seed: its curves differ from the finished run's (the overlay test tells them apart).
    write_run(runs, RunPlan(workers=2, state="failed", failed=1, seed=1), run_id=FAILED_ID)
    for workers, run_id in WIDE_IDS.items():
        plan = RunPlan(workers=workers, state="running", steps_done={1: 30}, stalled=(1,))
        write_run(runs, plan, run_id=run_id, now=time.time())
    return runs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(
    browser_runs: Path, output_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`streamlit run dashboard/app.py -- --runs DIR` on a free port; stopped afterwards.

    As a user with only the requirements installed starts it: from another folder, with
    this checkout neither on PYTHONPATH nor installed (`python -S` skips the environment's
    .pth files, where an editable install of the project lives; its packages come from
    PYTHONPATH).
    """
    port = free_port()
    log = open(output_dir / "streamlit.log", "w")  # noqa: SIM115 - closed below
    command = streamlit_command(port, browser_runs)
    process = subprocess.Popen(
        [command[0], "-S", *command[1:]],
        cwd=tmp_path_factory.mktemp("elsewhere"),
        env={**os.environ, "PYTHONPATH": os.pathsep.join(site.getsitepackages())},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"streamlit did not start: see {output_dir / 'streamlit.log'}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """System Chromium driven by Playwright (never a downloaded browser)."""
    if not CHROMIUM.exists():
        message = (
            f"{CHROMIUM} is missing: run scripts/system-packages.sh (apt-get install chromium)"
        )
        skip_or_fail(message)
    # The first page load imports pandas and Plotly on a shared 2-core machine: be patient.
    expect.set_options(timeout=60_000)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser, server: str) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        yield page
    finally:
        context.close()


def open_run(page: Page, server: str, run_id: str, tab: str = "Cluster") -> None:
    page.goto(f"{server}/?run={run_id}")
    page.wait_for_selector('[data-testid="stApp"]')
    expect(page.get_by_text(f"Run {run_id}")).to_be_visible()
    if tab != "Cluster":
        page.get_by_role("tab", name=tab).click()
    expect(page.get_by_role("tab", name=tab, selected=True)).to_be_visible()


def screenshot(page: Page, output_dir: Path, shot: str) -> None:
    """A picture once the script run is over and no placeholder is left on the page."""
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0)
    expect(page.get_by_test_id("stSkeleton")).to_have_count(0)
    page.wait_for_timeout(700)  # canvas tables and Plotly draw after the DOM settles
    page.screenshot(path=str(output_dir / f"{shot}.png"), full_page=True)


def plot_text(page: Page, text: str) -> Locator:
    """Text drawn inside a Plotly chart (SVG), e.g. a legend entry or a node label."""
    return page.locator(".js-plotly-plot text", has_text=text)


TEXT_BOXES = """(root) => Array.from(root.querySelectorAll('text'))
    .filter((t) => t.textContent.trim())
    .map((t) => { const b = t.getBoundingClientRect();
                  return [t.textContent, b.left, b.top, b.right, b.bottom]; })"""


def overlaps(boxes: list[list[Any]]) -> list[tuple[str, str]]:
    """Pairs of texts whose boxes intersect (by more than half a pixel)."""
    return [
        (a[0], b[0])
        for i, a in enumerate(boxes)
        for b in boxes[i + 1 :]
        if min(a[3], b[3]) - max(a[1], b[1]) > 0.5 and min(a[4], b[4]) - max(a[2], b[2]) > 0.5
    ]


@pytest.mark.parametrize("workers", [2, 16, 64])
def test_cluster_picture_has_no_overlapping_text(
    page: Page, server: str, output_dir: Path, workers: int
) -> None:
    open_run(page, server, SIZE_IDS[workers])
    picture = page.get_by_role("tabpanel", name="Cluster").locator(".js-plotly-plot").first
    last = str(workers - 1)
    deadline = time.monotonic() + 60
    while True:  # Plotly fills its text elements after it adds them
        boxes = picture.evaluate(TEXT_BOXES)
        if last in [box[0].strip() for box in boxes] or time.monotonic() > deadline:
            break
        page.wait_for_timeout(500)
    assert last in [box[0].strip() for box in boxes], boxes
    assert overlaps(boxes) == []
    # Not bounding_box(): a live fragment may be redrawing the chart (None while it does);
    # evaluate waits for the element.
    height = picture.evaluate("e => e.getBoundingClientRect().height")
    if workers == 2:
        assert 0 < height < 150, "a small cluster takes little room"
        expect(plot_text(page, "finished")).to_have_count(1)
    else:
        expect(plot_text(page, "stalled")).to_have_count(1)
    screenshot(page, output_dir, f"cluster-{workers}-workers")


PLOTLY_FETCHES = """() => performance.getEntriesByType('resource')
    .filter((e) => e.name.includes('tfcluster.plotlyjs'))
    .map((e) => ({ name: e.name, transferred: e.transferSize }))"""
# What the page does to load Plotly.js, once more: the browser's cache answers.
FETCH_AGAIN = "(url) => fetch(url, { cache: 'force-cache' }).then((r) => r.arrayBuffer())"


def check_plotly_js_is_compressed_once_and_kept(page: Page) -> None:
    """The page loaded the copy of Plotly.js compressed once by the server (Streamlit does not
    gzip it again at each request), and the browser keeps it for the next page."""
    page.wait_for_function(f"() => ({PLOTLY_FETCHES})().length > 0")
    [first] = page.evaluate(PLOTLY_FETCHES)
    assert first["name"].endswith(".min.js.gz") and first["transferred"] > 1_000_000
    page.evaluate(FETCH_AGAIN, first["name"])
    assert [fetch["transferred"] for fetch in page.evaluate(PLOTLY_FETCHES)] == [
        first["transferred"],
        0,
    ], "the second time it comes from the browser's cache"
    request = urllib.request.Request(first["name"], headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers.get("Content-Encoding") is None
        assert response.headers.get("Content-Type") == "application/gzip"
        served = response.read()
    assert gzip.decompress(served) == (PLOTLY_PACKAGE / ASSET_DIR / PLOTLY_JS).read_bytes()


def drag(page: Page, chart: Locator, start: float, end: float, height: float = 40) -> None:
    """Drag across a chart's plot area from `start` to `end` (fractions of its width),
    `height` pixels tall (a zoom box, or the way a pan goes)."""
    chart.scroll_into_view_if_needed()
    area = chart.locator(".nsewdrag").first.bounding_box()
    assert area is not None
    y = area["y"] + area["height"] / 2
    page.mouse.move(area["x"] + area["width"] * start, y - height / 2)
    page.mouse.down()
    page.mouse.move(area["x"] + area["width"] * end, y + height / 2, steps=8)
    page.mouse.up()


def x_range(panel: Locator, chart: int = 2) -> list[float]:
    """The x range a chart of the panel shows now (throughput: the third chart)."""
    return list(
        panel.evaluate(
            "(panel, i) => panel.querySelectorAll('.js-plotly-plot')[i]"
            "._fullLayout.xaxis.range.map(Number)",
            chart,
        )
    )


def wait_for_range(panel: Locator, moved: Callable[[list[float]], bool]) -> list[float]:
    deadline = time.monotonic() + 20
    while not moved(shown := x_range(panel)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return shown


def test_running_run_keeps_zoom_and_pan_while_it_updates_itself(
    page: Page, server: str, browser_runs: Path, output_dir: Path
) -> None:
    plan = RunPlan(workers=3, state="running", steps_done={0: 50, 1: 47, 2: 12}, stalled=(2,))
    run_dir = write_run(browser_runs, plan, run_id=RUNNING_ID, now=time.time())
    open_run(page, server, RUNNING_ID)
    expect(page.get_by_text("worker 2 (host2) is stalled")).to_be_visible()
    expect(page.get_by_text("Live: refreshing every 3 s")).to_be_visible()
    screenshot(page, output_dir, "cluster-running")

    page.get_by_role("tab", name="Progress").click()
    progress = page.get_by_role("tabpanel", name="Progress")
    expect(progress.locator(".js-plotly-plot")).to_have_count(4)
    for name in ("chief (0)", "worker 1", "worker 2"):
        expect(progress.locator(".legendtext", has_text=name)).to_have_count(2)
    # On a busy machine worker 1 may count as stalled by now: its state is not the point here.
    expect(page.get_by_text(re.compile(r"worker 1 · \w+ · step 47/60"))).to_be_visible()

    chart = progress.locator(".js-plotly-plot").nth(2)
    whole = x_range(progress)
    drag(page, chart, 0.3, 0.6)  # Plotly's zoom tool is the one chosen at first
    zoomed = wait_for_range(progress, lambda shown: shown[1] - shown[0] < 30)
    assert zoomed[1] - zoomed[0] < 30, f"the drag did not zoom: {whole} -> {zoomed}"
    chart.hover()
    chart.locator('.modebar-btn[data-title="Pan"]').click()
    drag(page, chart, 0.6, 0.3, height=0)  # the plot moves with the pointer: later steps
    panned = wait_for_range(progress, lambda shown: shown[0] > zoomed[0] + 1)
    assert panned[0] > zoomed[0] + 1, f"the pan did not move: {zoomed} -> {panned}"
    assert panned[1] - panned[0] == pytest.approx(zoomed[1] - zoomed[0])
    page.screenshot(path=str(output_dir / "progress-zoomed-and-panned.png"), full_page=True)
    for last, steps in ((51, range(47, 51)), (55, range(51, 55))):
        append_progress(run_dir, 1, steps)
        expect(page.get_by_text(f"worker 1 · running · step {last}/60")).to_be_visible()
        # The same plot has drawn the new points, and it shows the user's range still.
        page.wait_for_function(
            "([chart, last]) => Math.max(...Array.from(chart._fullData.find("
            "(t) => t.name === 'worker 1').x, Number)) >= last",
            arg=[chart.element_handle(), last - 1],
        )
        assert x_range(progress) == pytest.approx(panned), "a refresh lost the zoom or the pan"
    # A live page is always re-running a part of itself: no waiting for it to settle.
    page.screenshot(path=str(output_dir / "progress-panned-after-two-refreshes.png"))

    cluster = json.loads((run_dir / "cluster.json").read_text())
    cluster.update(state="finished", finished=time.time())
    (run_dir / "cluster.json").write_text(json.dumps(cluster))
    expect(page.get_by_text("not refreshing")).to_be_visible(timeout=20_000)
    expect(page.get_by_test_id("stSidebar").get_by_text("finished")).to_be_visible()


def test_a_click_on_a_runs_row_opens_that_run_and_new_runs_show_up(
    page: Page, server: str, browser_runs: Path, output_dir: Path
) -> None:
    open_run(page, server, FINISHED_ID, tab="Runs")
    count = len(list(browser_runs.iterdir()))
    expect(page.get_by_text(f"{count} run(s) in")).to_be_visible()
    screenshot(page, output_dir, "runs")

    table = page.get_by_test_id("stDataFrame").first
    box = table.bounding_box()
    assert box is not None
    names = sorted((p.name for p in browser_runs.iterdir()), reverse=True)
    row = names.index(FAILED_ID)
    page.mouse.click(box["x"] + 12, box["y"] + 35 * (row + 1) + 17)
    expect(page.get_by_text(f"Run {FAILED_ID}")).to_be_visible()
    expect(page.get_by_role("tab", name="Cluster", selected=True)).to_be_visible()
    expect(page.get_by_text("worker 1 (host1) caused the failure")).to_be_visible()
    assert page.url.endswith(f"?run={FAILED_ID}")
    screenshot(page, output_dir, "failed-run-opened-from-runs")

    write_run(browser_runs, RunPlan(workers=2, state="running"), run_id="20261128-120000-new1")
    page.get_by_role("tab", name="Runs").click()
    expect(page.get_by_text(f"{count + 1} run(s) in")).to_be_visible(timeout=20_000)


# Per chart of a panel: its tag and, per drawn line (Plotly's own trace groups in the SVG),
# the trace's name, its y values and the length of the line's path.
DRAWN_LINES = """(panel) => Array.from(panel.querySelectorAll('.js-plotly-plot')).map((gd) => ({
    tag: (gd.layout.meta || {}).tag,
    lines: Array.from(gd.querySelectorAll('.scatterlayer .trace')).map((g) => {
        const trace = g.__data__[0].trace;
        const path = g.querySelector('path.js-line');
        return [trace.name, Array.from(trace.y, Number),
                path ? (path.getAttribute('d') || '').length : 0];
    }),
}))"""


def compare_panel(page: Page, server: str, other: str) -> Locator:
    """The Compare tab of the finished run with `other` picked too."""
    open_run(page, server, FINISHED_ID, tab="Compare")
    page.get_by_test_id("stMultiSelect").first.click()
    page.keyboard.type(other)
    page.keyboard.press("Enter")
    page.keyboard.press("Escape")
    return page.get_by_role("tabpanel", name="Compare")


def test_two_runs_overlaid(page: Page, server: str, output_dir: Path) -> None:
    panel = compare_panel(page, server, FAILED_ID)
    for run_id in (FINISHED_ID, FAILED_ID):
        expect(panel.locator(".legendtext", has_text=run_id)).to_have_count(4)
    screenshot(page, output_dir, "compare-two-runs")

    charts = panel.evaluate(DRAWN_LINES)
    assert sorted(chart["tag"] for chart in charts) == sorted(m.tag for m in METRICS)
    for chart in charts:
        lines = {name: (y, path) for name, y, path in chart["lines"]}
        assert {FINISHED_ID, FAILED_ID} <= set(lines), (chart["tag"], list(lines))
        (finished, finished_path), (failed, failed_path) = lines[FINISHED_ID], lines[FAILED_ID]
        # Each run's line is on the page (a path through its points), with its own values.
        assert len(finished) > 10 and len(failed) > 10, chart["tag"]
        assert finished_path > 10 * len(finished) // 2 and failed_path > 10 * len(failed) // 2
        common = min(len(finished), len(failed))
        assert finished[:common] != pytest.approx(failed[:common]), chart["tag"]


def test_compare_draws_a_run_when_its_events_are_read(
    page: Page, server: str, browser_runs: Path, output_dir: Path
) -> None:
    """A run big enough to be read in the background joins the overlay once it is read, with
    no click: the Compare tab asks again every second while it says it is reading."""
    big = write_run(
        browser_runs,
        RunPlan(workers=2, epochs=2, steps_per_epoch=16_000, step_seconds=0.05, seed=2),
        run_id=BIG_ID,
    )
    try:
        assert sum(p.stat().st_size for p in big.rglob("events.out.tfevents.*")) >= BIG_LOAD_BYTES
        panel = compare_panel(page, server, BIG_ID)
        expect(panel.get_by_text(f"{BIG_ID}: Reading events")).to_be_visible()
        expect(panel.locator(".legendtext", has_text=BIG_ID)).to_have_count(4)
        expect(panel.get_by_text("Reading events")).to_have_count(0)
        screenshot(page, output_dir, "compare-after-background-read")
    finally:
        shutil.rmtree(big)


def test_model_download_and_the_log_in_the_browser(
    page: Page, server: str, browser_runs: Path, output_dir: Path
) -> None:
    open_run(page, server, FINISHED_ID, tab="Artifacts")
    with page.expect_download() as download_info:
        page.get_by_role("button", name=re.compile(r"Model \(model\.h5\)")).click()
    download = download_info.value
    assert download.suggested_filename == f"{FINISHED_ID}-model.h5"
    assert (
        Path(download.path()).read_bytes() == (browser_runs / FINISHED_ID / "model.h5").read_bytes()
    )
    expect(page.get_by_text("tensorboard --logdir")).to_be_visible()
    screenshot(page, output_dir, "artifacts")
    page.get_by_role("tab", name="Logs").click()
    expect(page.get_by_text("worker 0 starting on host0")).to_be_visible()
    expect(page.get_by_text("oneDNN custom operations")).to_have_count(0)
    # Every page asks for Plotly.js first thing, this one without a chart too.
    check_plotly_js_is_compressed_once_and_kept(page)


def test_a_scripts_own_scalars_and_its_saved_model_in_the_browser(
    page: Page, server: str, tf_script_run: Path, output_dir: Path
) -> None:
    open_run(page, server, tf_script_run.name, tab="Progress")
    # The hyperparameters hp.KerasCallback logged, on the header's line and in its table.
    expect(page.get_by_text(re.compile(r"optimizer sgd · units 1"))).to_be_visible()
    page.get_by_text("Hyperparameters logged for TensorBoard: 3 session(s)").click()
    expect(page.get_by_test_id("stExpander").get_by_test_id("stDataFrame")).to_be_visible()
    progress = page.get_by_role("tabpanel", name="Progress")
    expect(progress.get_by_text("train.py's own scalars")).to_be_visible()
    for name in ("epoch_loss · tensorboard/train", "custom/throughput · logs"):
        expect(progress.locator("strong", has_text=name)).to_be_visible()
    charts = progress.locator(".js-plotly-plot")
    expect(charts.filter(has=page.locator(".legendtext", has_text="worker 1"))).not_to_have_count(0)
    drawn = {chart["tag"]: chart["lines"] for chart in progress.evaluate(DRAWN_LINES)}
    custom = {name: y for name, y, _ in drawn["custom/throughput · logs"]}
    assert custom["worker 1"][-1] == pytest.approx(209.0, rel=0.1), "smoothed, close to it"
    assert drawn["epoch_loss · tensorboard/train"], "Keras' own curve is drawn"
    screenshot(page, output_dir, "script-progress")

    page.get_by_role("tab", name="Artifacts").click()
    with page.expect_download() as download_info:
        page.get_by_role("button", name=re.compile(r"saved_model\.zip")).click()
    download = download_info.value
    assert download.suggested_filename == f"{tf_script_run.name}-saved_model.zip"
    with zipfile.ZipFile(download.path()) as archive:
        assert "saved_model/saved_model.pb" in archive.namelist()

    page.get_by_role("tab", name="Media").click()
    media = page.get_by_role("tabpanel", name="Media")
    picture = media.locator("img").first
    expect(picture).to_be_visible()
    assert picture.evaluate("img => img.complete && img.naturalWidth") == 16, "the PNG decodes"
    expect(media.get_by_text("trained by")).to_be_visible()
    # Keras' weight histograms, as heatmaps over steps: drawn by the page's own Plotly.js.
    expect(media.locator(".js-plotly-plot g.hm image")).not_to_have_count(0)
    screenshot(page, output_dir, "script-media")


def test_hostile_run_name_in_the_url_is_refused_and_the_page_stays(
    page: Page, server: str, output_dir: Path
) -> None:
    page.goto(f"{server}/?run=..%2F..%2Fetc")
    page.wait_for_selector('[data-testid="stApp"]')
    expect(page.get_by_text("Refused run name")).to_be_visible()
    expect(page.get_by_text("Pick a run in the sidebar")).to_be_visible()
    page.wait_for_timeout(1000)
    assert "run=..%2F..%2Fetc" in page.url
    screenshot(page, output_dir, "refused-run-name")
