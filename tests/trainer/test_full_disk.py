"""A real two-worker run whose worker 1 keeps its folder (status.json, events, its log) on a
tiny file system filled to the last byte while it trains: training goes on and finishes
(exit 0), worker 1's log says once that it cannot write and then that it can again."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runformat import MODEL_FILE, events_dir, status_path, worker_dir, worker_log_path
from tests.launcher.helpers import check_model_loads, fill_disk, small_disk, wait_for
from tests.trainer.workers import REPO, read_scalars, tf_configs, wait_all, worker_env

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("test_train")]


def _step(run_dir: Path, index: int) -> int:
    try:
        status = json.loads(status_path(run_dir, index).read_text())
    except (OSError, ValueError):
        return -1
    return status.get("step") or 0 if status.get("phase") == "training" else -1


def test_a_full_disk_under_worker_1_never_ends_training(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "trainer", "--run-dir", str(run_dir), "--threads", "1"]
    argv += ["--dataset", "digits", "--epochs", "6", "--no-validation", "--log-every", "2"]
    argv += ["--system-every", "0.5"]
    with small_disk(worker_dir(run_dir, 1), "1m") as disk:
        log_path = worker_log_path(run_dir, 1)
        with open(log_path, "wb") as log:  # where the launcher puts it: on the full disk too
            configs = tf_configs(2)
            chief = subprocess.Popen(
                argv, cwd=REPO, env=worker_env(configs[0]), stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True, start_new_session=True,
            )  # fmt: skip
            worker = subprocess.Popen(
                argv, cwd=REPO, env=worker_env(configs[1]), stdout=log,
                stderr=subprocess.STDOUT, text=True, start_new_session=True,
            )  # fmt: skip
        try:
            wait_for(lambda: _step(run_dir, 1) >= 4, 120, "worker 1 training")
            filler = fill_disk(disk)
            full_at = _step(run_dir, 0)
            # Training goes on with worker 1's disk full: the chief's steps keep moving.
            wait_for(lambda: _step(run_dir, 0) >= full_at + 40, 60, "steps while full")
            stuck = json.loads(status_path(run_dir, 1).read_text())
            filler.unlink()
        finally:
            finished = wait_all([chief, worker], timeout=300)
        log_text = log_path.read_text(errors="replace")
        final = json.loads(status_path(run_dir, 1).read_text())
        scalars = read_scalars(events_dir(run_dir, 1))  # every record whole (CRC-checked)
    assert [w.returncode for w in finished] == [0, 0], (
        finished[0].stderr[-2000:],
        log_text[-3000:],
    )
    assert stuck["step"] < full_at + 40  # status.json could not follow while the disk was full
    assert (final["state"], final["phase"], final["exit_code"]) == ("finished", "ended", 0)
    assert log_text.count("tfcluster: cannot write status.json") == 1, log_text[-3000:]
    assert "no space left on device" in log_text
    assert "tfcluster: writing status.json works again" in log_text
    # Whole records only, in order (events written after the disk freed up depend on whether
    # training outlasts the 10 s rest of the failing writer: not asserted).
    steps = [step for step, _ in scalars["progress/loss"]]
    assert steps == sorted(steps) and steps[0] <= full_at
    check_model_loads(run_dir / MODEL_FILE)


def test_a_full_disk_under_the_chief_fails_saving_with_its_cause(tmp_path: Path) -> None:
    """The chief's work (model.h5) may fail a job, and then says why first; its monitoring
    (events, status.json, Keras' TensorBoard logs) on the same full disk never did."""
    run_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "trainer", "--run-dir", str(run_dir), "--threads", "1"]
    argv += ["--dataset", "digits", "--epochs", "3", "--log-every", "2"]
    with small_disk(run_dir, "2m") as disk:
        chief = subprocess.Popen(
            argv, cwd=REPO, env=worker_env(None), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        try:
            wait_for(lambda: _step(run_dir, 0) >= 0, 120, "the chief training")
            fill_disk(disk)
        finally:
            (ended,) = wait_all([chief], timeout=300)
        assert not (run_dir / MODEL_FILE).exists()
    lines = ended.stderr.splitlines()
    assert ended.returncode == 1, ended.stderr[-3000:]
    assert lines[-1] == (
        f"trainer: worker 0 failed: no space left on device writing {run_dir / MODEL_FILE}"
    )
    assert "tfcluster: cannot write Keras TensorBoard logs" in ended.stderr
    assert "Traceback" not in ended.stderr  # nothing but the save failed


def test_keras_tensorboard_on_a_full_disk_leaves_the_default_writer_as_it_was(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """TensorFlow puts the previous default writer back only after a flush that worked: a
    failed epoch-end flush would leave Keras' writer, soon closed, as the default, and every
    later summary of the program's own would go to it (or fail, once it is closed)."""
    import tensorflow as tf
    from tensorflow.python.ops import summary_ops_v2

    from trainer.model import build_model
    from trainer.train import GuardedTensorBoard

    def default_writer() -> object:
        return summary_ops_v2._summary_state.writer

    mine = tf.summary.create_file_writer(str(tmp_path / "mine"))
    with small_disk(tmp_path / "disk", "256k") as disk:
        board = GuardedTensorBoard(
            log_dir=str(disk / "tensorboard"), update_freq="epoch", profile_batch=0,
            write_graph=False,
        )  # fmt: skip
        board.set_model(build_model(0.001))
        logs = {"loss": 1.0, "accuracy": 0.5}
        with mine.as_default():
            board.on_train_begin()
            board.on_epoch_begin(0)
            board.on_epoch_end(0, logs)
            assert default_writer() is mine
            filler = fill_disk(disk)
            # The file's last page still takes a few small records: epochs until one fails,
            # then two more that fail too (one warning).
            epoch, failed_at = 1, None
            while epoch < 1000 and (failed_at is None or epoch <= failed_at + 2):
                board.on_epoch_begin(epoch)
                board.on_epoch_end(epoch, logs)
                assert default_writer() is mine, f"epoch {epoch}: Keras' writer left the default"
                if failed_at is None and board.guard.failing:
                    failed_at = epoch
                epoch += 1
            assert failed_at is not None, "the full disk never refused a summary"
            board.on_train_end()  # closes Keras' writers
            assert tf.summary.scalar("own/after_fit", 1.0, step=3)  # still into the program's
            filler.unlink()
        mine.close()
    err = capsys.readouterr().err
    assert err.count("tfcluster: cannot write Keras TensorBoard logs") == 1, err
    assert "no space left on device" in err
    assert default_writer() is None
