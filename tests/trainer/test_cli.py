import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.trainer.workers import REPO, worker_env

GOOD_TF_CONFIG = '{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 0}}'


def run_trainer(*argv: str, tf_config: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trainer", *argv],
        cwd=REPO,
        env=worker_env(tf_config),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def wrong_shape_npz(tmp_path: Path) -> Path:
    """An npz in MNIST's layout whose training images are 32x32."""
    path = tmp_path / "wrong.npz"
    np.savez(
        path,
        x_train=np.zeros((8, 32, 32), np.uint8),
        y_train=np.zeros(8, np.uint8),
        x_test=np.zeros((2, 28, 28), np.uint8),
        y_test=np.zeros(2, np.uint8),
    )
    return path


@pytest.mark.parametrize(
    ("argv", "tf_config", "message"),
    [
        (["--epochs", "0"], None, "argument --epochs: expected a number of at least 1, got 0"),
        (["--shard", "file"], None, "argument --shard: invalid choice: 'file'"),
        ([], '{"cluster": {"worker": ', "TF_CONFIG is not valid JSON"),
        ([], GOOD_TF_CONFIG.replace('"index": 0', '"index": 3'), "TF_CONFIG.task.index"),
        (["--data", "/nonexistent/mnist.npz"], None, "--data /nonexistent/mnist.npz: no such"),
        (["--dataset", "digits", "--batch-size", "5000"], None, "global batch 5000, more than"),
    ],
)
def test_bad_input_costs_one_line_and_exit_code_2(
    tmp_path: Path, argv: list[str], tf_config: str | None, message: str
) -> None:
    result = run_trainer("--run-dir", str(tmp_path / "run"), *argv, tf_config=tf_config)
    assert result.returncode == 2
    assert result.stderr.startswith("trainer: error: ")
    assert message in result.stderr
    assert result.stderr.count("\n") == 1


def test_an_unwritable_run_directory_costs_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    result = run_trainer("--run-dir", str(tmp_path / "file" / "run"), "--dataset", "digits")
    assert result.returncode == 2
    assert result.stderr.startswith(f"trainer: error: --run-dir {tmp_path / 'file' / 'run'}: ")
    assert "cannot write" in result.stderr and result.stderr.count("\n") == 1


def test_a_wrong_shaped_npz_fails_the_worker_status(tmp_path: Path, wrong_shape_npz: Path) -> None:
    result = run_trainer("--run-dir", str(tmp_path / "run"), "--dataset", str(wrong_shape_npz))
    assert result.returncode == 2
    assert result.stderr == (
        f"trainer: error: {wrong_shape_npz}: x_train has shape (8, 32, 32), "
        "expected (N, 28, 28) with N > 0\n"
    )
    status = json.loads((tmp_path / "run" / "workers" / "0" / "status.json").read_text())
    assert status["state"] == "failed"
    assert "x_train has shape (8, 32, 32)" in status["error"]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["workers"]
