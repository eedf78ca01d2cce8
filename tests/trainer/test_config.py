from pathlib import Path

import pytest

from trainer.config import TrainConfig, parse_args
from trainer.errors import InputError


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], {}),
        (["--epochs", "3", "--batch-size", "16"], {"epochs": 3, "batch_size": 16}),
        (["--steps-per-epoch", "5"], {"steps_per_epoch": 5}),
        (["--learning-rate", "0.01", "--seed", "0"], {"learning_rate": 0.01, "seed": 0}),
        (["--dataset", "digits"], {"dataset": "digits", "data": None}),
        (["--data", "/d/mnist.npz"], {"dataset": "mnist", "data": Path("/d/mnist.npz")}),
        (["--dataset", "/d/mnist.npz"], {"dataset": "mnist", "data": Path("/d/mnist.npz")}),
        (["--shard", "index", "--log-every", "5"], {"shard": "index", "log_every": 5}),
        (["--threads", "1", "--no-validation"], {"threads": 1, "validation": False}),
        (["--backup"], {"backup": True}),
        (["--no-mistakes"], {"mistakes": False}),
    ],
)
def test_parse_args_reads_options(argv: list[str], expected: dict[str, object]) -> None:
    config = parse_args(["--run-dir", "runs/x", *argv])
    defaults = TrainConfig(run_dir=Path("runs/x"))
    assert config == TrainConfig(**{**defaults.__dict__, **expected})


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: --run-dir"),
        (["--run-dir", "r", "--epochs", "0"], "--epochs: expected a number of at least 1, got 0"),
        (["--run-dir", "r", "--epochs", "two"], "--epochs: expected a whole number, got 'two'"),
        (["--run-dir", "r", "--batch-size", "-4"], "--batch-size: expected a number of at least 1"),
        (["--run-dir", "r", "--learning-rate", "0"], "expected a finite number above 0, got 0"),
        (["--run-dir", "r", "--learning-rate", "nan"], "expected a finite number above 0"),
        (["--run-dir", "r", "--seed", "-1"], "--seed: expected a number of at least 0"),
        (["--run-dir", "r", "--shard", "file"], "--shard: invalid choice: 'file'"),
        (["--run-dir", "r", "--dataset", "cifar"], "expected mnist, digits or a path to an .npz"),
        (["--run-dir", "r", "--dataset", "digits", "--data", "m.npz"], "--data is only for"),
        (["--run-dir", "r", "--dataset", "a.npz", "--data", "b.npz"], "give the npz once"),
        (["--run-dir", "r", "--epoch", "3"], "unrecognized arguments"),
    ],
)
def test_parse_args_rejects_bad_options_in_one_line(argv: list[str], message: str) -> None:
    with pytest.raises(InputError) as error:
        parse_args(argv)
    assert message in str(error.value)
    assert "\n" not in str(error.value)
