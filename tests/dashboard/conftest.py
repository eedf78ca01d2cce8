"""Run folders made in the real format by dashboard.samplerun, one per situation."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard import live
from dashboard.events import EventDirectory, PollResult
from dashboard.samplerun import RunPlan, write_run

# (worker folder name, file): reading that worker's events waits while the file is missing.
HELD: tuple[str, Path] | None = None
PLAIN_POLL = live._poll


APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"

OpenApp = Callable[..., AppTest]


@pytest.fixture
def open_app(monkeypatch: pytest.MonkeyPatch) -> OpenApp:
    """Runs the real app once on a runs folder, optionally with ?run=... and a tab open (only
    the open tab is built); returns the AppTest, which raised nothing."""

    def run(runs_dir: Path, run: str | None = None, tab: str | None = None) -> AppTest:
        monkeypatch.setenv("TFCLUSTER_RUNS", str(runs_dir))
        app = AppTest.from_file(str(APP), default_timeout=60)
        if run is not None:
            app.query_params["run"] = run
        if tab is not None:
            app.session_state["tab"] = tab
        app.run()
        assert not app.exception, [e.value for e in app.exception]
        return app

    return run


def held_poll(reader: EventDirectory) -> tuple[EventDirectory, PollResult, int]:
    """live._poll, but holding one worker back (in whichever process reads it)."""
    while HELD is not None and reader.directory.parent.name == HELD[0] and not HELD[1].exists():
        time.sleep(0.01)
    return PLAIN_POLL(reader)


@pytest.fixture
def hold_reads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[[int], Path]:
    """hold(i): every first read goes to the background, where worker i's events wait until
    the returned file exists (touch it to let them be read)."""

    def hold(index: int) -> Path:
        release = tmp_path / f"release-{index}"
        monkeypatch.setattr(live, "BIG_LOAD_BYTES", 1)
        monkeypatch.setattr(live, "_poll", held_poll)
        monkeypatch.setattr(sys.modules[__name__], "HELD", (str(index), release))
        return release

    return hold


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    """An empty runs folder."""
    path = tmp_path / "runs"
    path.mkdir()
    return path


@pytest.fixture
def model_bytes() -> bytes:
    return random.Random(7).randbytes(50_000)


@pytest.fixture
def finished_run(runs_dir: Path, model_bytes: bytes) -> Path:
    """A finished 2-worker run with model.h5, metrics.json and the chief's Keras logs."""
    plan = RunPlan(workers=2, state="finished", model_bytes=model_bytes)
    return write_run(runs_dir, plan, run_id="20261128-100000-aaaa")


@pytest.fixture
def running_run(runs_dir: Path) -> Path:
    """A running 3-worker run whose worker 2 went silent five minutes ago."""
    plan = RunPlan(workers=3, state="running", steps_done={0: 50, 1: 47, 2: 12}, stalled=(2,))
    return write_run(runs_dir, plan, run_id="20261128-110000-bbbb", now=time.time())


@pytest.fixture
def corrupt_run(runs_dir: Path) -> Path:
    """A run with garbage cluster.json, a cut, a flipped, an empty and a random event file."""
    plan = RunPlan(workers=4, state="finished")
    run_dir = write_run(runs_dir, plan, run_id="20261128-090000-cccc")
    (run_dir / "cluster.json").write_bytes(b"\x00{not json at all")
    (run_dir / "metrics.json").write_text(json.dumps([1, 2, 3]))
    (run_dir / "workers" / "1" / "status.json").write_text('{"state": "runn')
    events = {i: next((run_dir / "workers" / str(i) / "events").iterdir()) for i in range(4)}
    data = events[0].read_bytes()
    events[0].write_bytes(data[: len(data) // 2 + 3])
    flipped = bytearray(events[1].read_bytes())
    flipped[len(flipped) // 2] ^= 0xFF
    events[1].write_bytes(bytes(flipped))
    events[2].write_bytes(b"")
    events[3].write_bytes(random.Random(3).randbytes(2000))
    return run_dir


SCRIPT_RUN_ID = "20261207-150000-5c1p"
SCRIPT_ARGS = ("--epochs", "3", "--learning-rate", "0.01", "--note", "two words")


@pytest.fixture(scope="session")
def tf_script_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-worker run of a user's script `train.py`, whose event files and
    artifacts were written by real TensorFlow (tests/dashboard/tfscript.py): Keras'
    TensorBoard callback under workers/0/tensorboard/, tf.summary under workers/<i>/logs/,
    a SavedModel and a text file under artifacts/."""
    runs = tmp_path_factory.mktemp("script-runs")
    run_dir = write_run(runs, RunPlan(workers=2, state="finished"), run_id=SCRIPT_RUN_ID)
    (run_dir / "model.h5").unlink()
    (run_dir / "metrics.json").unlink()
    cluster = json.loads((run_dir / "cluster.json").read_text())
    cluster["program"] = {"kind": "script", "script": "train.py", "folder": "/home/me/project"}
    cluster["trainer_args"] = list(SCRIPT_ARGS)
    (run_dir / "cluster.json").write_text(json.dumps(cluster))
    helper = Path(__file__).with_name("tfscript.py")
    subprocess.run([sys.executable, str(helper), str(run_dir), "2"], check=True, timeout=600)
    return run_dir


@pytest.fixture
def script_run(tf_script_run: Path, runs_dir: Path) -> Path:
    """tf_script_run, copied into this test's runs folder."""
    return Path(shutil.copytree(tf_script_run, runs_dir / tf_script_run.name))
