"""The real dashboard/app.py, run headless by Streamlit's AppTest against made-up run folders."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest

from dashboard import text
from dashboard.header import PRINTED_NOTE
from dashboard.livechart import COMPONENT as LIVE_CHART
from dashboard.samplerun import RunPlan, append_progress, write_run
from runformat import PROGRESS_ACCURACY, PROGRESS_LOSS
from tests.dashboard.conftest import OpenApp
from tests.dashboard.scriptrun import ScriptRun


@pytest.fixture
def media_managers(monkeypatch: pytest.MonkeyPatch) -> list[MediaFileManager]:
    """The media file managers AppTest creates for each run, to click deferred downloads."""
    managers: list[MediaFileManager] = []

    class Recording(MediaFileManager):
        def __init__(self, storage: MemoryMediaFileStorage) -> None:
            super().__init__(storage)
            self.memory = storage
            managers.append(self)

    monkeypatch.setattr("streamlit.testing.v1.app_test.MediaFileManager", Recording)
    return managers


def click_download(manager: MediaFileManager, file_id: str) -> bytes:
    """What the browser receives for a deferred download: run it, fetch the stored file."""
    url = manager.execute_deferred(file_id)
    return manager.memory.get_file(url.rsplit("/", 1)[-1]).content  # type: ignore[attr-defined]


def show(app: AppTest, tab: str) -> AppTest:
    """Open a tab (only the open tab is built) and run the page again."""
    app.session_state["tab"] = tab
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def plotly_specs(app: AppTest) -> list[dict[str, Any]]:
    """Every figure the page sends to dashboard.livechart (AppTest runs no JavaScript: what
    the component receives is what counts)."""
    return [
        json.loads(chart.proto.bytes)["figure"]
        for chart in app.get("bidi_component")
        if chart.proto.component_name == LIVE_CHART
    ]


def chart_of(app: AppTest, tag: str) -> dict[str, Any]:
    for spec in plotly_specs(app):
        if spec["layout"].get("meta", {}).get("tag") == tag:
            return spec
    raise AssertionError(f"no chart of {tag!r}")


def epoch_chart(app: AppTest, title: str) -> dict[str, Any]:
    for spec in plotly_specs(app):
        if spec["layout"].get("yaxis", {}).get("title", {}).get("text") == title:
            return spec
    raise AssertionError(f"no chart of {title!r}")


def legend_lines(spec: dict[str, Any]) -> list[str]:
    return [trace["name"] for trace in spec["data"] if trace.get("showlegend", True)]


def trace_values(trace: dict[str, Any], axis: str) -> list[Any]:
    """A trace's x or y, whether plain JSON or plotly's base64 typed array."""
    data = trace[axis]
    if isinstance(data, dict) and "bdata" in data:
        return np.frombuffer(base64.b64decode(data["bdata"]), dtype=data["dtype"]).tolist()
    return list(data)


def worker_table(app: AppTest) -> pd.DataFrame:
    show(app, "Cluster")
    for frame in app.dataframe:
        if "stalled" in frame.value.columns:
            return frame.value
    raise AssertionError("no worker table")


def runs_table(app: AppTest) -> pd.DataFrame:
    show(app, "Runs")
    for frame in app.dataframe:
        if "test accuracy" in frame.value.columns:
            return frame.value
    raise AssertionError("no runs table")


def raw_texts(elements: Any) -> str:
    """Markdown bodies as the page sends them (user strings escaped)."""
    return "\n".join(str(element.value) for element in elements)


def texts(elements: Any) -> str:
    """Markdown bodies as read on the page: escapes resolved, bold markers dropped."""
    return re.sub(r"\\(.)", r"\1", raw_texts(elements).replace("**", ""))


def download(app: AppTest, label_start: str) -> Any:
    for button in app.get("download_button"):
        if button.proto.label.startswith(label_start):
            return button.proto
    return None


def test_finished_run_shows_one_row_and_one_line_per_worker(
    open_app: OpenApp, finished_run: Path
) -> None:
    app = open_app(finished_run.parent)

    table = worker_table(app)
    assert list(table["worker"]) == [0, 1]
    assert list(table["state"]) == ["finished", "finished"]
    assert not table["stalled"].any()
    assert "not refreshing" in texts(app.sidebar.caption)
    show(app, "Progress")
    for tag in ("progress/loss", "progress/accuracy"):
        assert legend_lines(chart_of(app, tag)) == [], "all-reduced: one line, no legend"
    for tag in ("progress/examples_per_sec", "progress/step_time_ms"):
        assert legend_lines(chart_of(app, tag)) == ["chief (0)", "worker 1"]
    assert legend_lines(epoch_chart(app, "Loss per epoch")) == ["train", "validation"]
    # Drawn in place by the page (dashboard.livechart), with Plotly.js from this server (its
    # copy compressed once; the page asks for it first thing); the user's zoom and pan last
    # as long as the chart's uirevision (per run, metric, x axis).
    for chart in app.get("bidi_component"):
        sent = json.loads(chart.proto.bytes)
        assert re.fullmatch(
            r"/_stcore/bidi-components/tfcluster\.plotlyjs/plotly-[\w.]+-\w+\.min\.js\.gz",
            sent["plotly"],
        ), sent["plotly"]
        if chart.proto.component_name != LIVE_CHART:
            continue  # the preload
        assert sent["figure"]["layout"]["uirevision"].startswith(f"{finished_run.name}/")
    assert len(plotly_specs(app)) == 6, "4 metrics and 2 per-epoch charts"
    assert len(app.get("progress")) == 2
    assert len(app.get("download_button")) == 4, "a CSV per chart"
    runs = runs_table(app)
    assert list(runs["run"]) == [finished_run.name]
    assert runs["test accuracy"][0] == "0.9670"
    assert runs["global batch"][0] == "128"


def loading_text(app: AppTest) -> str:
    return " ".join(bar.proto.text for bar in app.get("progress") if "Reading" in bar.proto.text)


def rerun_until(app: AppTest, done: Callable[[AppTest], bool]) -> AppTest:
    """Run the page again every 0.2 s (the browser does it every second) until done."""
    deadline = time.monotonic() + 60
    while not done(app):
        assert time.monotonic() < deadline, loading_text(app)
        time.sleep(0.2)
        app.run()
        assert not app.exception, [e.value for e in app.exception]
    return app


def test_a_big_run_shows_at_once_and_draws_its_charts_as_they_are_read(
    open_app: OpenApp, finished_run: Path, hold_reads: Callable[[int], Path]
) -> None:
    release = hold_reads(1)
    app = open_app(finished_run.parent)

    assert "Reading events: " in loading_text(app)
    table = worker_table(app)  # from status.json, before any event is read
    assert list(table["worker"]) == [0, 1] and table["step"][1] == "60/60"
    show(app, "Progress")
    rerun_until(app, lambda app: "1 of 2 workers" in loading_text(app))
    assert legend_lines(chart_of(app, "progress/examples_per_sec")) == ["chief (0)"]
    release.touch()
    rerun_until(app, lambda app: not loading_text(app))
    assert legend_lines(chart_of(app, "progress/examples_per_sec")) == ["chief (0)", "worker 1"]


def test_download_serves_the_exact_bytes_of_model_h5(
    open_app: OpenApp,
    finished_run: Path,
    model_bytes: bytes,
    media_managers: list[MediaFileManager],
) -> None:
    app = show(open_app(finished_run.parent), "Artifacts")

    model = download(app, "⬇ Model (model.h5)")
    log = download(app, "⬇ worker 1 log")
    assert model is not None and log is not None
    assert click_download(media_managers[-1], model.deferred_file_id) == model_bytes
    log_bytes = (finished_run / "workers" / "1" / "worker.log").read_bytes()
    assert click_download(media_managers[-1], log.deferred_file_id) == log_bytes


def test_running_run_flags_the_stalled_worker(open_app: OpenApp, running_run: Path) -> None:
    app = open_app(running_run.parent)

    table = worker_table(app)
    assert list(table["worker"]) == [0, 1, 2]
    assert list(table["stalled"]) == [False, False, True]
    assert list(table["lag (steps)"]) == ["0", "3", "38"]
    assert "worker 2 (host2) is stalled" in texts(app.warning)
    cluster = cluster_states(app)
    assert cluster == {0: "running", 1: "running", 2: "stalled"}
    assert "refreshing every 3 s" in texts(app.sidebar.caption)
    show(app, "Progress")
    throughput = chart_of(app, "progress/examples_per_sec")
    assert legend_lines(throughput) == ["chief (0)", "worker 1", "worker 2"]


def cluster_states(app: AppTest) -> dict[int, str]:
    """Worker index -> state as coloured in the cluster picture."""
    for spec in plotly_specs(app):
        states = {
            worker: trace["meta"]["state"]
            for trace in spec["data"]
            if isinstance(trace.get("meta"), dict) and "state" in trace["meta"]
            for worker in trace["meta"]["workers"]
        }
        if states:
            return states
    raise AssertionError("no cluster picture")


def test_empty_folder_says_how_to_start_a_run(open_app: OpenApp, runs_dir: Path) -> None:
    app = open_app(runs_dir)
    assert "No runs in" in texts(app.info)
    assert "fab deploy train" in texts(app.markdown)
    assert not plotly_specs(app)


def test_missing_folder_says_so(open_app: OpenApp, tmp_path: Path) -> None:
    app = open_app(tmp_path / "nowhere")
    assert "does not exist yet" in texts(app.info)


def test_corrupt_run_warns_and_shows_what_is_left(
    open_app: OpenApp, corrupt_run: Path, record_figures: Callable[..., None]
) -> None:
    app = open_app(corrupt_run.parent)

    warnings = texts(app.warning)
    assert "cluster.json: not valid JSON" in warnings
    assert "metrics.json: expected a JSON object" in warnings
    assert "worker 1 status.json: not valid JSON" in warnings
    assert "fails its CRC" in warnings or "damaged record header" in warnings
    assert "worker 0: its events end in" in warnings
    assert list(worker_table(app)["worker"]) == [0, 1, 2, 3]
    show(app, "Progress")
    throughput = chart_of(app, "progress/examples_per_sec")
    assert legend_lines(throughput) == ["chief (0)", "worker 1"]
    assert runs_table(app)["run"].tolist() == [corrupt_run.name]
    record_figures(9, case="corrupt run", warnings=len(app.warning), exceptions=len(app.exception))


@pytest.mark.parametrize(
    "name", ["../..", "..", "../outside", "/etc", "a/../../b", ".hidden", "%2e%2e"]
)
def test_run_name_that_leaves_the_runs_folder_is_refused(
    open_app: OpenApp, finished_run: Path, name: str
) -> None:
    """Every name is a real run folder (outside the runs folder or hidden in it): only the name
    rules of the page and of the runs folder's listing refuse it."""
    runs = finished_run.parent
    for folder in (runs.parent / "outside", runs / ".hidden", runs / "%2e%2e"):
        shutil.copytree(finished_run, folder, dirs_exist_ok=True)

    app = open_app(runs, run=name)

    assert texts(app.warning) == f"Refused run name `{name}`: not a folder of the runs folder."
    assert app.query_params["run"] == name, "the page does not jump to another run"
    assert app.sidebar.selectbox[0].value is None
    assert "Pick a run" in texts(app.info)
    app.sidebar.selectbox[0].select(finished_run.name).run()
    assert app.query_params["run"] == finished_run.name
    assert list(worker_table(app)["worker"]) == [0, 1]


def test_links_out_of_the_run_are_never_served(
    open_app: OpenApp, finished_run: Path, record_figures: Callable[..., None]
) -> None:
    secret = finished_run.parent.parent / "secret.txt"
    secret.write_text("not for the page")
    (finished_run / "model.h5").unlink()
    (finished_run / "model.h5").symlink_to(secret)
    (finished_run / "workers" / "1" / "worker.log").unlink()
    (finished_run / "workers" / "1" / "worker.log").symlink_to("../../../secret.txt")
    outside_run = finished_run.parent.parent / "elsewhere"
    shutil.copytree(finished_run, outside_run, symlinks=True)
    os.symlink(outside_run, finished_run.parent / "20991231-000000-link")

    app = show(open_app(finished_run.parent), "Artifacts")

    assert download(app, "⬇ Model") is None
    assert download(app, "⬇ worker 1 log") is None
    assert "model.h5: refused" in texts(app.warning)
    assert "not for the page" not in texts(app.code)
    show(app, "Logs")
    app.selectbox(key="log-choice").select("worker 1").run()
    assert "not for the page" not in texts(app.code)
    assert "nothing to show" in texts(app.caption)
    assert runs_table(app)["run"].tolist() == [finished_run.name]
    record_figures(9, case="links out of the run", files_served_from_outside=0)


def test_run_removed_while_open_is_a_warning(open_app: OpenApp, running_run: Path) -> None:
    app = open_app(running_run.parent, run=running_run.name)
    shutil.rmtree(running_run)

    app.run()

    assert not app.exception
    assert f"Run `{running_run.name}` is not in the runs folder" in texts(app.warning)
    assert "No runs in" in texts(app.info)


def test_new_events_show_on_the_next_refresh(
    open_app: OpenApp, running_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dashboard.live.POLL_INTERVAL", 0.0)
    app = open_app(running_run.parent)
    assert worker_table(app)["step"][1] == "47/60"

    append_progress(running_run, 1, range(47, 55))
    app.run()

    assert worker_table(app)["step"][1] == "55/60"
    show(app, "Progress")
    throughput = chart_of(app, "progress/examples_per_sec")
    worker_one = next(t for t in throughput["data"] if t["name"] == "worker 1")
    assert trace_values(worker_one, "x")[-1] == 54


def test_run_that_ends_stops_refreshing(open_app: OpenApp, running_run: Path) -> None:
    app = open_app(running_run.parent)
    assert "refreshing every" in texts(app.sidebar.caption)
    cluster = json.loads((running_run / "cluster.json").read_text())
    cluster.update(state="failed", failure={"index": 2, "host": "host2", "reason": "went silent"})
    (running_run / "cluster.json").write_text(json.dumps(cluster))

    app.run()

    assert "not refreshing" in texts(app.sidebar.caption)
    assert "worker 2 (host2) caused the failure" in texts(app.error)
    assert "went silent" in texts(app.error)
    assert list(worker_table(app)["state"]) == ["stopped", "stopped", "failed (cause)"]
    assert "State: :red-badge[failed]" in texts(app.sidebar.markdown)


def test_download_checks_the_file_again_when_clicked(
    open_app: OpenApp, finished_run: Path, media_managers: list[MediaFileManager]
) -> None:
    app = show(open_app(finished_run.parent), "Artifacts")
    model = download(app, "⬇ Model (model.h5)")
    assert model is not None
    secret = finished_run.parent.parent / "secret.bin"
    secret.write_bytes(b"outside the run")
    (finished_run / "model.h5").unlink()
    (finished_run / "model.h5").symlink_to(secret)

    assert click_download(media_managers[-1], model.deferred_file_id) == b""


def test_run_that_is_only_starting_shows_its_hosts(open_app: OpenApp, runs_dir: Path) -> None:
    run_dir = runs_dir / "20261128-120000-0000"
    run_dir.mkdir()
    hosts = [
        {"index": i, "role": "chief" if i == 0 else "worker", "name": f"gpu-{i}"} for i in (0, 1)
    ]
    (run_dir / "cluster.json").write_text(
        json.dumps({"run_id": run_dir.name, "state": "starting", "hosts": hosts})
    )

    app = open_app(runs_dir)

    assert list(worker_table(app)["state"]) == ["starting", "starting"]
    assert "refreshing every 3 s" in texts(app.sidebar.caption)
    show(app, "Progress")
    assert "No progress points yet" in texts(app.info)


def test_restarted_run_shows_why_each_earlier_attempt_ended(
    open_app: OpenApp, finished_run: Path
) -> None:
    cluster = json.loads((finished_run / "cluster.json").read_text())
    killed = {"index": 1, "host": "alice@gpu-b", "reason": "killed by SIGKILL", "log_tail": []}
    cluster.update(
        restarts=2,
        attempts=[
            {"attempt": 1, "started": 1.0, "ended": 2.0, "failure": killed},
            {"attempt": 2, "started": 3.0, "ended": 4.0, "failure": {**killed, "index": 0}},
            {"attempt": 3, "started": 5.0, "ended": 6.0, "failure": None},
        ],
    )
    (finished_run / "cluster.json").write_text(json.dumps(cluster))

    app = open_app(finished_run.parent)

    shown = texts(app.info)
    assert "Restarted 2x" in shown
    assert "attempt 1" in shown and "worker 1 (alice@gpu-b) failed: killed by SIGKILL" in shown
    assert "attempt 2" in shown and "worker 0 (alice@gpu-b) failed" in shown
    assert "attempt 3" not in shown
    assert not app.error, "a finished run shows no failure"


def test_failed_run_names_its_cause_opens_its_log_and_says_why_there_is_no_model(
    open_app: OpenApp, runs_dir: Path
) -> None:
    plan = RunPlan(workers=3, state="failed", failed=1, steps_done={0: 30, 1: 30, 2: 30})
    run_dir = write_run(runs_dir, plan, run_id="20261128-130000-dead")
    status = json.loads((run_dir / "workers" / "0" / "status.json").read_text())
    status.update(state="failed", error="Collective ops is aborted by: worker 1 died")
    (run_dir / "workers" / "0" / "status.json").write_text(json.dumps(status))

    app = open_app(runs_dir)

    error = texts(app.error)
    assert "worker 1 (host1) caused the failure at epoch 1/3, step 30/60" in error
    assert "killed by SIGKILL" in error and "Aborted after it: worker 0, worker 2" in error
    assert "fab check" in texts(app.markdown) and "--max-restarts" in texts(app.markdown)
    table = worker_table(app)
    assert table["state"].tolist() == ["aborted", "failed (cause)", "aborted"]
    assert table["error"].tolist()[:2] == [
        "Collective ops is aborted by: worker 1 died",
        "killed by SIGKILL",
    ]
    assert cluster_states(app) == {0: "aborted", 1: "failed", 2: "aborted"}
    show(app, "Logs")
    assert app.selectbox(key="log-choice").value == "worker 1"
    show(app, "Artifacts")
    assert "No model: the run failed before the chief saved it" in texts(app.caption)
    assert "not there yet" not in texts(app.caption)
    assert "tensorboard --logdir" in texts(app.code)


def test_log_search_keeps_only_matching_lines(open_app: OpenApp, finished_run: Path) -> None:
    """Worker 0's sample log has one line per 10 steps; the search ignores case."""
    app = show(open_app(finished_run.parent), "Logs")
    assert "step 20 loss 1.0335\nstep 30 loss 0.6927\n" in raw_texts(app.code)
    app.text_input(key="log-search").input("LOSS 0.6").run()
    assert [c.value for c in app.code if "step" in c.value] == ["step 30 loss 0.6927"]
    assert "1 line(s) containing “LOSS 0.6”" in texts(app.caption)


def test_the_log_hides_tensorflows_chatter_until_asked(
    open_app: OpenApp, finished_run: Path
) -> None:
    app = show(open_app(finished_run.parent), "Logs")
    shown = texts(app.code)
    assert "worker 0 starting on host0" in shown and "step 0 loss" in shown
    for chatter in ("oneDNN custom operations", "failed call to cuInit", "absl::InitializeLog"):
        assert chatter not in shown
    assert "3 line(s) of TensorFlow's chatter hidden" in texts(app.caption)

    app.toggle(key="log-everything").set_value(True).run()

    assert "oneDNN custom operations" in texts(app.code)
    assert "failed call to cuInit" in texts(app.code)
    assert "chatter hidden" not in texts(app.caption)


HOSTILE = '**bold** [link](https://evil.example) <a href="https://evil.example">a</a> :red[x]'


def test_user_controlled_strings_are_plain_text_everywhere(
    open_app: OpenApp, finished_run: Path
) -> None:
    cluster = json.loads((finished_run / "cluster.json").read_text())
    cluster["dataset"] = HOSTILE
    cluster["hosts"][1].update(name=HOSTILE, addr=HOSTILE)
    cluster.update(state="failed", failure={"index": 1, "host": HOSTILE, "reason": HOSTILE})
    (finished_run / "cluster.json").write_text(json.dumps(cluster))

    app = open_app(finished_run.parent)

    rendered = "\n".join(
        raw_texts(elements)
        for elements in (app.markdown, app.caption, app.error, app.warning, app.info, app.metric)
    )
    for markup in (r"\*\*bold", r"\[link\]\(", "<a href", ":red\\["):
        assert not re.search(r"(?<!\\)" + markup, rendered), markup
    assert r"\*\*bold\*\*" in rendered
    for spec in plotly_specs(app):
        assert "<a href" not in json.dumps(spec)
    assert "&lt;a href=&quot;https://evil.example&quot;&gt;" in json.dumps(plotly_specs(app))
    assert worker_table(app)["host"][1].startswith(HOSTILE[:70])


def test_two_runs_overlay_and_their_differences_are_listed(
    open_app: OpenApp, runs_dir: Path, hold_reads: Callable[[int], Path]
) -> None:
    write_run(runs_dir, RunPlan(workers=2, epochs=3), run_id="20261128-100000-aaaa")
    write_run(runs_dir, RunPlan(workers=3, epochs=4, seed=1), run_id="20261128-110000-bbbb")
    release = hold_reads(1)  # both runs are read in the background, worker 1 held back

    app = show(open_app(runs_dir), "Compare")
    assert "Pick two or more runs" in texts(app.info)
    app.multiselect(key="compare-runs").set_value(
        ["20261128-100000-aaaa", "20261128-110000-bbbb"]
    ).run()

    differing = app.dataframe[0].value
    assert set(differing.columns) == {"workers", "epochs", "global batch"}
    assert "20261128-100000-aaaa: Reading events: " in texts(app.caption)
    release.touch()
    rerun_until(app, lambda app: "Reading events" not in texts(app.caption))
    loss = chart_of(app, "progress/loss")
    assert legend_lines(loss) == ["20261128-110000-bbbb", "20261128-100000-aaaa"]


def test_json_too_deep_or_too_large_is_a_warning_naming_the_file(
    open_app: OpenApp, finished_run: Path
) -> None:
    (finished_run / "workers" / "1" / "status.json").write_text("[" * 50_000)
    (finished_run / "metrics.json").write_bytes(b" " * (5 << 20))

    app = open_app(finished_run.parent)

    warnings = texts(app.warning)
    assert "status.json" in warnings and "metrics.json" in warnings
    assert list(worker_table(app)["worker"]) == [0, 1]
    assert runs_table(app)["run"].tolist() == [finished_run.name]


def test_a_run_claiming_too_many_workers_is_capped_with_a_warning(
    open_app: OpenApp, finished_run: Path
) -> None:
    from runformat import MAX_WORKERS

    cluster = json.loads((finished_run / "cluster.json").read_text())
    claimed = MAX_WORKERS * 5
    cluster["hosts"] = [
        {"index": i, "role": "worker", "name": f"h{i}", "addr": f"h{i}"} for i in range(claimed)
    ]
    (finished_run / "cluster.json").write_text(json.dumps(cluster))

    started = time.perf_counter()
    app = open_app(finished_run.parent)
    took = time.perf_counter() - started

    assert len(worker_table(app)) <= MAX_WORKERS
    assert str(MAX_WORKERS) in texts(app.warning)
    assert took < 60, f"a capped run still took {took:.1f} s"


def test_a_users_script_shows_its_arguments_its_own_scalars_and_its_artifacts(
    open_app: OpenApp, script_run: Path, media_managers: list[MediaFileManager]
) -> None:
    """Written by real TensorFlow: Keras' TensorBoard callback on worker 0, tf.summary on
    both workers, a SavedModel and a file under artifacts/."""
    app = open_app(script_run.parent)

    header = texts(app.caption)
    assert "program train.py" in header
    assert "arguments --epochs 3 --learning-rate 0.01 --note 'two words'" in header
    runs = runs_table(app)
    assert runs["program"][0] == "train.py" and runs["learning rate"][0] == "0.01"

    show(app, "Progress")
    app.slider(key="smoothing").set_value(0.0).run()
    loss = chart_of(app, "epoch_loss · tensorboard/train")
    assert legend_lines(loss) == ["chief (0)"], "only worker 0 wrote it"
    assert trace_values(loss["data"][0], "x") == [0, 1, 2]
    assert legend_lines(chart_of(app, "epoch_loss · tensorboard/validation")) == ["chief (0)"]
    custom = chart_of(app, "custom/throughput · logs")
    assert legend_lines(custom) == ["chief (0)", "worker 1"]
    worker_one = next(trace for trace in custom["data"] if trace["name"] == "worker 1")
    assert trace_values(worker_one, "y") == [200.0 + step for step in range(10)]
    app.toggle(key="log-own-custom/throughput · logs").set_value(True).run()
    assert chart_of(app, "custom/throughput · logs")["layout"]["yaxis"]["type"] == "log"
    csv = download(app, "⬇ custom/throughput · logs CSV")
    assert csv is not None
    table = pd.read_csv(io.BytesIO(click_download(media_managers[-1], csv.deferred_file_id)))
    assert table.groupby("worker")["value"].max().to_dict() == {0: 109.0, 1: 209.0}

    show(app, "Artifacts")
    saved = download(app, "⬇ saved_model.zip")
    notes = download(app, "⬇ notes.txt")
    assert saved is not None and notes is not None
    assert click_download(media_managers[-1], notes.deferred_file_id) == b"trained by tfscript\n"
    archive = zipfile.ZipFile(
        io.BytesIO(click_download(media_managers[-1], saved.deferred_file_id))
    )
    assert "saved_model/saved_model.pb" in archive.namelist()
    assert (
        archive.read("saved_model/saved_model.pb")
        == (script_run / "artifacts" / "saved_model" / "saved_model.pb").read_bytes()
    )
    assert "No model: the chief did not write model.h5" in texts(app.caption)


def test_two_script_runs_compare_by_their_arguments_and_own_scalars(
    open_app: OpenApp, script_run: Path
) -> None:
    other = Path(shutil.copytree(script_run, script_run.parent / "20261207-160000-5c2p"))
    cluster = json.loads((other / "cluster.json").read_text())
    cluster["trainer_args"] = ["--epochs", "3", "--learning-rate", "0.1"]
    (other / "cluster.json").write_text(json.dumps(cluster))

    app = show(open_app(script_run.parent), "Compare")
    app.multiselect(key="compare-runs").set_value([other.name, script_run.name]).run()

    # The header's table of logged hyperparameters comes first; the configurations' is by run.
    differing = next(frame.value for frame in app.dataframe if frame.value.index.name == "run")
    assert set(differing.columns) == {"arguments", "learning rate", "note"}
    loss = chart_of(app, "epoch_loss · tensorboard/train")
    assert legend_lines(loss) == [other.name, script_run.name]


def metrics_shown(app: AppTest) -> dict[str, str]:
    """Every st.metric by label, as read on the page (escapes resolved)."""
    return {metric.label: re.sub(r"\\(.)", r"\1", metric.value) for metric in app.metric}


def test_a_script_without_the_callback_shows_what_keras_printed(
    open_app: OpenApp, runs_dir: Path, media_managers: list[MediaFileManager]
) -> None:
    """No progress events, status.json written by the wrapper's own code from a Keras bar:
    each worker's epoch, step, loss and accuracy in the header, the table and the Progress
    tab; the ETA from the printed steps over the samples the page saw across its reruns."""
    run = ScriptRun(runs_dir, "20261207-170000-5c4p", workers=2, epochs=2, steps=10)
    run.train(0, 0.0, 0.0)
    run.train(4, 0.69, 0.5)
    app = open_app(runs_dir)
    header = metrics_shown(app)
    assert header["Epoch (completed)"] == "0/2" and header["Loss (printed)"] == "0.6900"
    assert header["ETA"] == "-", "one sample: no rate yet"
    assert PRINTED_NOTE in texts(app.caption)

    first = json.loads((run.path / "workers" / "0" / "status.json").read_text())["updated"]
    time.sleep(1.0)
    run.train(8, 0.5, 0.7)
    app.run()
    second = json.loads((run.path / "workers" / "0" / "status.json").read_text())["updated"]
    # 4 steps between the two samples the page saw; 20 - 8 - 1 steps after the next one.
    eta = text.duration(11 * (second - first) / 4)
    assert metrics_shown(app)["ETA"] == eta
    table = worker_table(app)
    assert (
        table[["state", "phase", "epoch", "step", "loss", "accuracy"]].values.tolist()
        == [["running", "running", "0/2", "8/20", "0.5000", "0.7000"]] * 2
    )

    show(app, "Progress")
    shown = metrics_shown(app)
    assert (shown["Loss (printed)"], shown["Accuracy (printed)"], shown["Step"]) == (
        "0.5000",
        "0.7000",
        "8/20",
    )
    assert shown["ETA (estimated)"] == eta
    assert "progress bar printed last" in texts(app.caption)
    assert [bar.proto.value for bar in app.get("progress")] == [40, 40]
    app.slider(key="smoothing").set_value(0.0).run()
    loss, accuracy = chart_of(app, PROGRESS_LOSS), chart_of(app, PROGRESS_ACCURACY)
    assert trace_values(loss["data"][-1], "x") == [4, 8]
    assert trace_values(accuracy["data"][-1], "y") == [0.5, 0.7]
    assert "as printed, sampled by this page" in texts(app.markdown)
    buttons = [button.proto.label for button in app.get("download_button")]
    assert buttons == ["⬇ Loss CSV", "⬇ Accuracy CSV"], "Keras prints no throughput"
    csv = download(app, "⬇ Loss CSV")
    table = pd.read_csv(io.BytesIO(click_download(media_managers[-1], csv.deferred_file_id)))
    assert table[["worker", "step", "value"]].values.tolist() == [
        [0, 4, 0.69], [0, 8, 0.5], [1, 4, 0.69], [1, 8, 0.5]
    ]  # fmt: skip

    run.finish()
    app.run()
    assert metrics_shown(app)["ETA"] == "-"
    assert [bar.proto.value for bar in app.get("progress")] == [40, 40]


def edit_json(path: Path, **fields: Any) -> None:
    data = json.loads(path.read_text())
    data.update(fields)
    path.write_text(json.dumps(data))


def test_a_hosts_full_disk_is_a_warning_until_it_has_room_again(
    open_app: OpenApp, running_run: Path
) -> None:
    status = running_run / "workers" / "1" / "status.json"
    full = {"full": True, "path": "/home/u/tfjobs/runs", "free_mb": 0, "message": "no space left"}
    edit_json(status, disk=full)
    app = open_app(running_run.parent)
    said = "worker 1 (host1): disk full: no space left in /home/u/tfjobs/runs (0 MB free)"
    assert said in texts(app.warning)
    assert worker_table(app)["disk"].tolist()[:2] == [
        "-",
        "no space left in /home/u/tfjobs/runs (0 MB free)",
    ]

    edit_json(status, disk={"full": False, "path": "/home/u/tfjobs/runs", "free_mb": 900})
    app.run()
    assert "disk full" not in texts(app.warning)

    # The launcher's word, for a host too full to write its own status.json.
    cluster = json.loads((running_run / "cluster.json").read_text())
    cluster["hosts"][0]["disk"] = {"full": True, "message": "no space left", "free_mb": 0}
    (running_run / "cluster.json").write_text(json.dumps(cluster))
    app.run()
    assert "worker 0 (host0): disk full: no space left (0 MB free)" in texts(app.warning)
    cluster["hosts"][0]["disk"] = {"full": False}
    (running_run / "cluster.json").write_text(json.dumps(cluster))
    app.run()
    assert "disk full" not in texts(app.warning)


@pytest.mark.parametrize(
    ("ahead", "measured"),
    [(3600.0, True), (3600.0, False), (-3600.0, True)],
    ids=["ahead, measured", "ahead, estimated", "behind, measured"],
)
def test_a_host_whose_clock_is_an_hour_off_looks_like_the_others(
    open_app: OpenApp, running_run: Path, ahead: float, measured: bool
) -> None:
    """Its last update is seconds ago (never in the future, never an hour ago: no false
    stall), with its CPU and memory."""
    now = time.time()
    if measured:
        cluster = json.loads((running_run / "cluster.json").read_text())
        cluster["hosts"][1]["clock_offset"] = ahead
        (running_run / "cluster.json").write_text(json.dumps(cluster))
    append_progress(running_run, 1, range(47, 50), wall_time=now + ahead - 3, step_seconds=1.0)
    edit_json(
        running_run / "workers" / "1" / "status.json",
        updated=now + ahead - 1,
        phase_since=now + ahead - 20,
        system={"time": now + ahead - 1, "cpu_percent": 97.0, "memory_mb": 812.0},
    )

    table = worker_table(open_app(running_run.parent))

    one = table[table["worker"] == 1].iloc[0]
    assert re.fullmatch(r"[0-9] s ago", one["last update"]), one["last update"]
    assert not one["stalled"]
    assert (one["CPU %"], one["memory MB"]) == ("97", "812")
    assert not any(cell.startswith("-") and cell != "-" for cell in table["last update"])


@pytest.mark.parametrize(
    ("address", "warned"), [(None, True), ("127.0.0.1", False), ("0.0.0.0", False)]
)
def test_a_page_served_on_every_interface_without_asking_says_so(
    open_app: OpenApp,
    finished_run: Path,
    monkeypatch: pytest.MonkeyPatch,
    address: str | None,
    warned: bool,
) -> None:
    """Started from another folder, Streamlit does not read .streamlit/config.toml, which
    keeps the page on this machine; an address given on purpose is not warned about."""
    real = st.get_option
    monkeypatch.setattr(
        st, "get_option", lambda key: address if key == "server.address" else real(key)
    )

    app = open_app(finished_run.parent)

    shown = texts(app.sidebar.warning)
    assert ("Served on every network interface" in shown) is warned
    assert ("--server.address 127.0.0.1" in shown) is warned
