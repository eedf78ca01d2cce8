"""End to end: real trainer workers as local processes sharing one run directory."""

import importlib
import io
import json
import os
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import TENSORS, EventAccumulator
from tensorboard.util import tensor_util

from tests.trainer.workers import (
    SYSTEM_TAGS,
    TrainerRun,
    start_cluster,
    train_locally,
    wait_all,
)
from trainer.data import load_digits

# One test process for the whole module, so that its module fixtures are built once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("test_train")]

PROGRESS_TAGS = {
    "progress/loss",
    "progress/accuracy",
    "progress/examples_per_sec",
    "progress/step_time_ms",
}
EPOCH_TAGS = {"epoch/loss", "epoch/accuracy"}
DIGITS = ("--dataset", "digits", "--no-validation")


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> TrainerRun:
    """Two workers on the digits with every training setting at its default (system metrics
    sampled every second, so that even a fast machine gets several samples)."""
    run_dir = tmp_path_factory.mktemp("digits") / "run"
    return train_locally(2, run_dir, "--dataset", "digits", "--system-every", "1")


@pytest.fixture(scope="module")
def one_worker_losses(tmp_path_factory: pytest.TempPathFactory) -> TrainerRun:
    """One worker (no TF_CONFIG) at global batch 64."""
    one_dir = tmp_path_factory.mktemp("one") / "run"
    run = train_locally(1, one_dir, *DIGITS, "--epochs", "2", "--batch-size", "64")
    assert run.workers[0].returncode == 0, run.workers[0].stderr[-3000:]
    return run


def test_every_worker_exits_0(digits_run: TrainerRun) -> None:
    for worker in digits_run.workers:
        assert worker.returncode == 0, worker.stderr[-3000:]


def test_the_model_is_saved_only_at_the_chiefs_path(digits_run: TrainerRun) -> None:
    run_dir = digits_run.run_dir
    assert sorted(run_dir.rglob("*.h5")) == [run_dir / "model.h5"]
    assert [p for p in run_dir.rglob("*") if "partial" in p.name or p.suffix == ".tmp"] == []
    assert not any(p.name.startswith("workertemp") for p in run_dir.rglob("*"))


@pytest.mark.parametrize("keras_package", ["tf_keras", "keras"])
def test_model_h5_loads_with_load_model_and_predicts(
    digits_run: TrainerRun, keras_package: str
) -> None:
    keras = importlib.import_module(keras_package)
    model = keras.models.load_model(digits_run.run_dir / "model.h5")
    digits = load_digits()
    probabilities = model.predict(digits.x_test, verbose=0)
    assert probabilities.shape == (450, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-4)
    accuracy = float(np.mean(probabilities.argmax(axis=1) == digits.y_test))
    assert accuracy == pytest.approx(digits_run.metrics()["test_accuracy"], abs=1e-6)


@pytest.mark.parametrize("index", [0, 1])
def test_every_worker_writes_its_own_progress_and_epoch_scalars(
    digits_run: TrainerRun, index: int
) -> None:
    scalars = digits_run.scalars(index)
    assert set(scalars) >= PROGRESS_TAGS | EPOCH_TAGS
    for tag in PROGRESS_TAGS:
        steps = [step for step, _ in scalars[tag]]
        assert len(steps) > 10 and steps == sorted(set(steps)), tag
    epochs = digits_run.status(index)["epochs"]
    for tag in EPOCH_TAGS:
        assert [step for step, _ in scalars[tag]] == list(range(1, epochs + 1))
    assert all(value > 0 for _, value in scalars["progress/examples_per_sec"])


@pytest.mark.parametrize("index", [0, 1])
def test_every_worker_writes_growing_system_metrics(digits_run: TrainerRun, index: int) -> None:
    events = digits_run.run_dir / "workers" / str(index) / "events"
    accumulator = EventAccumulator(str(events), size_guidance={TENSORS: 0}).Reload()
    tags = set(accumulator.Tags()["tensors"])
    assert tags >= SYSTEM_TAGS and not any("gpu" in tag for tag in tags)
    for tag in SYSTEM_TAGS:
        points = accumulator.Tensors(tag)
        steps = [point.step for point in points]
        assert len(points) >= 3 and steps == sorted(set(steps)), (tag, steps)
    memory = [
        float(tensor_util.make_ndarray(p.tensor_proto))
        for p in accumulator.Tensors("system/memory_mb")
    ]
    assert all(100 < mb < 100_000 for mb in memory)
    system = digits_run.status(index)["system"]
    assert isinstance(system, dict) and system["memory_mb"] > 100
    assert system["gpu_util_percent"] is None


@pytest.mark.parametrize("index", [0, 1])
def test_phase_moves_from_starting_to_ended(digits_run: TrainerRun, index: int) -> None:
    """Each worker prints the first time it enters a phase; status.json keeps the last."""
    printed = re.findall(
        rf"^trainer: worker {index} (\w+) \(([\d.]+) s after start\)$",
        digits_run.workers[index].stdout,
        flags=re.MULTILINE,
    )
    phases = [phase for phase, _ in printed]
    assert phases == ["loading_data", "connecting", "training", "evaluating", "saving", "ended"]
    seconds = [float(after) for _, after in printed]
    assert seconds == sorted(seconds)
    status = digits_run.status(index)
    assert status["phase"] == "ended"
    assert status["started"] < status["phase_since"] <= status["updated"]  # type: ignore[operator]


@pytest.mark.parametrize("index", [0, 1])
def test_status_ends_finished(digits_run: TrainerRun, index: int) -> None:
    status = digits_run.status(index)
    assert status["state"] == "finished" and status["error"] is None
    assert status["index"] == index and status["role"] == ["chief", "worker"][index]
    assert status["epoch"] == status["epochs"] and status["step"] == status["steps_total"]
    assert isinstance(status["pid"], int) and status["updated"] >= status["started"]  # type: ignore[operator]


def test_two_workers_reach_95_percent_on_the_digits_by_default(digits_run: TrainerRun) -> None:
    metrics = digits_run.metrics()
    assert metrics["test_accuracy"] >= 0.95  # type: ignore[operator]
    assert metrics["workers"] == 2 and metrics["dataset"] == "digits"
    assert metrics["global_batch_size"] == 64
    assert metrics["examples_seen"] == 21 * 64 * metrics["epochs"]  # type: ignore[operator]


def test_the_chief_keeps_the_keras_tensorboard_logs(digits_run: TrainerRun) -> None:
    tensorboard = digits_run.run_dir / "tensorboard"
    assert sorted(p.name for p in tensorboard.iterdir() if p.is_dir()) == ["train", "validation"]
    for part in ("train", "validation"):
        assert list((tensorboard / part).glob("events.out.tfevents.*"))


def test_the_chief_logs_the_hyperparameters_once_for_tensorboards_hparams_tab(
    digits_run: TrainerRun,
) -> None:
    """A session start and end in tensorboard/ (the session whose train/ and validation/ hold
    the Keras curves), read by the dashboard as TensorBoard's own reader gives them."""
    from tensorboard.plugins.hparams import metadata

    from dashboard.hparams import read_hparams, show

    tensorboard = digits_run.run_dir / "tensorboard"
    assert len(list(tensorboard.glob("events.out.tfevents.*"))) == 1
    board = EventAccumulator(str(tensorboard))
    board.Reload()
    contents = board.PluginTagToContent(metadata.PLUGIN_NAME)
    assert sorted(contents) == [metadata.SESSION_END_INFO_TAG, metadata.SESSION_START_INFO_TAG]
    start = metadata.parse_session_start_info_plugin_data(contents[metadata.SESSION_START_INFO_TAG])
    end = metadata.parse_session_end_info_plugin_data(contents[metadata.SESSION_END_INFO_TAG])

    logged = read_hparams(digits_run.run_dir, [0, 1])
    assert not logged.problems
    (session,) = logged.sessions
    assert session.folder == "tensorboard" and session.status == "success"
    assert session.started == start.start_time_secs and session.ended == end.end_time_secs
    theirs = {name: getattr(v, v.WhichOneof("kind")) for name, v in start.hparams.items()}
    assert session.hparams == theirs
    metrics = digits_run.metrics()
    assert {name: show(value) for name, value in session.hparams.items()} == {
        "epochs": str(metrics["epochs"]),
        "batch-size": "32",
        "steps-per-epoch": "21",
        "learning-rate": "0.001",
        "seed": "42",
        "dataset": "digits",
        "shard": "data",
        "workers": "2",
        "global-batch-size": "64",
    }


def test_the_chief_shows_its_mistakes_and_the_media_tab_shows_them(
    digits_run: TrainerRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    """trainer/mistakes.py: at each epoch's end the chief (alone) writes a grid of wrong test
    digits and a confusion matrix as images; the dashboard's Media tab shows the latest."""
    from PIL import Image
    from streamlit.testing.v1 import AppTest

    from dashboard.media import read_media
    from trainer.mistakes import CONFUSION_TAG, MISTAKES_TAG

    epochs = digits_run.metrics()["epochs"]
    chief = read_media(digits_run.run_dir / "workers" / "0")
    confusion = chief[("events", CONFUSION_TAG)]
    assert [e.step for e in confusion.entries] == list(range(1, epochs + 1))
    mistakes = chief[("events", MISTAKES_TAG)]
    assert mistakes.entries and mistakes.entries[0].step == 1
    for entry in (confusion.entries[-1], mistakes.entries[-1]):
        picture = Image.open(io.BytesIO(entry.pictures[0]))
        assert picture.format == "PNG" and picture.size == (entry.width, entry.height)
    assert not read_media(digits_run.run_dir / "workers" / "1")

    monkeypatch.setenv("TFCLUSTER_RUNS", str(digits_run.run_dir.parent))
    app = AppTest.from_file(
        str(Path(__file__).parents[2] / "dashboard" / "app.py"), default_timeout=60
    )
    app.session_state["tab"] = "Media"
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    captions = {image.proto.imgs[0].caption for image in app.get("image")}
    latest = [track.entries[-1] for track in (mistakes, confusion)]
    assert captions == {f"step {e.step} · {e.width} x {e.height}" for e in latest}


@pytest.mark.parametrize("shard", ["data", "index"])
def test_two_workers_at_half_the_batch_match_one_worker(
    one_worker_losses: TrainerRun, tmp_path: Path, shard: str
) -> None:
    options = [*DIGITS, "--epochs", "2", "--batch-size", "32", "--shard", shard]
    two = train_locally(2, tmp_path / "run", *options)
    assert [w.returncode for w in two.workers] == [0, 0], two.workers[0].stderr[-3000:]
    expected = [value for _, value in one_worker_losses.scalars(0)["epoch/loss"]]
    for index in (0, 1):
        losses = [value for _, value in two.scalars(index)["epoch/loss"]]
        np.testing.assert_allclose(losses, expected, rtol=1e-5)
    np.testing.assert_allclose(
        two.metrics()["test_loss"], one_worker_losses.metrics()["test_loss"], rtol=1e-5
    )


@pytest.mark.parametrize(
    ("stop", "exit_code", "error"),
    [(signal.SIGKILL, -9, None), (signal.SIGTERM, 143, "stopped by SIGTERM")],
)
def test_a_stopped_worker_fails_the_job_with_nothing_half_written(
    tmp_path: Path, stop: signal.Signals, exit_code: int, error: str | None
) -> None:
    run_dir = tmp_path / "run"
    long_run = ["--threads", "1", "--dataset", "digits", "--epochs", "100", "--log-every", "2"]
    processes = start_cluster(2, ["-m", "trainer", "--run-dir", str(run_dir), *long_run])
    try:
        wait_for_status(run_dir / "workers" / "1" / "status.json", "step", 4)
    finally:
        os.kill(processes[1].pid, stop)
    chief, worker = wait_all(processes, timeout=120)
    run = TrainerRun(run_dir, [chief, worker])

    assert worker.returncode == exit_code
    assert chief.returncode == 1
    assert chief.stderr.rstrip().splitlines()[-1].startswith("trainer: worker 0 failed: ")
    assert run.status(0)["state"] == "failed"
    assert "Collective ops is aborted" in str(run.status(0)["error"])
    if error is not None:
        assert run.status(1)["state"] == "failed" and run.status(1)["error"] == error
    assert sorted(p.name for p in run_dir.iterdir()) == ["tensorboard", "workers"]


def wait_for_status(status_path: Path, key: str, least: int, timeout: float = 120) -> None:
    """Until a worker's status.json shows `key` at `least` or more."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if json.loads(status_path.read_text())[key] >= least:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"{status_path} never showed {key} >= {least}")


def test_a_staged_mnist_npz_trains_a_single_worker(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    staged = tmp_path / "mnist.npz"
    np.savez(
        staged,
        x_train=rng.integers(0, 256, (256, 28, 28), dtype=np.uint8),
        y_train=rng.integers(0, 10, 256, dtype=np.uint8),
        x_test=rng.integers(0, 256, (64, 28, 28), dtype=np.uint8),
        y_test=rng.integers(0, 10, 64, dtype=np.uint8),
    )
    run = train_locally(1, tmp_path / "run", "--data", str(staged), "--epochs", "1")

    assert run.workers[0].returncode == 0, run.workers[0].stderr[-3000:]
    metrics = run.metrics()
    assert metrics["dataset"] == "mnist" and metrics["examples_seen"] == 256
    assert 0.0 <= metrics["test_accuracy"] <= 1.0  # type: ignore[operator]
    assert (tmp_path / "run" / "model.h5").is_file()
