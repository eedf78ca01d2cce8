import json
from pathlib import Path

import pytest

from runformat import Phase
from trainer.callback import ClusterProgress, Window, WindowClock
from trainer.status import StatusFile


@pytest.mark.parametrize(
    ("window", "examples_per_sec", "step_time_ms"),
    [
        (Window(steps=10, seconds=0.5, examples_per_step=32), 640.0, 50.0),
        (Window(steps=1, seconds=2.0, examples_per_step=64), 32.0, 2000.0),
        (Window(steps=0, seconds=0.0, examples_per_step=32), 0.0, 0.0),
    ],
)
def test_window_measures_this_workers_throughput(
    window: Window, examples_per_sec: float, step_time_ms: float
) -> None:
    assert window.examples_per_sec == pytest.approx(examples_per_sec)
    assert window.step_time_ms == pytest.approx(step_time_ms)


def test_window_clock_leaves_out_the_pause_between_epochs() -> None:
    clock = WindowClock(now=100.0, step=0)
    clock.pause(now=101.0)  # last step of the epoch; validation runs
    clock.resume(now=105.0)  # next epoch's first step
    window = clock.close(step=10, now=106.0, examples_per_step=32)
    assert (window.steps, window.seconds) == (10, pytest.approx(2.0))


def test_window_clock_starts_the_next_window_where_the_last_closed() -> None:
    clock = WindowClock(now=0.0)
    clock.close(step=10, now=1.0, examples_per_step=32)
    clock.resume(now=1.5)  # no pause recorded: nothing to leave out
    window = clock.close(step=20, now=3.0, examples_per_step=32)
    assert (window.steps, window.seconds) == (10, pytest.approx(2.0))


def test_cluster_progress_does_nothing_outside_a_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A program that opted in still runs by hand, where no worker folder exists."""
    monkeypatch.delenv("TFCLUSTER_WORKER_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    progress = ClusterProgress(global_batch_size=64)
    progress.set_params({"epochs": 1, "steps": 2})
    assert not progress.active
    progress.on_train_begin()
    for batch in range(2):
        progress.on_train_batch_end(batch, {"loss": 1.0})
    progress.on_epoch_end(0, {"loss": 1.0})
    progress.on_train_end()
    with progress.phase("saving"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_examples_per_step_are_this_workers_share(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TFCLUSTER_NUM_WORKERS", "4")
    assert ClusterProgress(global_batch_size=64).examples_per_step == 16
    monkeypatch.delenv("TFCLUSTER_NUM_WORKERS")
    config = '{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}'
    monkeypatch.setenv("TF_CONFIG", config)
    assert ClusterProgress(global_batch_size=64).examples_per_step == 32


@pytest.mark.parametrize(("after_fit", "phase"), [(None, "running"), ("evaluating", "evaluating")])
def test_the_phase_leaves_training_at_the_last_step(
    tmp_path: Path, after_fit: Phase | None, phase: str
) -> None:
    """fit shuts its input pipeline down after its last hook, which can take tens of seconds
    with no step moving: from the last step on the worker is in the phase that follows fit
    (a user's program: running; the trainer: evaluating), never silent in training."""
    status = StatusFile(tmp_path / "status.json", {"state": "running"})
    kwargs = {} if after_fit is None else {"after_fit": after_fit}
    progress = ClusterProgress(global_batch_size=8, status=status, **kwargs)
    progress.set_params({"epochs": 1, "steps": 2})
    progress.on_train_begin()
    progress.on_epoch_begin(0)
    for batch in range(2):
        progress.on_train_batch_end(batch, {"loss": 1.0})
    progress.on_epoch_end(0, {"loss": 1.0})
    assert json.loads(status.path.read_text())["phase"] == "training"
    progress.on_train_end()
    written = json.loads(status.path.read_text())
    assert (written["phase"], written["step"], written["epoch"]) == (phase, 2, 1)
