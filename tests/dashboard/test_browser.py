"""The dashboard in a real browser: `streamlit run`, Chromium, a download and a live update.

Screenshots of every tab land in test-output/dashboard/ (or $TEST_OUTPUT/dashboard/).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from dashboard.samplerun import RunPlan, append_progress, write_run

pytestmark = pytest.mark.slow

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


@pytest.fixture(scope="module")
def output_dir() -> Path:
    path = Path(os.environ.get("TEST_OUTPUT", ROOT / "test-output")) / "dashboard"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runs folder with a finished run and a running run whose worker 2 stalled."""
    runs = tmp_path_factory.mktemp("runs")
    write_run(
        runs,
        RunPlan(workers=2, state="finished", model_bytes=os.urandom(300_000)),
        run_id=FINISHED_ID,
    )
    plan = RunPlan(workers=3, state="running", steps_done={0: 50, 1: 47, 2: 12}, stalled=(2,))
    write_run(runs, plan, run_id=RUNNING_ID, now=time.time())
    return runs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(browser_runs: Path, output_dir: Path) -> Iterator[str]:
    """`streamlit run dashboard/app.py -- --runs DIR` on a free port; stopped afterwards."""
    port = free_port()
    log = open(output_dir / "streamlit.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(ROOT / "dashboard" / "app.py"),
            "--server.headless",
            "true",
            "--server.address",
            "127.0.0.1",
            "--server.port",
            str(port),
            "--browser.gatherUsageStats",
            "false",
            "--",
            "--runs",
            str(browser_runs),
        ],
        cwd=ROOT,
        # This checkout's packages, installed (scripts/setup.sh) or not.
        env={**os.environ, "PYTHONPATH": str(ROOT)},
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
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    # The first page load imports pandas and Plotly on a shared 2-core machine: be patient.
    expect.set_options(timeout=20_000)
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
    page.set_default_timeout(30_000)
    try:
        yield page
    finally:
        context.close()


def open_run(page: Page, server: str, run_id: str) -> None:
    page.goto(f"{server}/?run={run_id}")
    page.wait_for_selector('[data-testid="stApp"]')
    expect(page.get_by_text(f"Run {run_id}")).to_be_visible()


def screenshot(page: Page, output_dir: Path, shot: str) -> None:
    """A picture once the script run is over and no placeholder is left on the page."""
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0)
    expect(page.get_by_test_id("stSkeleton")).to_have_count(0)
    page.wait_for_timeout(700)  # canvas tables and Plotly draw after the DOM settles
    page.screenshot(path=str(output_dir / f"{shot}.png"), full_page=True)


def show_tab(page: Page, name: str, output_dir: Path, shot: str) -> None:
    page.get_by_role("tab", name=name).click()
    screenshot(page, output_dir, shot)


def plot_text(page: Page, text: str) -> Locator:
    """Text drawn inside a Plotly chart (SVG), e.g. a legend entry or a node label."""
    return page.locator(".js-plotly-plot text", has_text=text)


def test_running_run_shows_cluster_and_charts_and_updates_itself(
    page: Page, server: str, browser_runs: Path, output_dir: Path
) -> None:
    run_dir = browser_runs / RUNNING_ID
    open_run(page, server, RUNNING_ID)

    expect(plot_text(page, "STALLED")).to_have_count(1)
    expect(plot_text(page, "RUNNING")).to_have_count(2)
    expect(page.get_by_text("worker 2 (host2) is stalled")).to_be_visible()
    expect(page.get_by_text("Live: refreshing every 3 s")).to_be_visible()
    show_tab(page, "Cluster", output_dir, "cluster-running")

    show_tab(page, "Progress", output_dir, "progress-running")
    progress = page.get_by_role("tabpanel", name="Progress")
    expect(progress.locator('[data-testid="stPlotlyChart"]')).to_have_count(3)
    for name in ("chief (0)", "worker 1", "worker 2"):
        expect(progress.locator(".legendtext", has_text=name)).to_have_count(3)
    expect(page.get_by_text("worker 1 · running · step 47/60")).to_be_visible()

    append_progress(run_dir, 1, range(47, 55))
    expect(page.get_by_text("worker 1 · running · step 55/60")).to_be_visible(timeout=20_000)
    screenshot(page, output_dir, "progress-after-append")

    cluster = json.loads((run_dir / "cluster.json").read_text())
    cluster.update(state="finished", finished=time.time())
    (run_dir / "cluster.json").write_text(json.dumps(cluster))
    expect(page.get_by_text("not refreshing")).to_be_visible(timeout=20_000)


def test_runs_list_and_model_download_in_the_browser(
    page: Page, server: str, browser_runs: Path, output_dir: Path
) -> None:
    open_run(page, server, FINISHED_ID)
    show_tab(page, "Runs", output_dir, "runs")
    expect(page.get_by_text("2 run(s) in")).to_be_visible()
    show_tab(page, "Cluster", output_dir, "cluster-finished")
    expect(plot_text(page, "FINISHED")).to_have_count(2)
    show_tab(page, "Progress", output_dir, "progress-finished")
    expect(page.get_by_text("Chief, per epoch")).to_be_visible()
    show_tab(page, "Artifacts", output_dir, "artifacts")

    with page.expect_download() as download_info:
        page.get_by_role("button", name=re.compile(r"Model \(model\.h5\)")).click()
    download = download_info.value
    assert download.suggested_filename == f"{FINISHED_ID}-model.h5"
    assert (
        Path(download.path()).read_bytes() == (browser_runs / FINISHED_ID / "model.h5").read_bytes()
    )
    expect(page.get_by_text("worker 0 starting on host0")).to_be_visible()


def test_hostile_run_name_in_the_url_is_refused(page: Page, server: str, output_dir: Path) -> None:
    page.goto(f"{server}/?run=..%2F..%2Fetc")
    page.wait_for_selector('[data-testid="stApp"]')
    expect(page.get_by_text("Refused run name")).to_be_visible()
    expect(page.get_by_text(f"Run {RUNNING_ID}")).to_be_visible()
    screenshot(page, output_dir, "refused-run-name")
